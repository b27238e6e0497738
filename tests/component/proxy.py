"""The proxy assembled for the component tier: a real `Dataplane` and `HttpListener` over the memory network.

`running_proxy` builds the data plane with the fake clock and the memory connector, applies a snapshot built
here from the compiled types (egress: one virtual service routed to one backend cluster; ingress: one
listener to the local app), and gives the test a `ComponentProxy` to connect clients to. Retry policies are
made by the compiler's own `retry_policy` from App Mesh event names, so "server-error" means what it means in
a route spec. A `RecordingObserver` stands in for telemetry and keeps every `RequestSummary`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.config.compile import DEFAULT_RETRY_POLICY, retry_policy
from meshproxy.config.model import Duration
from meshproxy.config.model import RetryPolicy as ApiRetryPolicy
from meshproxy.config.snapshot import (
    DEFAULT_RETRY_BUDGET,
    Cluster,
    ConnectionPoolLimits,
    EgressFilter,
    HealthCheck,
    Identity,
    IngressListener,
    ListenerProtocol,
    OutlierDetection,
    ResourceKind,
    RetryBudget,
    RetryPolicy,
    RouteEntry,
    RouteMatch,
    RouteTable,
    Snapshot,
    StaticDiscovery,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.summary import RequestSummary
from meshproxy.dataplane import Dataplane, ServerState
from meshproxy.listeners.listener import HttpListener
from meshproxy.settings import Settings
from meshproxy.telemetry.stats import ClusterStats, StatsStore
from meshproxy.telemetry.tracing import TraceStart
from meshproxy.upstream.cluster import ClusterRuntime

from .clients import H1Client, H2Client
from .memory import DEFAULT_HIGH_WATER, Accept, Address, MemoryNetwork, MemoryTransport
from .upstreams import Answer, H1App

IDENTITY = Identity(
    node_id="mesh/apps/virtualNode/front",
    mesh="apps",
    kind=ResourceKind.VIRTUAL_NODE,
    name="front",
    node_cluster="mesh/apps/virtualNode/front",
)
SERVICE = "backend.apps.local"
CLUSTER = "cds_egress_apps_backend_http_8080"
LOCAL_CLUSTER = "cds_ingress_apps_front_http_8080"
ROUTE = "backend-router/route"
HOSTS = (("10.0.1.1", 8080), ("10.0.1.2", 8080), ("10.0.1.3", 8080))
HOST = HOSTS[0]
LOCAL_APP = ("127.0.0.1", 8080)
UNLIMITED = ConnectionPoolLimits()  # App Mesh's defaults: effectively no limit
RESET_REPLY = b"upstream connect error or disconnect/reset before headers. reset reason: "


def policy(
    max_retries: int = 2,
    *,
    http: Sequence[str] = ("server-error",),
    tcp: Sequence[str] = (),
    grpc: Sequence[str] = (),
    per_try_s: float = 0.0,
) -> RetryPolicy:
    """A route's retryPolicy as the compiler renders it (per_try_s 0: App Mesh's 'disabled')."""
    return retry_policy(
        ApiRetryPolicy(
            max_retries=max_retries,
            per_retry_timeout=Duration(int(per_try_s * 1000), "ms"),
            http_retry_events=tuple(http),
            tcp_retry_events=tuple(tcp),
            grpc_retry_events=tuple(grpc),
        )
    )


def egress_snapshot(
    *,
    hosts: Sequence[tuple[str, int]] = (HOST,),
    retry: RetryPolicy | None = DEFAULT_RETRY_POLICY,
    timeout: float | None = 15.0,
    idle: float | None = 300.0,
    protocol: ListenerProtocol = ListenerProtocol.HTTP,
    limits: ConnectionPoolLimits = UNLIMITED,
    connect_timeout: float = 1.0,
    outlier: OutlierDetection | None = None,
    health_check: HealthCheck | None = None,
) -> Snapshot:
    """`backend.apps.local` -> one route -> the backend cluster (static hosts) under DROP_ALL."""
    cluster = Cluster(
        name=CLUSTER,
        discovery=StaticDiscovery(tuple(hosts)),
        protocol=protocol,
        virtual_node="backend",
        connect_timeout=connect_timeout,
        limits=limits,
        outlier=outlier,
        health_check=health_check,
    )
    route = RouteEntry(
        name=ROUTE,
        match=RouteMatch(prefix="/"),
        targets=(WeightedCluster(CLUSTER, 1, "backend"),),
        total_weight=1,
        retry=retry,
        timeout=timeout,
        idle_timeout=idle,
        protocol=protocol,
        virtual_service=SERVICE,
    )
    vhost = VirtualHost(SERVICE, (SERVICE, f"{SERVICE}:8080"), (route,), protocol)
    table = RouteTable(
        "rds_egress_http_15001", (vhost,), MappingProxyType(dict.fromkeys(vhost.domains, vhost))
    )
    return Snapshot(
        version="component",
        identity=IDENTITY,
        egress_filter=EgressFilter.DROP_ALL,
        ingress=(),
        egress_routes=table,
        tcp_routes={},
        clusters={CLUSTER: cluster},
        http_ports=frozenset({8080}),  # the service's port (as the compiler derives it from the domains)
    )


def ingress_snapshot(
    *,
    protocol: ListenerProtocol = ListenerProtocol.HTTP,
    timeout: float | None = 15.0,
    idle: float | None = 300.0,
    limits: ConnectionPoolLimits = UNLIMITED,
) -> Snapshot:
    """One virtual-node listener on 8080 -> the local app (spec §4.2: connectionPool on the local cluster)."""
    cluster = Cluster(
        name=LOCAL_CLUSTER,
        discovery=StaticDiscovery((LOCAL_APP,)),
        protocol=protocol,
        virtual_node="front",
        limits=limits,
    )
    listener = IngressListener(LOCAL_APP[1], protocol, LOCAL_CLUSTER, timeout, idle)
    return Snapshot(
        version="component",
        identity=IDENTITY,
        egress_filter=EgressFilter.DROP_ALL,
        ingress=(listener,),
        egress_routes=RouteTable("rds_egress_http_15001", ()),
        tcp_routes={},
        clusters={LOCAL_CLUSTER: cluster},
    )


def tcp_cluster(hosts: Sequence[tuple[str, int]], name: str = "cds_ingress_m_db_tcp_7100") -> ClusterRuntime:
    """A started tcp cluster over `hosts` (real loopback ports), for a `TcpProxySession` under test."""
    config = Cluster(
        name=name,
        discovery=StaticDiscovery(tuple(hosts)),
        protocol=ListenerProtocol.TCP,
        virtual_node="db",
        connect_timeout=1.0,
    )
    cluster = ClusterRuntime(config, ClusterStats(), HttptoolsClientCodec)
    cluster.start()
    return cluster


def serve_h1(
    net: MemoryNetwork, *answers: Answer, address: Address = HOST, paths: Mapping[str, Answer] | None = None
) -> H1App:
    """An HTTP/1.1 upstream at `address` answering from `answers` (tests/component/upstreams.py), and
    requests for one of `paths` with that path's answer."""
    app = H1App(*answers, paths=paths)
    net.connector.route(address, Accept(app.server))
    return app


def patterned(size: int) -> bytes:
    """A body whose bytes differ from their neighbours, so a lost, repeated or reordered chunk shows."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@dataclass(slots=True)
class RecordingObserver:
    """The telemetry hub's place: keeps each `RequestSummary`; no tracing."""

    summaries: list[RequestSummary]

    @property
    def wants_summary(self) -> bool:
        return True

    def request_done(self, summary: RequestSummary) -> None:
        self.summaries.append(summary)

    def start_trace(
        self, direction: str, headers: Sequence[tuple[bytes, bytes]], method: str, authority: str, path: str
    ) -> TraceStart | None:
        return None

    @property
    def last(self) -> RequestSummary:
        assert self.summaries, "no request finished"
        return self.summaries[-1]


class ComponentProxy:
    """A data plane and one HTTP listener on the memory network."""

    def __init__(self, net: MemoryNetwork, dataplane: Dataplane, listener: HttpListener) -> None:
        self.net = net
        self.dataplane = dataplane
        self.listener = listener
        self.observer = RecordingObserver([])

    def __repr__(self) -> str:
        return f"<ComponentProxy {self.listener!r}>"

    def connect(
        self,
        client: asyncio.Protocol,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        original_destination: Address | None = None,
    ) -> MemoryTransport:
        """Connect a client to the listener (as if redirected from `original_destination`); returns the
        proxy's end of the connection."""
        _, proxy_end = self.net.connect(
            client,
            self.listener.accept(),
            server_high_water=high_water,
            original_destination=original_destination,
        )
        return proxy_end

    def h1(self, *, high_water: int = DEFAULT_HIGH_WATER) -> H1Client:
        client = H1Client()
        self.connect(client, high_water=high_water)
        return client

    async def get(
        self, path: str = "/", *, host: str = SERVICE, advance: float = 1.0, headers: str = ""
    ) -> H1Client:
        """A new client sending one GET (`headers`: CRLF-terminated lines); then the clock moves `advance`
        seconds (the timers due by then fire: back-offs, per-try timeouts). Returns the client, to read the
        response from."""
        client = self.h1()
        client.get(path, host, headers)
        await self.net.advance(advance)
        return client

    def h2(self, window: int | None = None) -> H2Client:
        client = H2Client(window)
        self.connect(client)
        return client

    def cluster_stats(self, name: str = CLUSTER) -> ClusterStats:
        return self.dataplane.store.cluster(name)

    @property
    def summaries(self) -> list[RequestSummary]:
        return self.observer.summaries


@asynccontextmanager
async def running_proxy(
    net: MemoryNetwork,
    snapshot: Snapshot,
    *,
    parser: str = "httptools",
    h2_codec: str = "lean",
    direction: ListenerDirection = ListenerDirection.EGRESS,
    retry_budget: RetryBudget | None = DEFAULT_RETRY_BUDGET,
) -> AsyncIterator[ComponentProxy]:
    settings = Settings(
        identity=IDENTITY, http1_parser=parser, http2_codec=h2_codec, retry_budget=retry_budget
    )
    observer = RecordingObserver([])
    dataplane = Dataplane(settings, StatsStore(), observer, connector=net.connector, clock=net.clock)
    dataplane.apply(snapshot)
    dataplane.set_state(ServerState.LIVE)
    port = 15000 if direction is ListenerDirection.INGRESS else 15001
    listener = HttpListener(direction, "10.0.0.1", port, dataplane, dataplane.server_codec_factory)
    proxy = ComponentProxy(net, dataplane, listener)
    proxy.observer = observer
    try:
        yield proxy
    finally:
        dataplane.clusters.shutdown()
        await net.settle()
