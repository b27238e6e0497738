"""What the router reports when a request ends: one frozen `RequestSummary` per request.

The router builds it only when an observer wants it (access log, tracing, the metrics extension; see
router/context.py `RequestObserver`); the stats store is updated directly with integers on the request path.
Sinks take summaries off the request path through bounded queues (drop and count when full).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, eq=False)
class RequestSummary:
    """One downstream request, as Envoy's access-log operators and tracers see it. Times are seconds."""

    direction: str  # "ingress" | "egress" | "gateway"
    start_time: float  # epoch seconds (START_TIME)
    method: str = "-"
    path: str = "-"  # as sent upstream
    original_path: str | None = None  # X-ENVOY-ORIGINAL-PATH when a rewrite happened
    authority: str | None = None
    scheme: str = "http"
    protocol: str = "HTTP/1.1"
    request_headers: dict[str, str] = field(default_factory=dict)  # lower-case names, first value wins
    response_headers: dict[str, str] = field(default_factory=dict)
    response_trailers: dict[str, str] = field(default_factory=dict)
    response_code: int = 0  # 0 = no response sent
    response_flags: str = "-"  # comma-joined Envoy flags, "-" when none
    bytes_received: int = 0  # request body bytes
    bytes_sent: int = 0  # response body bytes
    duration_ms: int = 0
    upstream_service_time_ms: int | None = None
    upstream_host: str | None = None  # "ip:port"
    upstream_cluster: str | None = None
    downstream_remote_address: str | None = None  # "ip:port"
    downstream_local_address: str | None = None
    route_name: str | None = None
    virtual_service: str | None = None
    target_virtual_node: str | None = None
    attempts: int = 1
    local_reply_body: str | None = None
    trace: object | None = None  # the tracer's per-request context, if any
