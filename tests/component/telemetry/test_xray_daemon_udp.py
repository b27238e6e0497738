"""X-Ray segments received by a real UDP socket standing in for the daemon (spec §5.4)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.tracing import TraceContext, TraceStart


def daemon() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def segments(sock: socket.socket, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Up to `count` datagrams, each checked for the daemon header, decoded to segment documents."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        header, body = data.split(b"\n", 1)
        assert header == b'{"format":"json","version":1}'
        out.append(json.loads(body))
    return out


def finish(ts: TraceStart, direction: str, code: int = 200, **extra: Any) -> RequestSummary:
    return RequestSummary(
        direction=direction,
        start_time=time.time(),
        method="GET",
        path="/ping",
        authority="serviceb.apps.local",
        request_headers={"user-agent": "curl/8.5.0"},
        response_code=code,
        bytes_sent=2,
        duration_ms=4,
        downstream_remote_address="127.0.0.1:40000",
        trace=ts.context,
        **extra,
    )


def test_sampled_requests_become_segments_and_unsampled_do_not(
    make_settings: Callable[..., Settings], segment_rules: Callable[[dict[str, Any]], None]
) -> None:
    sock = daemon()
    settings = make_settings(xray=True, xray_daemon_port=sock.getsockname()[1])
    telemetry = Telemetry(settings, StatsStore(), drain_interval_s=0.01)
    root = "1-6650a1b2-5f1c2a3b4d5e6f708192a3b4"

    async def scenario() -> tuple[TraceStart, TraceStart]:
        await telemetry.start()
        try:
            skipped = telemetry.start_trace(
                "ingress", [(b"x-amzn-trace-id", f"Root={root};Sampled=0".encode())], "GET", "b", "/"
            )
            kept = telemetry.start_trace(
                "ingress",
                [(b"x-amzn-trace-id", f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1".encode())],
                "GET",
                "b",
                "/",
            )
            assert skipped is not None and kept is not None
            telemetry.request_done(finish(skipped, "ingress"))
            telemetry.request_done(finish(kept, "ingress", code=503, response_flags="UF"))
            await asyncio.sleep(0.1)
        finally:
            await telemetry.stop()
        return skipped, kept

    try:
        _, kept = asyncio.run(scenario())
        got = segments(sock, 2, timeout=1.0)
    finally:
        sock.close()
    assert len(got) == 1
    seg = got[0]
    segment_rules(seg)
    assert isinstance(kept.context, TraceContext)
    assert seg["id"] == kept.context.span_hex
    assert seg["trace_id"] == root and seg["parent_id"] == "53995c3f42cd8ad8"
    assert seg["name"] == "apps/serviceA" and seg["origin"] == "AWS::AppMesh::Proxy"
    assert seg["fault"] is True and seg["http"]["response"]["status"] == 503
    assert seg["annotations"]["response_flags"] == "UF"


def test_two_hops_make_one_trace(
    make_settings: Callable[..., Settings], segment_rules: Callable[[dict[str, Any]], None], node: Any
) -> None:
    """serviceA's egress span is the parent of serviceB's ingress span, as two App Mesh Envoys would be."""
    from meshproxy.config.snapshot import Identity, ResourceKind

    sock = daemon()
    port = sock.getsockname()[1]
    caller = Telemetry(make_settings(xray=True, xray_daemon_port=port, otel_endpoint=None), StatsStore())
    callee_identity = Identity(
        "mesh/apps/virtualNode/serviceB", "apps", ResourceKind.VIRTUAL_NODE, "serviceB", "x"
    )
    callee = Telemetry(
        make_settings(identity=callee_identity, xray=True, xray_daemon_port=port), StatsStore()
    )

    async def scenario() -> tuple[TraceStart, TraceStart]:
        await caller.start()
        await callee.start()
        try:
            # The app's request carries only a W3C traceparent; the first hop joins X-Ray to it.
            app_headers = [(b"traceparent", b"00-6650a1b25f1c2a3b4d5e6f708192a3b4-1111111111111111-01")]
            first = caller.start_trace("egress", app_headers, "GET", "serviceb.apps.local", "/ping")
            assert first is not None
            # What serviceB's proxy receives: the upstream headers the first hop set.
            second = callee.start_trace(
                "ingress", list(first.upstream_headers), "GET", "serviceb.apps.local", "/ping"
            )
            assert second is not None
            callee.request_done(finish(second, "ingress"))
            caller.request_done(finish(first, "egress"))
        finally:
            await callee.stop()
            await caller.stop()
        return first, second

    try:
        _, second = asyncio.run(scenario())
        got = segments(sock, 2)
    finally:
        sock.close()
    assert len(got) == 2
    for seg in got:
        segment_rules(seg)
    by_name = {seg["name"]: seg for seg in got}
    egress, ingress = by_name["apps/serviceA"], by_name["apps/serviceB"]
    assert egress["trace_id"] == ingress["trace_id"] == "1-6650a1b2-5f1c2a3b4d5e6f708192a3b4"
    assert egress["parent_id"] == "1111111111111111"
    assert ingress["parent_id"] == egress["id"]
    assert egress["annotations"]["direction"] == "egress" and ingress["annotations"]["direction"] == "ingress"
    # The W3C side of the second hop names the first hop's span too.
    traceparent = dict(second.upstream_headers)[b"traceparent"].decode()
    assert traceparent.split("-")[1] == "6650a1b25f1c2a3b4d5e6f708192a3b4"
    assert isinstance(second.context, TraceContext) and second.context.w3c_parent == int(egress["id"], 16)


def test_no_daemon_listening_is_not_an_error(make_settings: Callable[..., Settings]) -> None:
    sock = daemon()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port any more
    store = StatsStore()
    telemetry = Telemetry(make_settings(xray=True, xray_daemon_port=port, xray_sampling_rate=1.0), store)

    async def scenario() -> None:
        await telemetry.start()
        for _ in range(3):
            ts = telemetry.start_trace("ingress", [], "GET", "b", "/")
            assert ts is not None
            telemetry.request_done(finish(ts, "ingress"))
        await telemetry.stop()

    asyncio.run(scenario())
    assert store.server.telemetry_dropped_total == 0
