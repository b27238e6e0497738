"""The running proxy's shared state: the current snapshot, clusters, stats, telemetry and lifecycle phase.

A new snapshot is applied whole (`apply`): a request captures `dataplane.snapshot` once when it starts, and
the cluster manager keeps unchanged clusters' pools across the swap. The data plane is the `ListenerHost`
of every listener; the telemetry hub is the requests' tracer and observer.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable
from typing import Protocol

from meshproxy import __version__
from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.h1 import MAX_HEADERS_COUNT, MAX_HEADERS_KB, ClientCodec, ServerCodec
from meshproxy.codec.h1_httptools import HttptoolsClientCodec, HttptoolsServerCodec
from meshproxy.codec.sds import Node
from meshproxy.config.snapshot import EgressFilter, Identity, RouteTable, Snapshot
from meshproxy.core.clock import LOOP_CLOCK, Clock, LoopClock
from meshproxy.net.connector import LOOP_CONNECTOR, Connector
from meshproxy.net.sds import SdsClient
from meshproxy.net.secrets import SecretStore
from meshproxy.net.tls_contexts import TlsContexts
from meshproxy.router.context import RequestObserver, Tracer
from meshproxy.settings import Settings
from meshproxy.telemetry.stats import StatsStore
from meshproxy.upstream.cluster import ClusterManager


class ServerState(enum.IntEnum):
    """Envoy's server.state values (admin /server_info, `server.state` gauge)."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


class Telemetry(RequestObserver, Tracer, Protocol):
    """The telemetry hub (telemetry/hub.py) as the data plane uses it: tracer and request observer."""


def _loop_clock() -> Clock:
    """The running loop's own clock; before a loop runs (the supervisor), whichever loop will run."""
    try:
        return LoopClock(asyncio.get_running_loop())
    except RuntimeError:
        return LOOP_CLOCK


def codec_factories(
    parser: str, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
) -> tuple[Callable[[], ServerCodec], Callable[[], ClientCodec]]:
    """(server codec factory, client codec factory) of an HTTP/1.1 implementation (`MESHPROXY_HTTP1_PARSER`),
    with the head limits (Settings.max_request_headers_kb / _count) bound in."""
    server: Callable[[int, int], ServerCodec]
    client: Callable[[int, int], ClientCodec]
    if parser == "h11":
        # imported only when chosen: h11 is the reference parser, and an idle worker should not carry it
        from meshproxy.codec.h1_h11 import H11ClientCodec, H11ServerCodec

        server, client = H11ServerCodec, H11ClientCodec
    else:
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
    def __init__(
        self,
        settings: Settings,
        store: StatsStore,
        telemetry: Telemetry | None = None,
        *,
        connector: Connector = LOOP_CONNECTOR,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.telemetry = telemetry
        self.clock: Clock = clock if clock is not None else _loop_clock()
        self.server_codec_factory, self.client_codec_factory = codec_factories(
            settings.http1_parser, settings.max_request_headers_kb, settings.max_request_headers_count
        )
        h2_codec.select(
            settings.http2_codec,
            settings.max_request_headers_kb * 1024,
            settings.max_request_headers_count,
        )
        # TLS: SDS secrets (fetched over APPMESH_SDS_SOCKET_PATH when it is set) and the contexts built
        # from them and from certificate files, prepared before each snapshot is applied
        self.secrets = SecretStore()
        self.sds: SdsClient | None = None
        if settings.sds_socket_path:
            identity = settings.identity
            node = Node(identity.node_id, identity.node_cluster, "meshproxy", __version__)
            self.sds = self.secrets.subscriber = SdsClient(settings.sds_socket_path, node, self.secrets)
        self.tls = TlsContexts(self.secrets)
        self._tls_watch: asyncio.Task[None] | None = None
        self.clusters = ClusterManager(
            store,
            self.client_codec_factory,
            connector,
            self.clock,
            self.tls,
            retry_budget=settings.retry_budget,
            egress_limits=settings.egress_limits,
        )
        self.snapshot: Snapshot = empty_snapshot(settings.identity)
        self.state = ServerState.PRE_INITIALIZING
        # read by every HTTP/1.1 response (Connection: close while draining): an attribute, set with the state
        self.draining = False
        self.started = time.time()
        self.applied_at = self.started  # when the current snapshot was applied (/config_dump last_updated)
        self.health_failed = False  # /healthcheck/fail

    def __repr__(self) -> str:
        return f"<Dataplane {self.state.name} version={self.snapshot.version!r} {self.clusters!r}>"

    @property
    def tracer(self) -> Tracer | None:
        return self.telemetry

    @property
    def observer(self) -> RequestObserver | None:
        return self.telemetry

    def set_state(self, state: ServerState) -> None:
        self.state = state
        self.draining = state is ServerState.DRAINING
        self.store.server.server_state = int(state)
        self.store.server.server_live = 1 if state is ServerState.LIVE else 0

    def apply(self, snapshot: Snapshot) -> None:
        """Swap in `snapshot`. Raises TlsConfigError, and changes nothing, when a certificate it names
        cannot load: the update is rejected whole and the last good snapshot keeps serving."""
        self.tls.commit(self.tls.prepare(snapshot))
        if self._tls_watch is None and self.tls.sources:
            self._tls_watch = asyncio.get_running_loop().create_task(self.tls.watch())
        self.clusters.apply(snapshot)
        self.snapshot = snapshot
        self.applied_at = time.time()
        server = self.store.server
        server.cluster_manager_cds_update_success += 1
        server.listener_manager_lds_update_success += 1

    async def close_secrets(self) -> None:
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self.sds is not None:
            await self.sds.close()
