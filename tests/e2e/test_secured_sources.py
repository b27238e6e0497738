"""Configuration sources users can secure (issue 16): s3:// with boto3's credential chain and ETag polls
(against moto's server), http(s) with headers and a private CA bundle, secrets kept out of logs and admin
output, and a config path whose directory cannot exist refused at start-up.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apps import AppLoop, ColourApp
from .aws import REGION, aws_environ, moto_server
from .harness import clean_environ, run_meshproxy, wait_for
from .resources import node_arn
from .sources import ConfigServer, SourcedProxy, answered_by, colour_mesh, sourced_proxy, tls_for_loopback

REFRESH_S = 0.2
SWAP_TIMEOUT_S = 10.0
TOKEN = "tok-3f1c-SECRET-c0ffee"  # a bearer token; must never be printed
QUERY_SECRET = "sig-77aa-SECRET-beef"  # a presigned-URL style query value; never printed either
BUCKET = "mesh-config"


@pytest.fixture(scope="module")
def blue(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("blue")


@pytest.fixture(scope="module")
def green(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("green")


def admin_texts(proxy: SourcedProxy) -> str:
    """Everything an operator can read from the admin port."""
    paths = ("/config_dump", "/config_dump?format=meshproxy", "/server_info", "/stats", "/clusters")
    return "\n".join(proxy.admin(path).body.decode(errors="replace") for path in paths)


# ------------------------------------------------------------------------------------------ https + headers


def test_https_source_with_headers_and_a_private_ca_bundle_keeps_its_secrets(
    blue: ColourApp, green: ColourApp, app_loop: AppLoop, tmp_path: Path
) -> None:
    ca_file = tmp_path / "private-ca.pem"
    required = {"Authorization": f"Bearer {TOKEN}", "X-Tenant": "apps"}
    server = ConfigServer(tls=tls_for_loopback(ca_file), required=required)
    app_loop.call(server.start())
    url = server.url + f"?sig={QUERY_SECRET}"
    try:
        server.serve(colour_mesh(blue, green, (0, 100)))
        args = (
            "--refresh-interval", str(REFRESH_S),
            "--config-header", f"Authorization: Bearer {TOKEN}",
            "--config-ca-bundle", str(ca_file),
        )  # fmt: skip
        env = {"MESHPROXY_CONFIG_HEADERS": "X-Tenant: apps", "ENVOY_LOG_LEVEL": "debug"}
        with sourced_proxy(tmp_path / "trusted", url, args=args, env=env) as proxy:
            assert answered_by(proxy) == "green"
            assert wait_for(lambda: server.counts()[2] >= 2, SWAP_TIMEOUT_S)  # conditional polls: 304s
            admin = admin_texts(proxy)
            log = proxy.stderr_text()
        # the same source without the header: refused, named in the log, still without the secrets
        refused = SourcedProxy(
            [], node_arn("front"), tmp_path / "refused", source=url,
            extra_args=("--refresh-interval", "0.1", "--config-ca-bundle", str(ca_file)),
            env={"MESHPROXY_CONFIG_HEADERS": "Authorization: Bearer WRONG-SECRET"},
        )  # fmt: skip
        refused.spawn()
        try:
            assert wait_for(lambda: "HTTP 401" in refused.stderr_text(), 10.0), refused.output_tail()
            state = refused.admin("/server_info").json()["state"]
            refused_log = refused.stderr_text()
        finally:
            refused.stop()
    finally:
        app_loop.call(server.stop())
    authorized = [h for h in server.seen_headers if h.get("Authorization") == f"Bearer {TOKEN}"]
    assert authorized and all(h.get("X-Tenant") == "apps" for h in authorized)
    assert state == "INITIALIZING"
    assert "sending headers X-Tenant, Authorization" in log
    for text in (admin, log, refused_log):
        for secret in (TOKEN, QUERY_SECRET, "WRONG-SECRET"):
            assert secret not in text
    assert "sig=***" in refused_log


def test_a_header_given_badly_is_refused_without_echoing_it(tmp_path: Path) -> None:
    env = clean_environ()
    env["APPMESH_RESOURCE_ARN"] = node_arn("front")
    done = run_meshproxy(
        ["run", "--config", "https://h/x", "--config-header", f"Bearer {TOKEN}"], env=env, cwd=tmp_path
    )
    assert done.returncode == 2, done
    assert "--config-header: expected 'Name: value'" in done.stderr and TOKEN not in done.stderr
    env["MESHPROXY_CONFIG_HEADERS"] = f"Authorization {TOKEN}"
    done = run_meshproxy(["run", "--config", "https://h/x"], env=env, cwd=tmp_path)
    assert done.returncode == 1, done
    assert "MESHPROXY_CONFIG_HEADERS: line 1: expected 'Name: value'" in done.stderr
    assert TOKEN not in done.stderr


# ------------------------------------------------------------------------------------------ file paths


def test_a_config_path_in_a_missing_directory_fails_start_up_at_once(tmp_path: Path) -> None:
    env = clean_environ()
    env["APPMESH_RESOURCE_ARN"] = node_arn("front")
    started = time.monotonic()
    done = run_meshproxy(
        ["run", "--config", str(tmp_path / "no-such-dir" / "mesh.json")], env=env, cwd=tmp_path
    )
    assert done.returncode == 1, done
    assert time.monotonic() - started < 10.0
    assert f"directory {tmp_path / 'no-such-dir'} does not exist" in done.stderr, done.stderr


def test_a_config_file_not_there_yet_in_an_existing_directory_is_waited_for(
    blue: ColourApp, green: ColourApp, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    config = volume / "mesh.json"
    proxy = SourcedProxy(
        [],
        node_arn("front"),
        tmp_path / "proxy",
        source=str(config),
        extra_args=("--refresh-interval", "0.1"),
    )
    proxy.spawn()
    try:
        assert wait_for(lambda: _state(proxy) == "INITIALIZING", 10.0), proxy.output_tail()
        config.write_text(json.dumps(colour_mesh(blue, green, (100, 0))))
        proxy.wait_ready()
        assert answered_by(proxy) == "blue"
    finally:
        proxy.stop()


def _state(proxy: SourcedProxy) -> str | None:
    try:
        state: str = proxy.admin("/server_info", timeout=1.0).json()["state"]
    except OSError:
        return None
    return state


# ------------------------------------------------------------------------------------------ s3


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("moto")
    with moto_server(workdir) as url:
        yield url, workdir / "moto.log"


def put_mesh(s3: Any, key: str, blue: ColourApp, green: ColourApp, weights: tuple[int, int]) -> None:
    s3.create_bucket(Bucket=BUCKET)  # idempotent in us-east-1
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(colour_mesh(blue, green, weights)).encode())


def s3_client(url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class CredentialsEndpoint:
    """The ECS container credentials endpoint (what the task role is served by), on loopback."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[str | None] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != endpoint.token:
                    self.send_error(403)
                    return
                body = json.dumps(
                    {"AccessKeyId": "ASIATASKROLE", "SecretAccessKey": "task-role-secret", "Token": "session",
                     "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))}
                ).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2/credentials/task-role"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_s3_source_polls_with_etag_and_follows_updates(
    moto: tuple[str, Path], blue: ColourApp, green: ColourApp, tmp_path: Path
) -> None:
    url, moto_log = moto
    key = "apps/front.json"
    s3 = s3_client(url)
    put_mesh(s3, key, blue, green, (100, 0))
    args = ("--refresh-interval", str(REFRESH_S))
    with sourced_proxy(tmp_path / "proxy", f"s3://{BUCKET}/{key}", args=args, env=proxy_env(url)) as proxy:
        assert answered_by(proxy) == "blue"
        # unchanged: GetObject with If-None-Match, answered 304 by S3 (moto's request log shows them)
        seen_304 = wait_for(lambda: _not_modified(moto_log, key) >= 3, SWAP_TIMEOUT_S)
        assert seen_304, moto_log.read_text()[-2000:]
        assert proxy.stats()["cluster_manager.cds.update_success"] == 1
        put_mesh(s3, key, blue, green, (0, 100))
        assert wait_for(lambda: answered_by(proxy) == "green", SWAP_TIMEOUT_S), proxy.output_tail()
        assert proxy.stats()["control_plane.connected_state"] == 1
        s3.delete_object(Bucket=BUCKET, Key=key)  # gone: disconnected, the last good config keeps serving
        assert wait_for(lambda: proxy.stats()["control_plane.connected_state"] == 0, SWAP_TIMEOUT_S)
        assert answered_by(proxy) == "green"
        assert "NoSuchKey" in proxy.stderr_text()


def test_s3_source_takes_credentials_from_the_ecs_task_role_endpoint(
    moto: tuple[str, Path], blue: ColourApp, green: ColourApp, tmp_path: Path
) -> None:
    url, _ = moto
    put_mesh(s3_client(url), "role.json", blue, green, (0, 100))
    endpoint = CredentialsEndpoint(token="ecs-auth-token")
    try:
        env = proxy_env(url, keys=False)  # no static keys: the chain must find credentials
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = endpoint.url
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = endpoint.token
        args = ("--refresh-interval", "5")
        with sourced_proxy(tmp_path / "proxy", f"s3://{BUCKET}/role.json", args=args, env=env) as proxy:
            assert answered_by(proxy) == "green"
            text = admin_texts(proxy) + proxy.stderr_text()
    finally:
        endpoint.close()
    assert endpoint.requests and set(endpoint.requests) == {"ecs-auth-token"}
    assert "task-role-secret" not in text and "ecs-auth-token" not in text


def test_s3_source_without_credentials_says_so_and_waits(moto: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = moto
    proxy = SourcedProxy(
        [], node_arn("front"), tmp_path, source=f"s3://{BUCKET}/x.json",
        extra_args=("--refresh-interval", "0.2"), env=proxy_env(url, keys=False),
    )  # fmt: skip
    proxy.spawn()
    try:
        assert wait_for(lambda: "no AWS credentials" in proxy.stderr_text(), 15.0), proxy.output_tail()
        assert _state(proxy) == "INITIALIZING"
    finally:
        proxy.stop()


def proxy_env(url: str, *, keys: bool = True) -> dict[str, str]:
    """AWS settings for a proxy reading from moto's S3 (layered over the harness's clean environment)."""
    env = {
        k: v
        for k, v in aws_environ(AWS_ENDPOINT_URL_S3=url, AWS_REGION=REGION).items()
        if k.startswith("AWS_")
    }
    if not keys:
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    return env


def _not_modified(log: Path, key: str) -> int:
    pattern = re.compile(rf'GET /{re.escape(BUCKET)}/{re.escape(key)} [^"]*" 304')  # werkzeug's log (colours)
    return len(pattern.findall(log.read_text(errors="replace")))
