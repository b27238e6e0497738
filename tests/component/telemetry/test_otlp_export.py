"""Spans exported over OTLP/HTTP (protobuf) to a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.tracing import TraceContext

TRACEPARENT = b"00-6650a1b25f1c2a3b4d5e6f708192a3b4-1111111111111111-01"


class Collector:
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def spans(self) -> list[tuple[Span, dict[str, Any]]]:
        """Every span received, with its resource attributes."""
        out: list[tuple[Span, dict[str, Any]]] = []
        with self.lock:
            for request in self.requests:
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        out.extend((span, resource) for span in ss.spans)
        return out


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    state = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with state.lock:
                state.requests.append(request)
                state.paths.append(self.path)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


def test_spans_carry_the_propagated_ids_and_http_attributes(
    make_settings: Callable[..., Settings], collector: tuple[str, Collector]
) -> None:
    endpoint, state = collector
    telemetry = Telemetry(make_settings(otel_endpoint=endpoint), StatsStore(), drain_interval_s=0.01)

    async def scenario() -> tuple[TraceContext, TraceContext]:
        await telemetry.start()
        try:
            inbound = telemetry.start_trace("ingress", [(b"traceparent", TRACEPARENT)], "GET", "b", "/orders")
            outbound = telemetry.start_trace("egress", [], "POST", "c.apps.local", "/pay")
            assert inbound is not None and outbound is not None
            assert isinstance(inbound.context, TraceContext) and isinstance(outbound.context, TraceContext)
            now = time.time()
            telemetry.request_done(
                RequestSummary(
                    direction="ingress",
                    start_time=now,
                    method="GET",
                    path="/orders?page=2",
                    authority="serviceb.apps.local:8080",
                    request_headers={"user-agent": "curl/8.5.0"},
                    response_code=200,
                    duration_ms=12,
                    downstream_remote_address="10.0.0.7:5555",
                    trace=inbound.context,
                )
            )
            telemetry.request_done(
                RequestSummary(
                    direction="egress",
                    start_time=now,
                    method="POST",
                    path="/pay",
                    authority="c.apps.local",
                    response_code=503,
                    duration_ms=3,
                    attempts=2,
                    trace=outbound.context,
                )
            )
            await asyncio.sleep(0.1)
        finally:
            await telemetry.stop()  # shuts the batch processor down: queued spans are exported
        return inbound.context, outbound.context

    inbound, outbound = asyncio.run(scenario())
    assert set(state.paths) == {"/v1/traces"}
    spans = {span.span_id: (span, resource) for span, resource in state.spans()}
    assert len(spans) == 2

    server, resource = spans[inbound.span_id.to_bytes(8, "big")]
    assert resource["service.name"] == "apps/serviceA"
    assert resource["appmesh.virtual_node"] == "serviceA"
    assert server.trace_id.hex() == "6650a1b25f1c2a3b4d5e6f708192a3b4"
    assert server.parent_span_id.hex() == "1111111111111111"
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.end_time_unix_nano - server.start_time_unix_nano == 12_000_000
    attrs = attributes(server)
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == "/orders" and attrs["url.query"] == "page=2"
    assert attrs["server.address"] == "serviceb.apps.local" and attrs["server.port"] == 8080
    assert attrs["http.response.status_code"] == 200
    assert attrs["client.address"] == "10.0.0.7"

    client, _ = spans[outbound.span_id.to_bytes(8, "big")]
    assert client.kind == Span.SPAN_KIND_CLIENT
    assert client.parent_span_id == b""  # a new root
    assert client.trace_id.hex() == outbound.w3c_trace_id
    assert client.status.code == client.status.STATUS_CODE_ERROR
    assert attributes(client)["error.type"] == "503"
    assert attributes(client)["http.request.resend_count"] == 1


def test_unsampled_parent_exports_nothing(
    make_settings: Callable[..., Settings], collector: tuple[str, Collector]
) -> None:
    endpoint, state = collector
    telemetry = Telemetry(make_settings(otel_endpoint=endpoint), StatsStore(), drain_interval_s=0.01)

    async def scenario() -> None:
        await telemetry.start()
        try:
            ts = telemetry.start_trace(
                "ingress", [(b"traceparent", TRACEPARENT[:-2] + b"00")], "GET", "b", "/"
            )
            assert ts is not None
            telemetry.request_done(
                RequestSummary(direction="ingress", start_time=time.time(), trace=ts.context)
            )
            await asyncio.sleep(0.1)
        finally:
            await telemetry.stop()

    asyncio.run(scenario())
    assert state.spans() == []


def test_stop_is_bounded_when_the_collector_hangs(make_settings: Callable[..., Settings]) -> None:
    """A collector that accepts but never answers must not hold stop() for the exporter's 10 s timeout."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # connections complete in the kernel backlog; nobody ever reads or answers
    endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
    telemetry = Telemetry(make_settings(otel_endpoint=endpoint), StatsStore(), drain_interval_s=0.01)

    async def scenario() -> None:
        await telemetry.start()
        ts = telemetry.start_trace("ingress", [], "GET", "b", "/")
        assert ts is not None
        telemetry.request_done(RequestSummary(direction="ingress", start_time=time.time(), trace=ts.context))
        await asyncio.sleep(0.05)
        await telemetry.stop(timeout=0.5)

    began = time.monotonic()
    try:
        asyncio.run(scenario())  # includes the loop's own shutdown, which waits for executor threads
        elapsed = time.monotonic() - began
    finally:
        hung.close()
    assert elapsed < 8.0  # bounded by stop's timeout, not by the exporter's 10 s
    assert telemetry.state.value == "STOPPED"
