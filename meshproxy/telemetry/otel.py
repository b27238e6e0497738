"""OpenTelemetry spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Each sampled request becomes one span whose ids are the ones `tracing.Tracer` already put in the upstream
`traceparent` (so the span is built as an SDK `ReadableSpan` and handed to a `BatchSpanProcessor`, which
batches and exports from its own thread). Attributes follow the stable HTTP semantic conventions: SERVER
spans for ingress and gateway traffic, CLIENT spans for egress; `http.request.method`, `url.path`,
`url.query`, `url.scheme`, `server.address`, `server.port`, `client.address`, `network.protocol.version`,
`user_agent.original`, `http.response.status_code`, `error.type`, and for CLIENT spans `url.full` and
`http.request.resend_count`. Status is ERROR for 5xx (and 4xx on CLIENT spans) and for requests that got no
response. The exporter endpoint is `<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces`, as the OTLP spec defines for the
signal-agnostic variable.

The SDK is imported only when export is on (it costs ~0.1 s of start-up).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from meshproxy.config.snapshot import Identity, ResourceKind
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.tracing import TraceContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

AttributeValue = str | int | bool


def traces_endpoint(base: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the traces signal path is `v1/traces` under it."""
    return base.rstrip("/") + "/v1/traces"


def _split_authority(authority: str, scheme: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if port_text.isdigit():
        return host, int(port_text)
    return host, _DEFAULT_PORTS.get(scheme)


def _client_host(address: str | None) -> str | None:
    if not address:
        return None
    if address.startswith("["):
        return address[1 : address.find("]")]
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


def span_kind_is_client(direction: str) -> bool:
    return direction == "egress"


def span_attributes(record: RequestSummary) -> dict[str, AttributeValue]:
    """The HTTP semantic-convention attributes of one request (pure, testable without the SDK)."""
    client = span_kind_is_client(record.direction)
    attrs: dict[str, AttributeValue] = {}
    method = record.method
    if method in _KNOWN_METHODS:
        attrs["http.request.method"] = method
    else:
        attrs["http.request.method"] = "_OTHER"
        attrs["http.request.method_original"] = method
    path, _, query = record.path.partition("?")
    attrs["url.path"] = path
    if query:
        attrs["url.query"] = query
    attrs["url.scheme"] = record.scheme
    authority = record.authority or record.request_headers.get("host")
    if authority:
        host, port = _split_authority(authority, record.scheme)
        attrs["server.address"] = host
        if port is not None:
            attrs["server.port"] = port
        if client:
            attrs["url.full"] = record.scheme + "://" + authority + record.path
    peer = _client_host(record.downstream_remote_address)
    if peer:
        attrs["client.address"] = peer
    protocol = record.protocol
    if protocol.startswith("HTTP/"):
        version = protocol[5:]
        attrs["network.protocol.version"] = "2" if version == "2.0" else version
    user_agent = record.request_headers.get("user-agent")
    if user_agent:
        attrs["user_agent.original"] = user_agent
    code = record.response_code
    if code:
        attrs["http.response.status_code"] = code
    if client and record.attempts > 1:
        attrs["http.request.resend_count"] = record.attempts - 1
    if _is_error(code, client):
        attrs["error.type"] = (
            str(code) if code else (record.response_flags if record.response_flags != "-" else "_OTHER")
        )
    if record.upstream_cluster:
        attrs["meshproxy.upstream_cluster"] = record.upstream_cluster
    if record.response_flags != "-":
        attrs["meshproxy.response_flags"] = record.response_flags
    return attrs


def _is_error(code: int, client: bool) -> bool:
    return code == 0 or code >= 500 or (client and code >= 400)


class OtlpSpanSink:
    """Builds SDK spans from finished requests and exports them over OTLP/HTTP (protobuf)."""

    def __init__(
        self,
        endpoint: str,
        identity: Identity,
        service_name: str,
        *,
        schedule_delay_ms: float = 1000.0,
        max_queue_size: int = 2048,
        timeout_s: float = 10.0,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        import meshproxy

        kind_key = (
            "appmesh.virtual_gateway"
            if identity.kind is ResourceKind.VIRTUAL_GATEWAY
            else "appmesh.virtual_node"
        )
        self.endpoint = traces_endpoint(endpoint)
        self._resource = Resource.create(
            {"service.name": service_name, "appmesh.mesh": identity.mesh_name, kind_key: identity.name}
        )
        self._scope = InstrumentationScope("meshproxy", getattr(meshproxy, "__version__", None))
        self._processor: BatchSpanProcessor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=self.endpoint, timeout=timeout_s),
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_ms,
        )

    def __repr__(self) -> str:
        return f"<OtlpSpanSink {self.endpoint}>"

    def build_span(self, record: RequestSummary, ctx: TraceContext) -> ReadableSpan:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        client = span_kind_is_client(record.direction)
        flags = TraceFlags(TraceFlags.SAMPLED if ctx.sampled else TraceFlags.DEFAULT)
        parent = (
            SpanContext(ctx.w3c_trace, ctx.w3c_parent, is_remote=True, trace_flags=flags)
            if ctx.w3c_parent is not None
            else None
        )
        start_ns = int(record.start_time * 1_000_000_000)
        status = (
            Status(StatusCode.ERROR) if _is_error(record.response_code, client) else Status(StatusCode.UNSET)
        )
        return ReadableSpan(
            name=record.method if record.method in _KNOWN_METHODS else "HTTP",
            context=SpanContext(ctx.w3c_trace, ctx.span_id, is_remote=False, trace_flags=flags),
            parent=parent,
            resource=self._resource,
            attributes=span_attributes(record),
            kind=SpanKind.CLIENT if client else SpanKind.SERVER,
            status=status,
            start_time=start_ns,
            end_time=start_ns + record.duration_ms * 1_000_000,
            instrumentation_scope=self._scope,
        )

    def export(self, record: RequestSummary, ctx: TraceContext) -> None:
        self._processor.on_end(self.build_span(record, ctx))

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter thread (blocking: call it from a worker thread)."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]
