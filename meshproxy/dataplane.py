"""The running proxy's shared state: the current snapshot, clusters, stats, telemetry and lifecycle phase.

A new snapshot is applied whole (`apply`): listeners read `dataplane.snapshot` once per request, and the
cluster manager keeps unchanged clusters' pools across the swap.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from meshproxy.config.snapshot import EgressFilter, Identity, RouteTable, Snapshot
from meshproxy.http import h2_codec
from meshproxy.http.codec import MAX_HEADERS_COUNT, MAX_HEADERS_KB, ClientCodec, ServerCodec
from meshproxy.settings import Settings
from meshproxy.telemetry.record import RequestRecord
from meshproxy.telemetry.stats import StatsStore, TargetStats
from meshproxy.telemetry.tracing import TraceStart
from meshproxy.upstream.cluster import ClusterManager

if TYPE_CHECKING:
    from meshproxy.listeners.listener import ClientConnection, HttpListener
    from meshproxy.router.forwarder import UpstreamRequest


class ServerState(enum.IntEnum):
    """Envoy's server.state values (admin /server_info, `server.state` gauge)."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


class RequestSink(Protocol):
    """The telemetry side the data plane reports to (meshproxy.telemetry.hub.Telemetry)."""

    record_needed: bool

    def request_done(self, record: RequestRecord) -> None: ...

    def start_trace(
        self, direction: str, headers: Sequence[tuple[bytes, bytes]], method: str, authority: str, path: str
    ) -> TraceStart | None: ...

    def target_stats(self, virtual_service: str, virtual_node: str) -> TargetStats | None: ...


def codec_factories(
    parser: str, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
) -> tuple[Callable[[], ServerCodec], Callable[[], ClientCodec]]:
    """(server codec factory, client codec factory) of an HTTP/1.1 implementation, with the head limits
    (Settings.max_request_headers_kb / _count) bound in."""
    server: Callable[[int, int], ServerCodec]
    client: Callable[[int, int], ClientCodec]
    if parser == "h11":
        from meshproxy.http.h1_h11 import H11ClientCodec, H11ServerCodec

        server, client = H11ServerCodec, H11ClientCodec
    else:
        from meshproxy.http.h1_httptools import HttptoolsClientCodec, HttptoolsServerCodec

        server, client = HttptoolsServerCodec, HttptoolsClientCodec
    return (
        functools.partial(server, max_headers_kb, max_headers_count),
        functools.partial(client, max_headers_kb, max_headers_count),
    )


def empty_snapshot(identity: Identity) -> Snapshot:
    return Snapshot(
        version="",
        identity=identity,
        egress_filter=EgressFilter.DROP_ALL,
        ingress=(),
        egress_routes=RouteTable(name="", virtual_hosts=()),
        tcp_routes={},
        clusters={},
    )


class Dataplane:
    def __init__(self, settings: Settings, store: StatsStore, telemetry: RequestSink | None = None) -> None:
        self.settings = settings
        self.store = store
        self.telemetry = telemetry
        self.server_codec_factory, self.client_codec_factory = codec_factories(
            settings.http1_parser, settings.max_request_headers_kb, settings.max_request_headers_count
        )
        h2_codec.select(
            settings.http2_codec,
            settings.max_request_headers_kb * 1024,
            settings.max_request_headers_count,
        )
        self.clusters = ClusterManager(store, self.client_codec_factory)
        self.snapshot: Snapshot = empty_snapshot(settings.identity)
        self.state = ServerState.PRE_INITIALIZING
        self.started = time.time()
        self.applied_at = self.started  # when the current snapshot was applied (/config_dump last_updated)
        self.health_failed = False  # /healthcheck/fail

    def __repr__(self) -> str:
        return f"<Dataplane {self.state.name} version={self.snapshot.version!r} {self.clusters!r}>"

    @property
    def draining(self) -> bool:
        return self.state is ServerState.DRAINING

    def set_state(self, state: ServerState) -> None:
        self.state = state
        self.store.server.server_state = int(state)
        self.store.server.server_live = 1 if state is ServerState.LIVE else 0

    def apply(self, snapshot: Snapshot) -> None:
        self.clusters.apply(snapshot)
        self.snapshot = snapshot
        self.applied_at = time.time()
        server = self.store.server
        server.cluster_manager_cds_update_success += 1
        server.listener_manager_lds_update_success += 1

    def request_done(
        self, listener: HttpListener, connection: ClientConnection, stream: UpstreamRequest
    ) -> None:
        telemetry = self.telemetry
        if telemetry is None:
            return
        if stream.target_node:
            target = telemetry.target_stats(stream.virtual_service, stream.target_node)
            if target is not None:  # App Mesh metrics extension (APPMESH_METRIC_EXTENSION_VERSION=1)
                target.request_count_per_target += 1
                target.count_response(stream.response_status)
                target.target_processed_bytes += stream.bytes_received + stream.bytes_sent
                target.target_response_time.record((time.monotonic() - stream.start) * 1000.0)
        if telemetry.record_needed:
            telemetry.request_done(build_record(listener, connection, stream))


def build_record(
    listener: HttpListener, connection: ClientConnection, stream: UpstreamRequest
) -> RequestRecord:
    head = stream.head
    now = time.monotonic()
    request_headers: dict[str, str] = {}
    for name, value in head.headers:
        request_headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    upstream = stream.upstream_head
    if upstream is not None:
        for name, value in upstream.headers:
            if name == b"x-request-id":
                request_headers.setdefault("x-request-id", value.decode("latin-1"))
    host = stream.host
    return RequestRecord(
        direction=listener.stat_prefix,
        start_time=time.time() - (now - stream.start),
        method=head.method,
        path=stream.path or head.target,
        authority=stream.authority or None,
        protocol="HTTP/" + head.http_version,
        request_headers=request_headers,
        response_code=stream.response_status,
        response_flags=",".join(stream.flags) if stream.flags else "-",
        bytes_received=stream.bytes_received,
        bytes_sent=stream.bytes_sent,
        duration_ms=int((now - stream.start) * 1000),
        upstream_service_time_ms=stream.service_time_ms if stream.service_time_ms >= 0 else None,
        upstream_host=host.label if host is not None else None,
        upstream_cluster=stream.cluster.config.name if stream.cluster is not None else None,
        downstream_remote_address=connection.peer,
        downstream_local_address=f"{listener.address}:{listener.port}",
        route_name=stream.route_name or None,
        virtual_service=stream.virtual_service or None,
        target_virtual_node=stream.target_node or None,
        attempts=stream.retries + 1,
        trace=stream.trace,
    )
