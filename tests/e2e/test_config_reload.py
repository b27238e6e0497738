"""Pulled configuration and hot reload (issue 6): http(s) and file sources, compile-then-swap, rejection.

The proxy polls its source (`--refresh-interval` / MESHPROXY_CONFIG_REFRESH_S, small here so tests are short).
An `http` source is an aiohttp `ConfigServer` on the module's app loop: it answers with an ETag, honours
If-None-Match with 304, counts what it saw, and can be switched to failing. The node under test is `front`,
calling `color.demo.local` (a router splitting between the `blue` and `green` apps). A test switches the
weights while a bounded load runs and checks that no request failed; a broken update is rejected and counted
while the last good configuration keeps serving, and a fixed one then applies.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import Http1Client, MeshProxy, clean_environ, grew, run_meshproxy, wait_for
from .resources import Resource, node_arn, route
from .sources import (
    COLOR,
    ConfigServer,
    SourcedProxy,
    answered_by,
    colour_mesh,
    sourced_proxy,
    tls_for_loopback,
)

REFRESH_S = 0.2
SWAP_TIMEOUT_S = 10.0
# The bounded load: at most this many requests, for at most this long.
LOAD_MAX_REQUESTS = 4000
LOAD_MAX_S = 30.0

CONNECTED = "control_plane.connected_state"
CDS_REJECTED = "cluster_manager.cds.update_rejected"
CDS_SUCCESS = "cluster_manager.cds.update_success"


# ------------------------------------------------------------------------------------------ the mesh


@pytest.fixture(scope="module")
def blue(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("blue")


@pytest.fixture(scope="module")
def green(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("green")


@pytest.fixture
def config_server(app_loop: AppLoop) -> Iterator[ConfigServer]:
    server = ConfigServer()
    app_loop.call(server.start())
    try:
        yield server
    finally:
        app_loop.call(server.stop())


def broken_mesh(blue: ColourApp, green: ColourApp) -> list[Resource]:
    resources = colour_mesh(blue, green, (0, 100))
    resources[5] = route("color-router", "split", [("blue", 150), ("green", 50)])  # weight out of range
    return resources


def wait_for_app(proxy: MeshProxy, app: str) -> bool:
    return wait_for(lambda: answered_by(proxy) == app, SWAP_TIMEOUT_S, interval=0.05)


# ------------------------------------------------------------------------------------------ bounded load


@dataclass
class Load:
    """Requests to `color.demo.local` from `workers` keep-alive clients until stopped (bounded)."""

    proxy: MeshProxy
    workers: int = 2
    results: list[tuple[float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_S
        lock = threading.Lock()

        def worker() -> None:
            client = Http1Client(self.proxy.egress_port, timeout=10.0)
            try:
                while not self.stop.is_set() and time.monotonic() < deadline:
                    with lock:
                        if len(self.results) + len(self.errors) >= LOAD_MAX_REQUESTS:
                            return
                    try:
                        reply = client.get("/", host=COLOR)
                    except OSError as exc:
                        with lock:
                            self.errors.append(repr(exc))
                        client.close()
                        client = Http1Client(self.proxy.egress_port, timeout=10.0)
                        continue
                    with lock:
                        self.results.append((time.monotonic(), reply.status, reply.app))
            finally:
                client.close()

        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for future in [pool.submit(worker) for _ in range(self.workers)]:
                future.result()

    def count(self, app: str) -> int:
        return sum(1 for _, _, seen in list(self.results) if seen == app)


# ------------------------------------------------------------------------------------------ http source


def test_weights_switch_on_an_http_source_under_load_without_failures(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.serve(colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path, config_server.url, args=("--refresh-interval", str(REFRESH_S))) as proxy:
        assert proxy.stats()[CONNECTED] == 1
        load = Load(proxy)
        with concurrent.futures.ThreadPoolExecutor(1) as runner:
            running = runner.submit(load.run)
            try:
                assert wait_for(lambda: load.count("blue") >= 100, 15.0), (load.errors, len(load.results))
                before = proxy.stats()
                switched_at = time.monotonic()
                config_server.serve(colour_mesh(blue, green, (0, 100)))
                assert wait_for(lambda: load.count("green") >= 200, SWAP_TIMEOUT_S), proxy.output_tail()
            finally:
                load.stop.set()
                running.result(LOAD_MAX_S + 10)
        after = proxy.stats()

    failed = [(status, app) for _, status, app in load.results if status != 200]
    assert not load.errors and not failed, (load.errors[:5], failed[:5])
    assert all(app == "blue" for t, _, app in load.results if t < switched_at)
    # After the first green answer, the new snapshot serves every request that starts later.
    first_green = next(i for i, (_, _, app) in enumerate(load.results) if app == "green")
    late = [app for _, _, app in load.results[first_green + 2 * load.workers :]]
    assert late and set(late) == {"green"}, late[:20]
    assert grew(before, after, CDS_SUCCESS) == 1
    assert grew(before, after, CDS_REJECTED) == 0


def test_unchanged_http_source_answers_304_and_is_not_recompiled(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.serve(colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path, config_server.url, args=("--refresh-interval", str(REFRESH_S))) as proxy:
        before = proxy.stats()
        start = config_server.counts()
        assert wait_for(lambda: config_server.counts()[2] - start[2] >= 5, 10.0), config_server
        after = proxy.stats()
        assert after[CONNECTED] == 1
        info = proxy.admin("/server_info").json()

    requests, conditional, not_modified = (b - a for a, b in zip(start, config_server.counts(), strict=True))
    # Every poll after the first carries the ETag, and the server answered each with 304.
    assert conditional >= 5 and not_modified >= 5
    assert set(config_server.if_none_match) == {config_server.etag}
    assert requests - conditional <= 1, config_server
    assert grew(before, after, CDS_SUCCESS) == 0, "a 304 must not recompile or reapply"
    assert info["state"] == "LIVE"


def test_a_server_without_etags_gets_plain_polls_and_an_unchanged_body_is_not_reapplied(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.validators = False
    config_server.serve(colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path, config_server.url, args=("--refresh-interval", str(REFRESH_S))) as proxy:
        before = proxy.stats()
        start = config_server.counts()[0]
        assert wait_for(lambda: config_server.counts()[0] - start >= 5, 10.0), config_server
        unchanged = proxy.stats()
        config_server.serve(colour_mesh(blue, green, (0, 100)))
        assert wait_for_app(proxy, "green"), proxy.output_tail()
    assert config_server.counts()[1] == 0, "no validator was ever sent, so none may come back"
    assert grew(before, unchanged, CDS_SUCCESS) == 0
    assert grew(before, unchanged, CDS_REJECTED) == 0


def test_broken_http_update_is_rejected_and_the_last_good_keeps_serving(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.serve(colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path, config_server.url, args=("--refresh-interval", str(REFRESH_S))) as proxy:
        before = proxy.stats()
        config_server.serve(broken_mesh(blue, green))
        assert wait_for(lambda: grew(before, proxy.stats(), CDS_REJECTED) >= 1, SWAP_TIMEOUT_S)
        replies = [proxy.egress(COLOR) for _ in range(10)]
        rejected = proxy.stats()

        config_server.serve(colour_mesh(blue, green, (0, 100)))
        assert wait_for_app(proxy, "green"), proxy.output_tail()
        fixed = proxy.stats()
        stderr = proxy.stderr_text()

    assert [(r.status, r.app) for r in replies] == [(200, "blue")] * 10
    assert rejected[CONNECTED] == 1, "a reachable source with a bad config is still connected"
    assert grew(before, rejected, CDS_SUCCESS) == 0
    # The same bad bytes are compiled once, not on every poll (the source reports them unchanged).
    assert grew(before, fixed, CDS_REJECTED) == 1
    assert grew(rejected, fixed, CDS_SUCCESS) == 1
    assert "weightedTargets[0].weight: 150 is not in 0..100" in stderr


def test_unreachable_http_source_is_disconnected_and_keeps_serving(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.serve(colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path, config_server.url, args=("--refresh-interval", str(REFRESH_S))) as proxy:
        config_server.failing = True
        assert wait_for(lambda: proxy.stats()[CONNECTED] == 0, SWAP_TIMEOUT_S), proxy.output_tail()
        during = [proxy.egress(COLOR) for _ in range(5)]
        ready = proxy.admin("/ready").status
        config_server.serve(colour_mesh(blue, green, (0, 100)))
        # backoff: the next poll may be a few refresh intervals away
        assert wait_for(lambda: proxy.stats()[CONNECTED] == 1, SWAP_TIMEOUT_S), proxy.output_tail()
        assert wait_for_app(proxy, "green"), proxy.output_tail()

    assert [(r.status, r.app) for r in during] == [(200, "blue")] * 5
    assert ready == 200, "losing the source after LIVE does not make the proxy unready (spec §6.5)"
    assert "HTTP 503" in proxy.stderr_text()


def test_initializing_until_the_http_source_first_answers(
    blue: ColourApp, green: ColourApp, config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.failing = True
    proxy = SourcedProxy(
        [], node_arn("front"), tmp_path, source=config_server.url, extra_args=("--refresh-interval", "0.1")
    )
    proxy.spawn()
    try:

        def admin_up() -> bool:
            try:
                return proxy.admin("/server_info", timeout=1.0).status == 200
            except OSError:
                return False

        assert wait_for(admin_up, 10.0), proxy.output_tail()
        assert wait_for(lambda: config_server.counts()[0] >= 3, 10.0), config_server
        info = proxy.admin("/server_info").json()
        ready = proxy.admin("/ready").status
        connected = proxy.stats()[CONNECTED]
        config_server.serve(colour_mesh(blue, green, (0, 100)))
        proxy.wait_ready()
        served = answered_by(proxy)
        live_connected = proxy.stats()[CONNECTED]
    finally:
        proxy.stop()

    assert info["state"] == "INITIALIZING"
    assert (ready, connected) == (503, 0)
    assert (served, live_connected) == ("green", 1)


def test_sigterm_while_initializing_stops_without_a_drain_wait(
    config_server: ConfigServer, tmp_path: Path
) -> None:
    config_server.failing = True
    proxy = SourcedProxy(
        [], node_arn("front"), tmp_path, source=config_server.url, extra_args=("--refresh-interval", "0.1")
    )
    proxy.drain_wait_s = 20  # a drain wait would show: the process must be gone well before it
    proxy.spawn()
    try:
        assert wait_for(lambda: config_server.counts()[0] >= 2, 10.0), proxy.output_tail()
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGTERM)
        rc = proxy.wait_exit(10.0)
    finally:
        proxy.stop()
    assert rc == 0, proxy.output_tail()
    assert "stopped before the first configuration arrived" in proxy.stderr_text()


def test_initial_fetch_timeout_ends_start_up(config_server: ConfigServer, tmp_path: Path) -> None:
    config_server.failing = True
    proxy = SourcedProxy(
        [],
        node_arn("front"),
        tmp_path,
        source=config_server.url,
        extra_args=("--refresh-interval", "0.1"),
        env={"ENVOY_INITIAL_FETCH_TIMEOUT": "2"},
    )
    proxy.spawn()
    try:
        rc = proxy.wait_exit(15.0)
    finally:
        proxy.stop()
    assert rc not in (None, 0), proxy.output_tail()
    assert "within ENVOY_INITIAL_FETCH_TIMEOUT" in proxy.stderr_text()
    assert config_server.counts()[0] >= 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--config", "ftp://host/mesh.json"), "unsupported scheme 'ftp'"),
        (("--config", "x.json", "--refresh-interval", "-1"), "must be a non-negative number of seconds"),
        (("--config", "x.json", "--refresh-interval", "soon"), "not a number of seconds"),
    ],
    ids=["unsupported-scheme", "negative-interval", "not-a-number"],
)
def test_bad_source_arguments_are_fatal_and_named(
    args: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    env = clean_environ()
    env["APPMESH_RESOURCE_ARN"] = node_arn("front")
    done = run_meshproxy(["run", *args], env=env, cwd=tmp_path, timeout=15.0)
    assert done.returncode not in (0, None), done
    assert expected in done.stderr, done


def test_https_source_verifies_the_server_with_the_system_trust_store(
    blue: ColourApp, green: ColourApp, app_loop: AppLoop, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    server = ConfigServer(tls=tls_for_loopback(ca_file))
    app_loop.call(server.start())
    try:
        server.serve(colour_mesh(blue, green, (0, 100)))
        # OpenSSL's default verify paths honour SSL_CERT_FILE: the proxy trusts the test CA through it
        args = ("--refresh-interval", str(REFRESH_S))
        with sourced_proxy(
            tmp_path / "trusted", server.url, args=args, env={"SSL_CERT_FILE": str(ca_file)}
        ) as proxy:
            served = answered_by(proxy)
        untrusted = SourcedProxy(
            [], node_arn("front"), tmp_path / "untrusted", source=server.url, extra_args=args
        )
        untrusted.spawn()
        try:
            assert wait_for(lambda: "certificate verify failed" in untrusted.stderr_text(), 10.0), (
                untrusted.output_tail()
            )
            state = untrusted.admin("/server_info").json()["state"]
        finally:
            untrusted.stop()
    finally:
        app_loop.call(server.stop())
    assert served == "green"
    assert state == "INITIALIZING"


# ------------------------------------------------------------------------------------------ file source


def replace_file(path: Path, resources: list[Resource]) -> None:
    """Write atomically, so the proxy never reads half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(resources))
    os.replace(temporary, path)


def test_file_source_reloads_rejects_a_broken_update_and_applies_the_fix(
    blue: ColourApp, green: ColourApp, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.json"
    replace_file(config, colour_mesh(blue, green, (100, 0)))
    env = {"MESHPROXY_CONFIG_REFRESH_S": str(REFRESH_S)}
    with sourced_proxy(tmp_path / "proxy", str(config), env=env) as proxy:
        assert answered_by(proxy) == "blue"
        load = Load(proxy, workers=1)
        with concurrent.futures.ThreadPoolExecutor(1) as runner:
            running = runner.submit(load.run)
            try:
                before = proxy.stats()
                replace_file(config, broken_mesh(blue, green))
                assert wait_for(lambda: grew(before, proxy.stats(), CDS_REJECTED) >= 1, SWAP_TIMEOUT_S)
                rejected = proxy.stats()
                blue_during_rejection = load.count("blue")
                replace_file(config, colour_mesh(blue, green, (0, 100)))
                assert wait_for(lambda: load.count("green") >= 50, SWAP_TIMEOUT_S), proxy.output_tail()
            finally:
                load.stop.set()
                running.result(LOAD_MAX_S + 10)
        fixed = proxy.stats()

        config.unlink()  # a vanished file is an unreachable source: disconnected, still serving
        assert wait_for(lambda: proxy.stats()[CONNECTED] == 0, SWAP_TIMEOUT_S), proxy.output_tail()
        still = answered_by(proxy)

    failed = [(status, app) for _, status, app in load.results if status != 200]
    assert not load.errors and not failed, (load.errors[:5], failed[:5])
    assert blue_during_rejection > 0
    assert grew(before, rejected, CDS_SUCCESS) == 0
    assert grew(before, fixed, CDS_REJECTED) == 1
    assert grew(rejected, fixed, CDS_SUCCESS) == 1
    assert still == "green"


def test_read_once_when_the_refresh_interval_is_zero(
    blue: ColourApp, green: ColourApp, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.json"
    replace_file(config, colour_mesh(blue, green, (100, 0)))
    with sourced_proxy(tmp_path / "proxy", str(config), args=("--refresh-interval", "0")) as proxy:
        replace_file(config, colour_mesh(blue, green, (0, 100)))
        time.sleep(1.0)  # many polls' worth, had it been polling
        assert answered_by(proxy) == "blue"
        assert proxy.stats()[CDS_SUCCESS] == 1
