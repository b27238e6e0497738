"""HTTP/2 and gRPC through the proxy with real peers (issue 5): curl, h2load, grpcio, and an h2 client.

One proxy for node `client` serves the module:

- ingress: one http2 listener whose local app is `H2App("local")` (h2c);
- egress backends: `echo.demo.local` (virtual router, http2Route with a stream-error retry, to
  `H2App("echo")`), `plain.demo.local` (an HTTP/1.1 `ColourApp`), and `grpc.demo.local` (virtual router with
  grpcRoutes by service, method and metadata to two grpcio `EchoServer`s, one route retrying UNAVAILABLE).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshproxy.codec.h2 import HTTP2_CODECS

from .apps import AppLoop, ColourApp
from .grpc_apps.echo import EchoClient, EchoServer
from .grpc_apps.h2_app import H2App
from .grpc_apps.h2_client import H2Client
from .harness import MeshProxy, free_ports, grew, http_request, proc_status_kib, running_proxy, wait_for
from .resources import (
    MESH,
    Resource,
    listener,
    mesh,
    node_arn,
    service_via_node,
    service_via_router,
    virtual_node,
)

ECHO = "echo.demo.local"
PLAIN = "plain.demo.local"
GRPC = "grpc.demo.local"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


def router(name: str, protocol: str, port: int = 8080) -> Resource:
    listeners = [{"portMapping": {"port": port, "protocol": protocol}}]
    return {"virtualRouter": {"meshName": MESH, "virtualRouterName": name, "spec": {"listeners": listeners}}}


def targets(*nodes: str) -> dict[str, Any]:
    return {"weightedTargets": [{"virtualNode": n, "weight": 1} for n in nodes]}


def http2_route(router_name: str, name: str, node: str, *, retry: dict[str, Any] | None = None) -> Resource:
    spec: dict[str, Any] = {"match": {"prefix": "/"}, "action": targets(node)}
    if retry is not None:
        spec["retryPolicy"] = retry
    return {
        "route": {
            "meshName": MESH,
            "virtualRouterName": router_name,
            "routeName": name,
            "spec": {"http2Route": spec},
        }
    }


def grpc_route(
    name: str,
    node: str,
    *,
    service: str | None = None,
    method: str | None = None,
    metadata: list[dict[str, Any]] | None = None,
    retry: dict[str, Any] | None = None,
    priority: int | None = None,
) -> Resource:
    match: dict[str, Any] = {}
    if service is not None:
        match["serviceName"] = service
    if method is not None:
        match["methodName"] = method
    if metadata:
        match["metadata"] = metadata
    spec: dict[str, Any] = {"grpcRoute": {"match": match, "action": targets(node)}}
    if retry is not None:
        spec["grpcRoute"]["retryPolicy"] = retry
    if priority is not None:
        spec["priority"] = priority
    return {"route": {"meshName": MESH, "virtualRouterName": "grpc-router", "routeName": name, "spec": spec}}


@dataclass
class Http2Mesh:
    proxy: MeshProxy
    echo: H2App
    local: H2App
    plain: ColourApp
    alpha: EchoServer
    beta: EchoServer

    def curl(self, *args: str, port: int | None = None, path: str = "/") -> subprocess.CompletedProcess[str]:
        url = f"http://127.0.0.1:{port or self.proxy.egress_port}{path}"
        return subprocess.run(
            ["curl", "-sS", "-i", "--max-time", "10", *args, url],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )


def _resources(echo: H2App, local: H2App, plain: ColourApp, alpha: EchoServer, beta: EchoServer) -> list[Any]:
    stream_error = {
        "maxRetries": 2,
        "perRetryTimeout": {"value": 5, "unit": "s"},
        "httpRetryEvents": ["stream-error"],
    }
    unavailable = {
        "maxRetries": 3,
        "perRetryTimeout": {"value": 5, "unit": "s"},
        "grpcRetryEvents": ["unavailable"],
    }
    return [
        mesh(),
        virtual_node(
            "client",
            [listener(local.port, protocol="http2")],
            backends=[ECHO, PLAIN, GRPC],
        ),
        virtual_node("echo", [listener(echo.port, protocol="http2")]),
        virtual_node("plain", plain.port),
        virtual_node("alpha", [listener(alpha.port, protocol="grpc")]),
        virtual_node("beta", [listener(beta.port, protocol="grpc")]),
        router("echo-router", "http2"),
        http2_route("echo-router", "all", "echo", retry=stream_error),
        router("grpc-router", "grpc"),
        grpc_route("admin", "beta", service="demo.Admin"),
        grpc_route("canary", "beta", service="demo.Echo", method="Unary",
                   metadata=[{"name": "x-canary", "match": {"exact": "yes"}}]),
        grpc_route("flaky", "alpha", service="demo.Echo", method="Flaky", retry=unavailable),
        grpc_route("echo", "alpha", service="demo.Echo"),
        service_via_router(ECHO, "echo-router"),
        service_via_node(PLAIN, "plain"),
        service_via_router(GRPC, "grpc-router"),
    ]  # fmt: skip


@pytest.fixture(scope="module", params=HTTP2_CODECS)
def http2_codec(request: pytest.FixtureRequest) -> str:
    """MESHPROXY_HTTP2_CODEC: the lean frame layer (default) and the h2 library (reference) both serve."""
    codec: str = request.param
    return codec


@pytest.fixture(scope="module")
def h2mesh(
    app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory, http2_codec: str
) -> Iterator[Http2Mesh]:
    echo, local = H2App("echo"), H2App("local")
    app_loop.call(echo.start())
    app_loop.call(local.start())
    plain = app_loop.colour_app("plain")
    alpha, beta = EchoServer("alpha").start(), EchoServer("beta").start()
    try:
        resources = _resources(echo, local, plain, alpha, beta)
        workdir = tmp_path_factory.mktemp(f"http2-{http2_codec}")
        env = {"MESHPROXY_HTTP2_CODEC": http2_codec}
        with running_proxy(resources, node_arn("client"), workdir, env=env) as proxy:
            yield Http2Mesh(proxy, echo, local, plain, alpha, beta)
    finally:
        alpha.stop()
        beta.stop()
        app_loop.call(echo.stop())
        app_loop.call(local.stop())


def _status(result: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"^HTTP/(?:2|1\.1) (\d{3})", result.stdout, re.MULTILINE)
    assert match, (result.stdout[:500], result.stderr)
    return int(match.group(1))


# ------------------------------------------------------------------------------------------ HTTP/2 and h2c


def test_h2c_prior_knowledge_to_an_http2_upstream(h2mesh: Http2Mesh) -> None:
    result = h2mesh.curl("--http2-prior-knowledge", "-H", f"Host: {ECHO}", path="/hello?x=1")
    assert result.stdout.startswith("HTTP/2 200"), result
    body = result.stdout.split("\n\n", 1)[1]
    assert '"protocol": "HTTP/2"' in body and '"path": "/hello?x=1"' in body
    assert f'"authority": "{ECHO}"' in body, body
    assert "x-envoy-upstream-service-time:" in result.stdout and "server: envoy" in result.stdout


def test_h2c_client_to_an_http1_upstream_is_translated(h2mesh: Http2Mesh) -> None:
    body = b"a" * 100_000
    result = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--http2-prior-knowledge", "-H", f"Host: {PLAIN}",
         "--data-binary", "@-", f"http://127.0.0.1:{h2mesh.proxy.egress_port}/post"],
        input=body, capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.stdout.startswith(b"HTTP/2 200"), result
    seen = h2mesh.plain.last
    assert (seen.method, seen.path, seen.body_bytes) == ("POST", "/post", len(body))
    assert seen.headers["host"] == PLAIN


def test_http1_client_to_an_http2_upstream_is_translated(h2mesh: Http2Mesh) -> None:
    reply = http_request(h2mesh.proxy.egress_port, "POST", "/h1", host=ECHO, body=b"x" * 5000)
    assert reply.status == 200, reply
    seen = reply.json()
    assert (seen["protocol"], seen["method"], seen["body_bytes"], seen["authority"]) == (
        "HTTP/2",
        "POST",
        5000,
        ECHO,
    )
    assert "transfer-encoding" not in seen["headers"] and "connection" not in seen["headers"]
    empty = http_request(h2mesh.proxy.egress_port, "GET", "/status/204", host=ECHO)
    assert empty.status == 204 and empty.body == b""


def test_http1_upgrade_h2c_is_answered_over_http2(h2mesh: Http2Mesh) -> None:
    result = h2mesh.curl("--http2", "-H", f"Host: {PLAIN}", path="/upgraded")
    assert "HTTP/1.1 101 Switching Protocols" in result.stdout, result
    assert "HTTP/2 200" in result.stdout
    assert h2mesh.plain.last.path == "/upgraded"


def test_ingress_http2_listener_takes_h2c_and_http1(h2mesh: Http2Mesh) -> None:
    port = h2mesh.proxy.ingress_port
    result = h2mesh.curl("--http2-prior-knowledge", "-H", "Host: client.demo.local", port=port, path="/in")
    assert result.stdout.startswith("HTTP/2 200") and '"name": "local"' in result.stdout, result
    reply = http_request(port, "GET", "/in-h1", host="client.demo.local")
    assert reply.status == 200 and reply.json()["protocol"] == "HTTP/2", reply


def test_h2load_through_the_proxy_multiplexes_upstream_streams(h2mesh: Http2Mesh) -> None:
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is not installed")
    h2mesh.echo.reset()
    cluster = f"cluster.cds_egress_demo_echo_http2_{h2mesh.echo.port}"
    before = h2mesh.proxy.stats()
    result = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "10", "-H", f":authority: {ECHO}",
         f"http://127.0.0.1:{h2mesh.proxy.egress_port}/load"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "2000 succeeded" in result.stdout and "2000 2xx" in result.stdout, result.stdout
    after = h2mesh.proxy.stats()
    assert grew(before, after, "http.egress.downstream_rq_http2_total") == 2000
    assert h2mesh.echo.requests == 2000
    # 40 concurrent requests share one multiplexed upstream connection (the app allows 100 streams)
    assert grew(before, after, f"{cluster}.upstream_rq_total") == 2000
    assert grew(before, after, f"{cluster}.upstream_cx_total") <= 1, after
    assert after[f"{cluster}.upstream_cx_active"] == 1


def test_no_route_on_http2_is_a_404_local_reply(h2mesh: Http2Mesh) -> None:
    with H2Client(h2mesh.proxy.egress_port) as client:
        response = client.request("/", "nowhere.demo.local")
    assert response.status == 404 and response.headers["server"] == "envoy", response


def test_trailers_are_relayed(h2mesh: Http2Mesh) -> None:
    with H2Client(h2mesh.proxy.egress_port) as client:
        response = client.request("/trailers", ECHO)
    assert (response.status, response.body, response.trailers) == (
        200,
        b"with trailers",
        {"x-trailer": "yes"},
    )


def test_refused_stream_is_retried_as_a_stream_error(h2mesh: Http2Mesh) -> None:
    h2mesh.echo.reset()
    h2mesh.echo.refuse_first(1)
    before = h2mesh.proxy.stats()
    with H2Client(h2mesh.proxy.egress_port) as client:
        response = client.request("/refused", ECHO)
    assert response.status == 200, response
    assert h2mesh.echo.requests == 2
    cluster = f"cluster.cds_egress_demo_echo_http2_{h2mesh.echo.port}"
    assert grew(before, h2mesh.proxy.stats(), f"{cluster}.upstream_rq_retry") == 1


def test_upstream_goaway_moves_new_requests_to_a_new_connection(h2mesh: Http2Mesh, app_loop: AppLoop) -> None:
    cluster = f"cluster.cds_egress_demo_echo_http2_{h2mesh.echo.port}"
    with H2Client(h2mesh.proxy.egress_port) as client:
        assert client.request("/first", ECHO).status == 200
        before = h2mesh.proxy.stats()
        app_loop.call(h2mesh.echo.goaway())
        assert wait_for(lambda: h2mesh.proxy.stats().get(f"{cluster}.upstream_cx_active") == 0, 5.0)
        assert client.request("/second", ECHO).status == 200
    after = h2mesh.proxy.stats()
    assert grew(before, after, f"{cluster}.upstream_cx_total") == 1
    assert grew(before, after, f"{cluster}.upstream_rq_retry") == 0


def test_extended_connect_is_refused_with_a_clear_501(h2mesh: Http2Mesh) -> None:
    with H2Client(h2mesh.proxy.egress_port) as client:
        response = client.request("/chat", ECHO, method="CONNECT", protocol="websocket")
    assert response.status == 501 and b"RFC 8441" in response.body, response


def test_websocket_upgrade_to_an_http2_upstream_is_a_clear_501(h2mesh: Http2Mesh) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", h2mesh.proxy.egress_port, timeout=10)
    try:
        conn.request(
            "GET",
            "/ws",
            headers={"Host": ECHO, "Connection": "Upgrade", "Upgrade": "websocket",
                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"},
        )  # fmt: skip
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 501 and b"WebSocket" in body, body


def test_slow_reader_slows_the_upstream_and_memory_stays_bounded(
    h2mesh: Http2Mesh, app_loop: AppLoop
) -> None:
    size = 32 << 20
    rss_before = proc_status_kib(h2mesh.proxy.pid, "VmRSS")
    with H2Client(h2mesh.proxy.egress_port, window=65535) as client:
        client.auto_ack = False
        sid = client.start(f"/bytes/{size}", ECHO)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            client.pump(0.1)
        stalled = len(client.responses[sid].body)
        # The client never reopened its window: it got at most its 64 KiB. The app is held back by the
        # proxy's windows (1 MiB per stream), so most of the body still waits in the app, not in the proxy.
        assert stalled <= 65535, stalled
        waiting = app_loop.call(h2mesh.echo.pending_bytes())
        assert waiting >= size - (8 << 20), waiting
        rss_stalled = proc_status_kib(h2mesh.proxy.pid, "VmRSS")
        assert rss_stalled - rss_before < 16 * 1024, (rss_before, rss_stalled)
        client.auto_ack = True
        client.ack_all(grow_window=16 << 20)
        response = client.wait(sid, timeout=60)
    assert response.status == 200 and len(response.body) == size, (response.status, len(response.body))


# ------------------------------------------------------------------------------------------------ gRPC


@pytest.fixture
def grpc_client(h2mesh: Http2Mesh) -> Iterator[EchoClient]:
    h2mesh.alpha.reset()
    h2mesh.beta.reset()
    with EchoClient(h2mesh.proxy.egress_port, GRPC) as client:
        yield client


def test_grpc_unary_and_server_streaming(grpc_client: EchoClient) -> None:
    assert grpc_client.unary("demo.Echo/Unary", b"hi") == b"alpha:hi"
    assert grpc_client.stream("demo.Echo/Stream", b"4") == [b"alpha:0", b"alpha:1", b"alpha:2", b"alpha:3"]


def test_grpc_client_streaming_and_bidirectional(grpc_client: EchoClient) -> None:
    parts = [b"x" * 70_000, b"y", b"z" * 3]  # larger than one HTTP/2 frame, and small ones
    assert grpc_client.collect("demo.Echo/Collect", parts) == b"alpha:" + b",".join(parts)
    assert grpc_client.chat("demo.Echo/Chat", [b"1", b"2", b"3"]) == [b"alpha>1", b"alpha>2", b"alpha>3"]


def test_grpc_routes_by_service_method_and_metadata(grpc_client: EchoClient, h2mesh: Http2Mesh) -> None:
    assert grpc_client.unary("demo.Admin/Whoami", b"") == b"beta"
    assert grpc_client.unary("demo.Echo/Unary", b"c", metadata=(("x-canary", "yes"),)) == b"beta:c"
    assert grpc_client.unary("demo.Echo/Unary", b"c", metadata=(("x-canary", "no"),)) == b"alpha:c"
    assert h2mesh.beta.calls == ["demo.Admin/Whoami", "demo.Echo/Unary"]
    assert h2mesh.beta.metadata[-1]["x-canary"] == "yes"


def test_grpc_retries_unavailable(grpc_client: EchoClient, h2mesh: Http2Mesh) -> None:
    h2mesh.alpha.reset(fail_first=2)
    assert grpc_client.unary("demo.Echo/Flaky", b"x") == b"alpha:x"
    assert h2mesh.alpha.calls == ["demo.Echo/Flaky"] * 3


def test_grpc_status_without_a_retry_event_is_relayed(grpc_client: EchoClient, h2mesh: Http2Mesh) -> None:
    h2mesh.alpha.reset(fail_first=5, fail_code=grpc.StatusCode.INTERNAL)
    with pytest.raises(grpc.RpcError) as raised:
        grpc_client.unary("demo.Echo/Flaky", b"x")
    assert raised.value.code() is grpc.StatusCode.INTERNAL and "flaky" in (raised.value.details() or "")
    assert len(h2mesh.alpha.calls) == 1


def test_grpc_no_route_is_unimplemented(grpc_client: EchoClient) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        grpc_client.unary("demo.Nothing/Here", b"")
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_grpc_timeout_header_bounds_the_request(h2mesh: Http2Mesh) -> None:
    started = time.monotonic()
    with H2Client(h2mesh.proxy.egress_port) as client:
        response = client.request(
            "/demo.Echo/Sleep",
            GRPC,
            method="POST",
            headers=[("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "300m")],
            body=b"\x00\x00\x00\x00\x04" + b"3000",
        )
    elapsed = time.monotonic() - started
    assert response.status == 200 and response.headers.get("grpc-status") == "4", response
    assert elapsed < 2.5, elapsed  # the route's own timeout is 15 s; the app would sleep 3 s


# ---------------------------------------------------------------------------------- upstream down, drain


def test_grpc_local_reply_is_a_grpc_status(app_loop: AppLoop, tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there: connections are refused
    resources = [
        mesh(),
        virtual_node("client", 8080, backends=[GRPC]),
        virtual_node("alpha", [listener(port, protocol="grpc")]),
        router("grpc-router", "grpc"),
        grpc_route("echo", "alpha", service="demo.Echo"),
        service_via_router(GRPC, "grpc-router"),
    ]
    with (
        running_proxy(resources, node_arn("client"), tmp_path) as proxy,
        EchoClient(proxy.egress_port, GRPC) as c,
        pytest.raises(grpc.RpcError) as raised,
    ):
        c.unary("demo.Echo/Unary", b"")
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE, raised.value
    assert "connection failure" in (raised.value.details() or "")


def test_drain_sends_goaway_and_finishes_the_stream(app_loop: AppLoop, tmp_path: Path) -> None:
    echo = H2App("echo")
    app_loop.call(echo.start())
    try:
        resources = [
            mesh(),
            virtual_node("client", 8080, backends=[ECHO]),
            virtual_node("echo", [listener(echo.port, protocol="http2")]),
            service_via_node(ECHO, "echo"),
        ]
        with running_proxy(resources, node_arn("client"), tmp_path) as proxy:
            with H2Client(proxy.egress_port) as client:
                assert client.request("/before", ECHO).status == 200
                assert proxy.admin("/drain_listeners", method="POST").status == 200
                response = client.request("/during", ECHO)
                deadline = time.monotonic() + 5
                while client.goaway is None and not client.closed and time.monotonic() < deadline:
                    client.pump()
            assert response.status == 200, response
            assert client.goaway is not None and int(client.goaway.error_code or 0) == 0
            assert client.goaway.last_stream_id == 3
    finally:
        app_loop.call(echo.stop())


# ------------------------------------------------------------------------------------------ virtual gateway


def _gateway(
    port: int, protocol: str, route_kind: str, match: dict[str, Any], service: str
) -> list[Resource]:
    """Virtual gateway `gw` with one listener; its route's type matches the listener protocol (App Mesh)."""
    listeners = [{"portMapping": {"port": port, "protocol": protocol}}]
    action = {"target": {"virtualService": {"virtualServiceName": service}}}
    route = {
        "meshName": MESH,
        "virtualGatewayName": "gw",
        "gatewayRouteName": "only",
        "spec": {route_kind: {"match": match, "action": action}},
    }
    return [
        {"virtualGateway": {"meshName": MESH, "virtualGatewayName": "gw", "spec": {"listeners": listeners}}},
        {"gatewayRoute": route},
    ]


def test_gateway_http2_listener_serves_h2c_and_http1(app_loop: AppLoop, tmp_path: Path) -> None:
    echo = H2App("echo")
    app_loop.call(echo.start())
    (port,) = free_ports(1)
    resources = [
        mesh(),
        *_gateway(port, "http2", "http2Route", {"prefix": "/"}, ECHO),
        virtual_node("echo", [listener(echo.port, protocol="http2")]),
        service_via_node(ECHO, "echo"),
    ]
    try:
        with running_proxy(resources, f"mesh/{MESH}/virtualGateway/gw", tmp_path):
            with H2Client(port) as client:
                response = client.request("/via-gateway", "gw.example.com")
            assert response.status == 200 and b'"name": "echo"' in response.body, response
            reply = http_request(port, "GET", "/h1-via-gateway", host="gw.example.com")
            assert reply.status == 200 and reply.json()["protocol"] == "HTTP/2", reply
    finally:
        app_loop.call(echo.stop())


def test_gateway_grpc_listener_routes_by_service(tmp_path: Path) -> None:
    alpha = EchoServer("alpha").start()
    (port,) = free_ports(1)
    resources = [
        mesh(),
        *_gateway(port, "grpc", "grpcRoute", {"serviceName": "demo.Echo"}, GRPC),
        virtual_node("alpha", [listener(alpha.port, protocol="grpc")]),
        service_via_node(GRPC, "alpha"),
    ]
    try:
        with (
            running_proxy(resources, f"mesh/{MESH}/virtualGateway/gw", tmp_path),
            EchoClient(port, "gw.example.com") as client,
        ):
            assert client.unary("demo.Echo/Unary", b"g") == b"alpha:g"
            assert client.stream("demo.Echo/Stream", b"2") == [b"alpha:0", b"alpha:1"]
            with pytest.raises(grpc.RpcError) as raised:
                client.unary("demo.Admin/Whoami", b"")
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED  # no gateway route for the service
    finally:
        alpha.stop()


def test_grpc_listener_max_requests_overflows_as_unavailable(tmp_path: Path) -> None:
    """connectionPool.grpc.maxRequests on the ingress listener (spec §4.2, destination side): a second
    concurrent call overflows and the client gets UNAVAILABLE with Envoy's overflow message."""
    local = EchoServer("local").start()
    node_listener = {
        "portMapping": {"port": local.port, "protocol": "grpc"},
        "connectionPool": {"grpc": {"maxRequests": 1}},
    }
    resources = [mesh(), virtual_node("front", [node_listener])]
    try:
        with (
            running_proxy(resources, node_arn("front"), tmp_path) as proxy,
            EchoClient(proxy.ingress_port, "front.demo.local") as client,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            slow = pool.submit(client.unary, "demo.Echo/Sleep", b"1500")
            assert wait_for(lambda: len(local.calls) == 1, 5.0)
            with pytest.raises(grpc.RpcError) as raised:
                client.unary("demo.Echo/Unary", b"second")
            assert slow.result(timeout=10) == b"local:slept"
            assert client.unary("demo.Echo/Unary", b"third") == b"local:third"
            stats = proxy.stats()
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE, raised.value
        assert "overflow" in (raised.value.details() or "")
        overflow = [
            v for k, v in stats.items() if k.endswith("upstream_rq_pending_overflow") and "ingress" in k
        ]
        assert overflow == [1], stats
    finally:
        local.stop()
