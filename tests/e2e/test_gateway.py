"""Virtual gateway mode (issue 7): gateway routes, App Mesh's default rewrites, hostname routing, header
hygiene and TLS termination (STRICT, PERMISSIVE, certificate reload), through a real proxy subprocess."""

from __future__ import annotations

import concurrent.futures
import http.client
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, free_ports, parse_stats, wait_for
from .resources import MESH, mesh, route, service_via_node, service_via_router, virtual_node, virtual_router

GATEWAY = "ingress-gw"


def gateway_arn() -> str:
    return f"mesh/{MESH}/virtualGateway/{GATEWAY}"


def virtual_gateway(listeners: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "virtualGateway": {"meshName": MESH, "virtualGatewayName": GATEWAY, "spec": {"listeners": listeners}}
    }


def gateway_listener(port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"portMapping": {"port": port, "protocol": "http"}}
    if tls is not None:
        spec["tls"] = tls
    return spec


def gateway_route(
    name: str, service: str, *, prefix: str | None = None, hostname: dict[str, str] | None = None,
    rewrite: dict[str, Any] | None = None, priority: int | None = None, path_exact: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    match: dict[str, Any] = {}
    if prefix is not None:
        match["prefix"] = prefix
    if path_exact is not None:
        match["path"] = {"exact": path_exact}
    if hostname is not None:
        match["hostname"] = hostname
    if port is not None:
        match["port"] = port
    action: dict[str, Any] = {"target": {"virtualService": {"virtualServiceName": service}}}
    if rewrite is not None:
        action["rewrite"] = rewrite
    spec: dict[str, Any] = {"httpRoute": {"match": match, "action": action}}
    if priority is not None:
        spec["priority"] = priority
    return {
        "gatewayRoute": {
            "meshName": MESH,
            "virtualGatewayName": GATEWAY,
            "gatewayRouteName": name,
            "spec": spec,
        }
    }


@dataclass
class Yelb:
    proxy: MeshProxy
    port: int
    ui: ColourApp
    app_v1: ColourApp
    app_v2: ColourApp
    shop: ColourApp

    def get(
        self, path: str, host: str = "yelb.example.com", headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def yelb(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yelb]:
    ui, v1, v2, shop = (app_loop.colour_app(n) for n in ("ui", "app-v1", "app-v2", "shop"))
    (port,) = free_ports(1)
    resources = [
        mesh(),
        virtual_node("ui", ui.port),
        virtual_node("app-v1", v1.port),
        virtual_node("app-v2", v2.port),
        virtual_node("shop", shop.port),
        service_via_node("ui.yelb.local", "ui"),
        virtual_router("app-router"),
        route("app-router", "split", targets=[("app-v1", 50), ("app-v2", 50)]),
        service_via_router("app.yelb.local", "app-router"),
        service_via_node("shop.yelb.local", "shop"),
        virtual_gateway([gateway_listener(port)]),
        gateway_route("ui", "ui.yelb.local", prefix="/"),
        gateway_route("api", "app.yelb.local", prefix="/api"),
        gateway_route("shop", "shop.yelb.local", prefix="/", hostname={"exact": "shop.example.com"}),
        gateway_route(
            "verbatim",
            "ui.yelb.local",
            prefix="/static",
            rewrite={
                "prefix": {"defaultPrefix": "DISABLED"},
                "hostname": {"defaultTargetHostname": "DISABLED"},
            },
        ),
        gateway_route("renamed", "ui.yelb.local", prefix="/old", rewrite={"prefix": {"value": "/new/"}}),
        gateway_route(
            "one", "ui.yelb.local", path_exact="/exactly", rewrite={"path": {"exact": "/rewritten"}}
        ),
    ]
    proxy = MeshProxy(resources, gateway_arn(), tmp_path_factory.mktemp("gateway"))
    try:
        yield Yelb(proxy.start(), port, ui, v1, v2, shop)
    finally:
        proxy.stop()


def test_root_goes_to_the_ui_with_host_rewritten(yelb: Yelb) -> None:
    status, body = yelb.get("/index.html")
    assert status == 200, body
    seen = yelb.ui.last
    assert seen.path == "/index.html"
    assert seen.headers["host"] == "ui.yelb.local"  # defaultTargetHostname: the target virtual service


def test_api_prefix_is_rewritten_to_slash_and_split_by_the_router(yelb: Yelb) -> None:
    for app in (yelb.app_v1, yelb.app_v2):
        app.reset()
    for _ in range(100):
        status, body = yelb.get("/api/votes?x=1")
        assert status == 200, body
    assert yelb.app_v1.requests + yelb.app_v2.requests == 100
    assert 20 <= yelb.app_v1.requests <= 80  # 50/50 router behind the gateway (5-sigma band is 25..75)
    seen = (yelb.app_v1.seen + yelb.app_v2.seen)[-1]
    assert seen.path == "/votes?x=1"  # the matched prefix became "/" (App Mesh's default)
    assert seen.headers["host"] == "app.yelb.local"
    assert seen.headers["x-envoy-original-path"] == "/api/votes?x=1"


def test_hostname_match_routes_before_the_catch_all(yelb: Yelb) -> None:
    status, body = yelb.get("/cart", host="shop.example.com")
    assert (status == 200 and body.startswith('{"name": "shop"')) or '"shop"' in body, body
    assert yelb.shop.last.path == "/cart"


def test_default_prefix_and_hostname_disabled_keep_the_request_as_sent(yelb: Yelb) -> None:
    status, _ = yelb.get("/static/app.js", host="yelb.example.com")
    assert status == 200
    seen = yelb.ui.last
    assert seen.path == "/static/app.js"
    assert seen.headers["host"] == "yelb.example.com"


def test_explicit_prefix_value_and_exact_path_rewrites(yelb: Yelb) -> None:
    assert yelb.get("/old/page")[0] == 200
    assert yelb.ui.last.path == "/new/page"
    assert yelb.get("/exactly")[0] == 200
    assert yelb.ui.last.path == "/rewritten"


def test_a_rewritten_host_is_kept_in_x_envoy_original_host(yelb: Yelb) -> None:
    """As Envoy 1.40 does (checked against it): only when the gateway route rewrote the Host, never forged."""
    status, _ = yelb.get("/index.html", host="www.yelb.example:8088", headers={"x-envoy-original-host": "x"})
    assert status == 200
    assert yelb.ui.last.headers["host"] == "ui.yelb.local"
    assert yelb.ui.last.headers["x-envoy-original-host"] == "www.yelb.example:8088"
    status, _ = yelb.get("/static/app.js", host="yelb.example.com", headers={"x-envoy-original-host": "x"})
    assert status == 200  # defaultTargetHostname DISABLED: no rewrite, no header (the forged one is dropped)
    assert "x-envoy-original-host" not in yelb.ui.last.headers


def test_client_envoy_control_headers_are_stripped(yelb: Yelb) -> None:
    status, _ = yelb.get("/", headers={"x-envoy-max-retries": "9", "x-envoy-upstream-rq-timeout-ms": "1"})
    assert status == 200
    headers = yelb.ui.last.headers
    assert "x-envoy-max-retries" not in headers
    assert "x-envoy-upstream-rq-timeout-ms" not in headers
    assert headers["x-envoy-expected-rq-timeout-ms"] == "15000"


def test_client_envoy_control_headers_are_not_honoured(yelb: Yelb) -> None:
    """The client of a gateway is outside the mesh: its retry headers neither retry nor reach the app (the
    sidecars honour them, tests/e2e/test_router_headers.py)."""
    yelb.ui.reset()
    yelb.ui.configure(fail_first=1, fail_status=500)
    try:
        headers = {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3", "x-forwarded-for": "10.0.3.7"}
        status, _ = yelb.get("/", headers=headers)  # even under an internal x-forwarded-for
        assert status == 500
        assert yelb.ui.requests == 1
        assert not any(name.startswith("x-envoy-retry") for name in yelb.ui.last.headers)
    finally:
        yelb.ui.reset()


def test_unmatched_request_gets_404_no_route(app_loop: AppLoop, tmp_path: Path) -> None:
    ui = app_loop.colour_app("ui-only")
    (port,) = free_ports(1)
    resources = [
        mesh(),
        virtual_node("ui", ui.port),
        service_via_node("ui.yelb.local", "ui"),
        virtual_gateway([gateway_listener(port)]),
        gateway_route("ui", "ui.yelb.local", prefix="/ui"),
    ]
    proxy = MeshProxy(resources, gateway_arn(), tmp_path).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/elsewhere", headers={"Host": "x"})
        response = conn.getresponse()
        assert response.status == 404 and response.read() == b""
        conn.close()
        assert parse_stats(proxy.admin("/stats").body.decode())["http.ingress.no_route"] >= 1
    finally:
        proxy.stop()


# --- TLS termination -----------------------------------------------------------------------------------


@dataclass
class TlsGateway:
    proxy: MeshProxy
    strict_port: int
    permissive_port: int
    ca: trustme.CA
    cert_dir: Path
    mtls_port: int = 0


@pytest.fixture(scope="module")
def tls_gateway(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    ui = app_loop.colour_app("tls-ui")
    ca = trustme.CA()
    cert_dir = tmp_path_factory.mktemp("certs")
    ca.issue_cert("gateway.example.com").private_key_and_cert_chain_pem.write_to_path(
        str(cert_dir / "both.pem")
    )
    server = ca.issue_cert("gateway.example.com")
    server.cert_chain_pems[0].write_to_path(str(cert_dir / "chain.pem"))
    server.private_key_pem.write_to_path(str(cert_dir / "key.pem"))
    tls_file = {
        "file": {"certificateChain": str(cert_dir / "chain.pem"), "privateKey": str(cert_dir / "key.pem")}
    }
    ca.cert_pem.write_to_path(str(cert_dir / "ca.pem"))
    for name in ("client.example.com", "mallory.example.com"):
        client = ca.issue_cert(name)
        client.private_key_and_cert_chain_pem.write_to_path(str(cert_dir / f"{name}.pem"))
    mtls = {
        "mode": "STRICT",
        "certificate": tls_file,
        "validation": {
            "trust": {"file": {"certificateChain": str(cert_dir / "ca.pem")}},
            "subjectAlternativeNames": {"match": {"exact": ["client.example.com"]}},
        },
    }
    strict_port, permissive_port, mtls_port = free_ports(3)
    resources = [
        mesh(),
        virtual_node("tls-ui", ui.port),
        service_via_node("ui.yelb.local", "tls-ui"),
        virtual_gateway(
            [
                gateway_listener(strict_port, {"mode": "STRICT", "certificate": tls_file}),
                gateway_listener(permissive_port, {"mode": "PERMISSIVE", "certificate": tls_file}),
                gateway_listener(mtls_port, mtls),
            ]
        ),
        gateway_route("strict", "ui.yelb.local", prefix="/", port=strict_port),
        gateway_route("permissive", "ui.yelb.local", prefix="/", port=permissive_port),
        gateway_route("mtls", "ui.yelb.local", prefix="/", port=mtls_port),
    ]
    proxy = MeshProxy(resources, gateway_arn(), tmp_path_factory.mktemp("tls-gateway"))
    try:
        yield TlsGateway(proxy.start(), strict_port, permissive_port, ca, cert_dir, mtls_port)
    finally:
        proxy.stop()


def _https_get(port: int, ca: trustme.CA, path: str = "/") -> tuple[int, bytes, ssl.SSLSocket | None]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    # the certificate is for gateway.example.com: connect to loopback, verify that name
    conn._context = context  # type: ignore[attr-defined]
    conn.host = "gateway.example.com"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = context.wrap_socket(sock, server_hostname="gateway.example.com")
    try:
        conn.request("GET", path, headers={"Host": "gateway.example.com"})
        response = conn.getresponse()
        return response.status, response.read(), conn.sock
    finally:
        conn.close()


def test_strict_listener_serves_tls(tls_gateway: TlsGateway) -> None:
    status, body, _ = _https_get(tls_gateway.strict_port, tls_gateway.ca, "/secure")
    assert status == 200 and b"tls-ui" in body


def test_strict_listener_refuses_plaintext_and_counts_the_failure(tls_gateway: TlsGateway) -> None:
    before = parse_stats(tls_gateway.proxy.admin("/stats").body.decode())
    with socket.create_connection(("127.0.0.1", tls_gateway.strict_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert not data.startswith(b"HTTP/1.1 200")
    key = f"listener.127.0.0.1_{tls_gateway.strict_port}.ssl.connection_error"
    assert wait_for(
        lambda: parse_stats(tls_gateway.proxy.admin("/stats").body.decode())[key] > before.get(key, 0), 5
    )


def test_permissive_listener_serves_tls_and_plaintext(tls_gateway: TlsGateway) -> None:
    status, body, _ = _https_get(tls_gateway.permissive_port, tls_gateway.ca)
    assert status == 200 and b"tls-ui" in body
    conn = http.client.HTTPConnection("127.0.0.1", tls_gateway.permissive_port, timeout=10)
    conn.request("GET", "/plain", headers={"Host": "x"})
    response = conn.getresponse()
    assert response.status == 200 and b"tls-ui" in response.read()
    conn.close()
    handshakes = parse_stats(tls_gateway.proxy.admin("/stats").body.decode())
    assert handshakes[f"listener.127.0.0.1_{tls_gateway.permissive_port}.ssl.handshake"] >= 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")
def test_tls_listeners_offer_h2_by_alpn(tls_gateway: TlsGateway) -> None:
    ca = tls_gateway.cert_dir / "ca.pem"
    port = tls_gateway.strict_port
    url, resolve = f"https://gateway.example.com:{port}/h2", f"gateway.example.com:{port}:127.0.0.1"
    argv = ["curl", "-sS", "--max-time", "10", "--http2", "--cacert", str(ca), "--resolve", resolve]
    argv += ["-o", "/dev/null", "-w", "%{http_version} %{http_code}", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert done.stdout == "2 200", done
    stats = parse_stats(tls_gateway.proxy.admin("/stats").body.decode())
    assert stats["http.ingress.downstream_cx_http2_total"] >= 1


def _mtls_get(tls_gateway: TlsGateway, certificate: str | None) -> int:
    context = ssl.create_default_context()
    tls_gateway.ca.configure_trust(context)
    if certificate is not None:
        context.load_cert_chain(str(tls_gateway.cert_dir / f"{certificate}.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", tls_gateway.mtls_port, timeout=10, context=context)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", tls_gateway.mtls_port), timeout=10),
        server_hostname="gateway.example.com",
    )
    try:
        conn.request("GET", "/mtls", headers={"Host": "gateway.example.com"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_gateway_listener_with_validation_requires_an_accepted_client_certificate(
    tls_gateway: TlsGateway,
) -> None:
    """Trust outside the mesh (user guide, mutual TLS): external clients present certificates from the CA."""
    assert _mtls_get(tls_gateway, "client.example.com") == 200
    for certificate, stat in ((None, "fail_verify_no_cert"), ("mallory.example.com", "fail_verify_san")):
        before = parse_stats(tls_gateway.proxy.admin("/stats").body.decode())
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _mtls_get(tls_gateway, certificate)
        key = f"listener.127.0.0.1_{tls_gateway.mtls_port}.ssl.{stat}"
        assert wait_for(
            lambda key=key, before=before: (
                parse_stats(tls_gateway.proxy.admin("/stats").body.decode())[key] > before.get(key, 0)
            ),
            5,
        ), stat


def test_certificate_files_are_reloaded_when_they_change(tls_gateway: TlsGateway) -> None:
    new_ca = trustme.CA()
    server = new_ca.issue_cert("gateway.example.com")
    staging = tls_gateway.cert_dir / "staging"
    staging.mkdir(exist_ok=True)
    server.cert_chain_pems[0].write_to_path(str(staging / "chain.pem"))
    server.private_key_pem.write_to_path(str(staging / "key.pem"))
    shutil.copy(staging / "key.pem", tls_gateway.cert_dir / "key.pem")
    shutil.copy(staging / "chain.pem", tls_gateway.cert_dir / "chain.pem")

    def served_by_new_ca() -> bool:
        try:
            return _https_get(tls_gateway.strict_port, new_ca)[0] == 200
        except (ssl.SSLError, OSError):
            return False

    assert wait_for(served_by_new_ca, 10.0, interval=0.3)
    with pytest.raises(ssl.SSLError):
        _https_get(tls_gateway.strict_port, tls_gateway.ca)


# --- the gateway's connection pool, access log and stats -------------------------------------------------


def test_gateway_pool_access_log_and_stats_tags(app_loop: AppLoop, tmp_path: Path) -> None:
    ui = app_loop.colour_app("pool-ui")
    (port,) = free_ports(1)
    log_path = tmp_path / "access.log"
    listener = gateway_listener(port)
    listener["connectionPool"] = {"http": {"maxConnections": 1, "maxPendingRequests": 1}}
    gateway = virtual_gateway([listener])
    gateway["virtualGateway"]["spec"]["logging"] = {"accessLog": {"file": {"path": str(log_path)}}}
    resources = [
        mesh(),
        virtual_node("pool-ui", ui.port),
        service_via_node("ui.yelb.local", "pool-ui"),
        gateway,
        gateway_route("ui", "ui.yelb.local", prefix="/"),
    ]
    proxy = MeshProxy(
        resources, gateway_arn(), tmp_path / "proxy", env={"ENABLE_ENVOY_STATS_TAGS": "1"}
    ).start()
    try:
        ui.configure(delay_s=1.5, delay_first=3)

        def get() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/slow", headers={"Host": "gw.example.com"})
                return conn.getresponse().status
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            statuses = sorted(pool.map(lambda _: get(), range(3)))
        assert statuses == [200, 200, 503], statuses  # capacity 1 connection + 1 pending
        assert wait_for(lambda: log_path.exists() and log_path.read_text().count("\n") >= 3, 5.0)
        lines = log_path.read_text().splitlines()
        assert any('"GET /slow HTTP/1.1" 503 UO' in line for line in lines), lines
        assert any('"GET /slow HTTP/1.1" 200 -' in line for line in lines), lines
        prometheus = proxy.admin("/stats/prometheus").body.decode()
        assert f'appmesh_virtual_gateway="{GATEWAY}"' in prometheus
        assert 'appmesh_mesh="demo"' in prometheus or f'appmesh_mesh="{MESH}"' in prometheus
    finally:
        proxy.stop()
