"""A finished request as its observer sees it: the frozen `RequestSummary` the router reports.

Built only when the observer wants one (an access log, a sampled trace, the metrics extension); one pass over
the request headers, no I/O.
"""

from __future__ import annotations

import time
from typing import Protocol

from meshproxy.core.events import RequestHead
from meshproxy.core.summary import RequestSummary
from meshproxy.router.decide import RouteDecision
from meshproxy.router.match import header_value
from meshproxy.telemetry.tracing import TraceStart
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.host import Host


class Summarized(Protocol):
    """What a summary is made of (a `RouterRequest`)."""

    head: RequestHead
    upstream_head: RequestHead | None
    decision: RouteDecision
    cluster: ClusterRuntime | None
    tried: tuple[Host, ...]
    authority: str
    flags: list[str]
    response_status: int
    service_time_ms: int
    bytes_received: int
    bytes_sent: int
    retries: int
    start: float
    trace: TraceStart | None


def summarize(
    request: Summarized, now: float, direction: str, peer: str, local_address: str
) -> RequestSummary:
    """`now` and the request's `start` are on the router's monotonic clock."""
    head = request.head
    request_headers: dict[str, str] = {}
    for name, value in head.headers:
        request_headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    upstream = request.upstream_head
    if upstream is not None and "x-request-id" not in request_headers:
        request_id = header_value(upstream.headers, "x-request-id")
        if request_id is not None:
            request_headers["x-request-id"] = request_id  # the one the proxy generated
    decision = request.decision
    host = request.tried[-1] if request.tried else None
    cluster = request.cluster
    service_time = request.service_time_ms
    return RequestSummary(
        direction=direction,
        start_time=time.time() - (now - request.start),
        method=head.method,
        path=decision.path or head.target,
        authority=request.authority or None,
        protocol="HTTP/" + head.http_version,
        request_headers=request_headers,
        response_code=request.response_status,
        response_flags=",".join(request.flags) if request.flags else "-",
        bytes_received=request.bytes_received,
        bytes_sent=request.bytes_sent,
        duration_ms=int((now - request.start) * 1000),
        upstream_service_time_ms=service_time if service_time >= 0 else None,
        upstream_host=host.label if host is not None else None,
        upstream_cluster=cluster.config.name if cluster is not None else None,
        downstream_remote_address=peer,
        downstream_local_address=local_address,
        route_name=decision.route_name or None,
        virtual_service=decision.virtual_service or None,
        target_virtual_node=decision.target_node or None,
        attempts=request.retries + 1,
        trace=request.trace,
    )
