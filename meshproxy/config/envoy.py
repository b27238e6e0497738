"""A compiled `Snapshot` as Envoy v3 configuration: the listeners, route configurations and clusters App
Mesh's Envoy would run for the same node or gateway.

Two users: `/config_dump` (admin/config_dump.py wraps these resources into Envoy's
`envoy.admin.v3.*ConfigDump` messages, so tools written for App Mesh's Envoy read meshproxy's), and the
bench (bench/envoy_config.py), which runs real Envoy on the very routes meshproxy compiled.

The model is small and Envoy-shaped: `EnvoyRoute`, `EnvoyVirtualHost`, `EnvoyCluster` and `EnvoyListener`
(with HTTP and TCP filter chains). `*_from_snapshot` fill it from compiled values; `render_*` turn it into the
protobuf-JSON dicts Envoy reads (field names as in the .proto, default values left out). Everything here is
pure: no I/O, no clock.

How meshproxy's behaviour maps onto Envoy's (spec §2.4, §4, [DUMP]):

- virtual node ingress: `lds_ingress_<addr>_<port>` with the original-destination listener filter; one filter
  chain per virtual-node listener, keyed on the original destination port when there are several; an HTTP
  chain is a connection manager with RDS `rds_ingress_<protocol>_<port>` (one route to the local app's
  cluster), a TCP chain a `tcp_proxy`; TLS termination is a `DownstreamTlsContext` on the chain
  (PERMISSIVE adds a plaintext chain, told apart by the TLS inspector);
- virtual node egress: `lds_egress_<addr>_<port>`: a TCP chain per `tcpRoute` port, TLS to `*.amazonaws.com`
  passed through by SNI, HTTP (found by the HTTP inspector) routed by `rds_egress_http_<port>`, and under
  ALLOW_ALL everything else passed through to the original destination (an `ORIGINAL_DST` cluster, named
  like meshproxy's passthrough stats: `cds_egress_<mesh>_passthrough`);
- virtual gateway: one listener per gateway listener with RDS `rds_gateway_<protocol>_<port>`; its routes
  send to the self-redirect cluster, and the egress listener on the egress port routes the target virtual
  services, as App Mesh rendered gateways (meshproxy takes that second hop in-process);
- clusters: static (the local app, Cloud Map endpoints found so far), `LOGICAL_DNS` / `STRICT_DNS` (DNS
  LOADBALANCER / ENDPOINTS), with App Mesh's circuit breakers, outlier detection and health checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.config.snapshot import (
        AccessLogConfig,
        CertificateSource,
        Cluster,
        HealthCheck,
        OutlierDetection,
        PeerValidation,
        RetryPolicy,
        RouteEntry,
        RouteTable,
        Snapshot,
        TlsOrigination,
        TlsTermination,
        ValueMatch,
    )


class EnvoyConfigError(Exception):
    """The input cannot be expressed as Envoy configuration (e.g. a route without targets)."""


PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XRAY_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.XRayConfig"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
HTTP_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
# The agent's static cluster for SDS on APPMESH_SDS_SOCKET_PATH (spec §1.8, [SCA-boot])
SDS_CLUSTER = "static_cluster_sds_unix_socket"
# HTTP listeners offer both protocols over TLS; the connection manager (codec AUTO) serves either
HTTP_ALPN = ("h2", "http/1.1")
DOG_STATSD_TYPE = "type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink"
XRAY_ORIGIN = "AWS::AppMesh::Proxy"
UNLIMITED = 2147483647  # App Mesh's default circuit-breaker thresholds (spec §4.5, [UG-defaults])
# meshproxy's own bounds where App Mesh set none: an unrouted HTTP request passed through
# (router/forwarder.py)
# and an idle passed-through TCP connection (listeners/dispatch.py).
PASSTHROUGH_TIMEOUT_S = 15.0
PASSTHROUGH_TCP_IDLE_S = 3600.0
AWS_API_SERVER_NAMES = ("*.amazonaws.com",)  # TLS to AWS APIs is passed through by SNI (spec §2.4)

# gRPC status names App Mesh accepts in grpcRetryEvents, by numeric code (Envoy's `retry_on` names).
GRPC_RETRY_ON = {
    1: "cancelled",
    4: "deadline-exceeded",
    8: "resource-exhausted",
    13: "internal",
    14: "unavailable",
}

# App Mesh always adds these tag regexes for its ARNs
# (spec §5.1, [SCA-boot] appendPortProtocolStatPrefixTagRegex).
APPMESH_TAG_REGEXES = (
    ("appmesh.listener_protocol", r".*?\.ingress\.((\w+?)\.)[0-9]+?\.(.+?)$"),
    ("appmesh.listener_port", r".*?\.ingress\.\w+?\.(([0-9]+?)\.)(.+?)$"),
    ("envoy_rds_route_config", r".*?\.ingress\.\w+?\.[0-9]+?\.rds\.((.*?)\.)(.+?)$"),
)

# The agent's static runtime layer (spec §1.9). Its reloadable_features guards are left out: Envoy 1.40 has
# removed them and reports their use as an envoy_bug.
APPMESH_STATIC_RUNTIME = {
    "envoy.features.enable_all_deprecated_features": True,
    "re2.max_program_size.error_level": 1000,
}


# ------------------------------------------------------------------------------------------------ model


@dataclass(frozen=True, slots=True)
class EnvoyRetryPolicy:
    """A route's retry policy as Envoy sees it (`retry_on` names, status list, attempts)."""

    num_retries: int
    retry_on: tuple[str, ...]
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout: float | None = None  # seconds; None = bounded by the route timeout only
    previous_hosts: bool = True  # [DUMP]: App Mesh retries avoid hosts already tried
    host_selection_retry_max_attempts: int = 5


# App Mesh's default retry policy (spec §4.5, [UG-defaults]): 2 retries on 503, connect-failure,
# refused-stream and reset; the per-retry timeout is not documented, so none is set.
APPMESH_DEFAULT_RETRY = EnvoyRetryPolicy(
    num_retries=2,
    retry_on=("connect-failure", "refused-stream", "reset", "retriable-status-codes"),
    retriable_status_codes=(503,),
)
# ... and on gRPC routes also the UNAVAILABLE status (Envoy's `unavailable`).
APPMESH_DEFAULT_GRPC_RETRY = EnvoyRetryPolicy(
    num_retries=2,
    retry_on=(*APPMESH_DEFAULT_RETRY.retry_on, GRPC_RETRY_ON[14]),
    retriable_status_codes=(503,),
)


@dataclass(frozen=True, slots=True)
class EnvoyTelemetry:
    """Access log and X-Ray tracing as App Mesh renders them for `ENABLE_ENVOY_XRAY_TRACING=1` and a virtual
    node's `logging.accessLog.file` (spec §5.4, §5.5). `sampling_rules` is the manifest file the agent
    writes when XRAY_SAMPLING_RATE is not 0.05; the daemon is `xray_address`:`xray_port` (UDP)."""

    mesh_name: str
    virtual_node_name: str
    xray_segment_name: str
    access_log_path: str | None = None
    xray_port: int | None = None
    xray_address: str = "127.0.0.1"
    sampling_rules: str | None = None


def sampling_rules_manifest(rate: float) -> dict[str, Any]:
    """The manifest the App Mesh agent writes for XRAY_SAMPLING_RATE (spec §1.7): fixed_target 1, `rate`."""
    if not 0 <= rate <= 1:
        raise EnvoyConfigError(f"sampling rate {rate} outside 0..1")
    return {"version": 2, "default": {"fixed_target": 1, "rate": round(rate, 2)}, "rules": []}


@dataclass(frozen=True, slots=True)
class EnvoyHeaderMatch:
    """One header (or query parameter) condition; `kind` is exact/prefix/suffix/regex/range/present."""

    name: str
    kind: str
    value: str = ""
    range_start: int = 0
    range_end: int = 0
    invert: bool = False


@dataclass(frozen=True, slots=True)
class EnvoyWeightedCluster:
    cluster: str
    weight: int


@dataclass(frozen=True, slots=True)
class EnvoyRoute:
    """One route: a path condition (prefix, exact path or RE2 regex), extra matchers, and the action."""

    name: str
    targets: tuple[EnvoyWeightedCluster, ...]
    prefix: str | None = "/"
    path: str | None = None
    path_regex: str | None = None
    headers: tuple[EnvoyHeaderMatch, ...] = ()
    query: tuple[EnvoyHeaderMatch, ...] = ()
    timeout: float | None = 15.0  # seconds; None = disabled (Envoy "0s")
    idle_timeout: float | None = None  # seconds; None = Envoy's stream idle default
    retry: EnvoyRetryPolicy | None = APPMESH_DEFAULT_RETRY
    prefix_rewrite: str | None = None  # gateway routes (spec §4.7)
    path_rewrite: str | None = None  # the whole path, for exact / regex matches
    host_rewrite: str | None = None


@dataclass(frozen=True, slots=True)
class EnvoyVirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[EnvoyRoute, ...]


@dataclass(frozen=True, slots=True)
class EnvoyRouteConfig:
    name: str
    virtual_hosts: tuple[EnvoyVirtualHost, ...]


@dataclass(frozen=True, slots=True)
class EnvoyCluster:
    """An upstream cluster. `discovery` is STATIC, LOGICAL_DNS, STRICT_DNS or ORIGINAL_DST."""

    name: str
    endpoints: tuple[tuple[str, int], ...]
    discovery: str = "LOGICAL_DNS"
    connect_timeout: float = 1.0
    max_connections: int = UNLIMITED
    max_pending_requests: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED
    http2: bool = False  # an http2/grpc listener on the target node: Envoy speaks HTTP/2 (h2c) to it
    outlier: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    tls: TlsOrigination | None = None


@dataclass(frozen=True, slots=True)
class EnvoyHttpChain:
    """A filter chain running an HTTP connection manager over RDS route configuration `route_config`."""

    stat_prefix: str
    route_config: str
    destination_port: int | None = None
    application_protocols: tuple[str, ...] = ()  # set by the HTTP inspector (egress: HTTP among other bytes)
    tls: TlsTermination | None = None
    plaintext_only: bool = False  # PERMISSIVE's second chain: matched when the TLS inspector saw no TLS
    http2: bool = False  # an http2 / grpc listener: the connection manager speaks HTTP/2 downstream


@dataclass(frozen=True, slots=True)
class EnvoyTcpChain:
    """A filter chain running `tcp_proxy` to weighted clusters."""

    stat_prefix: str
    targets: tuple[EnvoyWeightedCluster, ...]
    destination_port: int | None = None
    server_names: tuple[str, ...] = ()  # SNI, with the TLS inspector
    idle_timeout: float | None = None
    tls: TlsTermination | None = None
    plaintext_only: bool = False


EnvoyChain = EnvoyHttpChain | EnvoyTcpChain


@dataclass(frozen=True, slots=True)
class EnvoyListener:
    name: str
    address: str
    port: int
    direction: str  # INBOUND | OUTBOUND
    chains: tuple[EnvoyChain, ...]
    default_chain: EnvoyTcpChain | None = None
    original_dst: bool = True  # redirected by iptables: read SO_ORIGINAL_DST (spec §2.4)


@dataclass(frozen=True, slots=True)
class EnvoyResources:
    """Everything meshproxy runs for one snapshot, as Envoy resources."""

    listeners: tuple[EnvoyListener, ...]
    route_configs: tuple[EnvoyRouteConfig, ...]
    clusters: tuple[EnvoyCluster, ...]


@dataclass(frozen=True, slots=True)
class ProxyAddresses:
    """Where this proxy listens (settings), which the snapshot does not know."""

    listen_address: str = "0.0.0.0"
    ingress_port: int = 15000
    egress_port: int = 15001


@dataclass(frozen=True, slots=True)
class EgressBootstrap:
    """An Envoy with one egress HTTP listener and its clusters (what the bench runs against meshproxy)."""

    node_id: str
    admin_port: int
    egress_port: int
    virtual_hosts: tuple[EnvoyVirtualHost, ...]
    clusters: tuple[EnvoyCluster, ...]
    listen_address: str = "127.0.0.1"
    node_cluster: str = ""  # empty = node_id (spec §1.2)
    telemetry: EnvoyTelemetry | None = None

    @property
    def route_config_name(self) -> str:
        return f"rds_egress_http_{self.egress_port}"

    @property
    def listener_name(self) -> str:
        return f"lds_egress_{self.listen_address}_{self.egress_port}"


@dataclass(frozen=True, slots=True)
class TcpBootstrap:
    """An Envoy with one ingress tcp_proxy listener (a virtual node's tcp listener) to its local app."""

    node_id: str
    admin_port: int
    ingress_port: int
    cluster: EnvoyCluster
    idle_timeout: float | None = 300.0  # seconds; None = disabled
    listen_address: str = "127.0.0.1"
    node_cluster: str = ""

    @property
    def listener_name(self) -> str:
        return f"lds_ingress_{self.listen_address}_{self.ingress_port}"


# ------------------------------------------------------------------------------------------ from a snapshot


def retry_from_snapshot(policy: RetryPolicy, *, grpc: bool = True) -> EnvoyRetryPolicy:
    """App Mesh retry events as Envoy `retry_on` names (spec §4.5 'Observed Envoy rendering').

    gRPC status events only mean something on gRPC routes (App Mesh accepts grpcRetryEvents only there);
    `grpc=False` leaves them out, e.g. the default policy's UNAVAILABLE on an HTTP route.
    """
    retry_on: list[str] = []
    if policy.retry_on_connect_failure:
        retry_on.append("connect-failure")
    if policy.retry_on_refused_stream:
        retry_on.append("refused-stream")
    if policy.retry_on_reset:
        retry_on.append("reset")
    if policy.retriable_statuses:
        retry_on.append("retriable-status-codes")
    for code in sorted(policy.grpc_statuses) if grpc else ():
        name = GRPC_RETRY_ON.get(code)
        if name is None:
            raise EnvoyConfigError(f"gRPC status {code} has no Envoy retry_on name")
        retry_on.append(name)
    return EnvoyRetryPolicy(
        num_retries=policy.max_retries,
        retry_on=tuple(retry_on),
        retriable_status_codes=tuple(sorted(policy.retriable_statuses)),
        per_try_timeout=policy.per_try_timeout,
    )


def _match_from_snapshot(match: ValueMatch) -> EnvoyHeaderMatch:
    pattern = match.pattern.pattern if match.pattern is not None else ""
    value = pattern if match.kind.value == "regex" else match.value
    return EnvoyHeaderMatch(
        name=match.name,
        kind=match.kind.value,
        value=value,
        range_start=match.range_start,
        range_end=match.range_end,
        invert=match.invert,
    )


def _authority_match(host: str, *, suffix: bool) -> EnvoyHeaderMatch:
    """A gateway route's hostname match on `:authority`: any port, any case (meshproxy compares the host
    without its port, lower-cased)."""
    start = ".*" if suffix else ""
    return EnvoyHeaderMatch(":authority", "regex", f"(?i){start}{re.escape(host)}(:[0-9]+)?")


def route_from_snapshot(entry: RouteEntry, *, match_port: bool = True) -> EnvoyRoute:
    """One compiled HTTP, HTTP/2, gRPC or gateway route as an Envoy route.

    A gRPC service/method match becomes the `/<service>/<method>` path (or `/<service>/` prefix); a route's
    `port` match (routers with several listeners) becomes a `:authority` port suffix, which is what a Host
    header carries (meshproxy also uses the original destination port of a redirected connection). A
    gateway route's port only picks its listener's route table: `match_port=False` leaves it out.
    """
    m = entry.match
    headers = tuple(_match_from_snapshot(h) for h in m.headers)
    if m.method is not None:
        headers = (EnvoyHeaderMatch(":method", "exact", m.method), *headers)
    if m.scheme is not None:
        headers = (EnvoyHeaderMatch(":scheme", "exact", m.scheme), *headers)
    if m.hostname_exact is not None:
        headers = (_authority_match(m.hostname_exact, suffix=False), *headers)
    if m.hostname_suffix is not None:
        headers = (_authority_match(m.hostname_suffix, suffix=True), *headers)
    if m.port is not None and match_port:
        headers = (EnvoyHeaderMatch(":authority", "suffix", f":{m.port}"), *headers)
    prefix, path = m.prefix, m.path_exact
    if m.grpc_service is not None:
        if m.grpc_method is not None:
            path = f"/{m.grpc_service}/{m.grpc_method}"
        else:
            prefix = f"/{m.grpc_service}/"
    if prefix is None and path is None and m.path_regex is None:
        prefix = "/"
    rewrite = entry.rewrite
    return EnvoyRoute(
        name=entry.name,
        targets=tuple(EnvoyWeightedCluster(t.cluster, t.weight) for t in entry.targets),
        prefix=prefix,
        path=path,
        path_regex=m.path_regex.pattern if m.path_regex is not None else None,
        headers=headers,
        query=tuple(_match_from_snapshot(q) for q in m.query),
        timeout=entry.timeout,
        idle_timeout=entry.idle_timeout,
        retry=(
            retry_from_snapshot(entry.retry, grpc=entry.protocol.value == "grpc")
            if entry.retry is not None
            else None
        ),
        prefix_rewrite=rewrite.prefix if rewrite is not None and m.prefix is not None else None,
        path_rewrite=rewrite.exact if rewrite is not None else None,
        host_rewrite=rewrite.hostname if rewrite is not None else None,
    )


def cluster_from_snapshot(
    cluster: Cluster, endpoints: Sequence[tuple[str, int]] | None = None
) -> EnvoyCluster:
    """A compiled cluster as an Envoy cluster: DNS -> LOGICAL_DNS / STRICT_DNS, static -> STATIC.

    A Cloud Map cluster is a STATIC cluster of `endpoints` (the instances discovered so far; App Mesh
    delivered them over EDS, meshproxy discovers them itself); without them it raises EnvoyConfigError.
    """
    from meshproxy.config.snapshot import DnsDiscovery, StaticDiscovery

    discovery = cluster.discovery
    if isinstance(discovery, DnsDiscovery):
        kind = "STRICT_DNS" if discovery.response_type == "ENDPOINTS" else "LOGICAL_DNS"
        found: tuple[tuple[str, int], ...] = ((discovery.hostname, discovery.port),)
    elif isinstance(discovery, StaticDiscovery):
        kind, found = "STATIC", discovery.addresses
    elif endpoints is not None:
        kind, found = "STATIC", tuple(endpoints)
    else:
        raise EnvoyConfigError(f"cluster {cluster.name}: Cloud Map endpoints are only known at run time")
    return EnvoyCluster(
        name=cluster.name,
        endpoints=found,
        discovery=kind,
        connect_timeout=cluster.connect_timeout,
        max_connections=cluster.limits.max_connections,
        max_pending_requests=cluster.limits.max_pending_requests,
        max_requests=cluster.limits.max_requests,
        http2=cluster.protocol.value in ("http2", "grpc"),
        outlier=cluster.outlier,
        health_check=cluster.health_check,
        tls=cluster.tls,
    )


def virtual_hosts_from_table(table: RouteTable, *, match_port: bool = True) -> tuple[EnvoyVirtualHost, ...]:
    return tuple(
        EnvoyVirtualHost(
            name=vh.name,
            domains=vh.domains,
            routes=tuple(route_from_snapshot(r, match_port=match_port) for r in vh.routes),
        )
        for vh in table.virtual_hosts
    )


def passthrough_cluster_name(mesh_name: str) -> str:
    """meshproxy's passthrough cluster (ALLOW_ALL, AWS APIs by SNI): its stats carry this name."""
    return f"cds_egress_{mesh_name}_passthrough"


def resources_from_snapshot(
    snapshot: Snapshot,
    addresses: ProxyAddresses,
    endpoints: Callable[[str], Sequence[tuple[str, int]] | None] = lambda name: None,
) -> EnvoyResources:
    """The listeners, route configurations and clusters of `snapshot` (see the module docstring).

    `endpoints(cluster_name)` gives the discovered hosts of a Cloud Map cluster (None: not known, the cluster
    is rendered with none).
    """
    from meshproxy.config.snapshot import EgressFilter, ListenerProtocol, ResourceKind

    address = addresses.listen_address
    mesh_name = snapshot.identity.mesh_name
    listeners: list[EnvoyListener] = []
    route_configs: list[EnvoyRouteConfig] = []
    clusters = [
        cluster_from_snapshot(cluster, endpoints(cluster.name) or ())
        for _, cluster in sorted(snapshot.clusters.items())
    ]

    if snapshot.identity.kind is ResourceKind.VIRTUAL_GATEWAY:
        for gateway in snapshot.gateway:
            route_configs.append(
                EnvoyRouteConfig(
                    gateway.routes.name, virtual_hosts_from_table(gateway.routes, match_port=False)
                )
            )
            http2 = gateway.protocol is not ListenerProtocol.HTTP
            chains = _terminating(EnvoyHttpChain("ingress", gateway.routes.name, http2=http2), gateway.tls)
            listeners.append(
                EnvoyListener(
                    f"lds_ingress_{address}_{gateway.port}",
                    address,
                    gateway.port,
                    "INBOUND",
                    chains,
                    original_dst=False,
                )
            )
    elif snapshot.ingress:
        several = len(snapshot.ingress) > 1
        ingress_chains: list[EnvoyChain] = []
        for listener in snapshot.ingress:
            port = listener.port if several else None
            if listener.protocol is ListenerProtocol.TCP:
                tcp = EnvoyTcpChain(
                    "ingress",
                    (EnvoyWeightedCluster(listener.cluster, 1),),
                    port,
                    idle_timeout=listener.idle_timeout,
                )
                ingress_chains.extend(_terminating(tcp, listener.tls))
                continue
            name = f"rds_ingress_{listener.protocol}_{listener.port}"
            local = EnvoyRoute(
                name=name,
                targets=(EnvoyWeightedCluster(listener.cluster, 1),),
                timeout=listener.timeout,
                idle_timeout=listener.idle_timeout,
                retry=None,
            )
            route_configs.append(EnvoyRouteConfig(name, (EnvoyVirtualHost(name, ("*",), (local,)),)))
            prefix = f"ingress.{listener.protocol}.{listener.port}" if several else "ingress"
            http = EnvoyHttpChain(prefix, name, port, http2=listener.protocol is not ListenerProtocol.HTTP)
            ingress_chains.extend(_terminating(http, listener.tls))
        listeners.append(
            EnvoyListener(
                f"lds_ingress_{address}_{addresses.ingress_port}",
                address,
                addresses.ingress_port,
                "INBOUND",
                tuple(ingress_chains),
            )
        )

    # egress: a node's backends; a gateway's target virtual services (App Mesh's self-redirect hop)
    passthrough = passthrough_cluster_name(mesh_name)
    egress = snapshot.egress_routes
    virtual_hosts = virtual_hosts_from_table(egress)
    allow_all = snapshot.egress_filter is EgressFilter.ALLOW_ALL
    if allow_all:
        anything = EnvoyRoute(
            "passthrough", (EnvoyWeightedCluster(passthrough, 1),), timeout=PASSTHROUGH_TIMEOUT_S, retry=None
        )
        virtual_hosts = (*virtual_hosts, EnvoyVirtualHost("allow_all", ("*",), (anything,)))
    route_configs.append(
        EnvoyRouteConfig(egress.name or f"rds_egress_http_{addresses.egress_port}", virtual_hosts)
    )
    egress_chains: list[EnvoyChain] = [
        EnvoyTcpChain(
            "egress",
            tuple(EnvoyWeightedCluster(t.cluster, t.weight) for t in route.targets),
            port,
            idle_timeout=route.idle_timeout,
        )
        for port, route in sorted(snapshot.tcp_routes.items())
    ]
    to_passthrough = (EnvoyWeightedCluster(passthrough, 1),)
    egress_chains.append(
        EnvoyTcpChain(
            "egress", to_passthrough, server_names=AWS_API_SERVER_NAMES, idle_timeout=PASSTHROUGH_TCP_IDLE_S
        )
    )
    egress_chains.append(
        EnvoyHttpChain(
            "egress", route_configs[-1].name, application_protocols=("http/1.0", "http/1.1", "h2c")
        )
    )
    default = (
        EnvoyTcpChain("egress", to_passthrough, idle_timeout=PASSTHROUGH_TCP_IDLE_S) if allow_all else None
    )
    listeners.append(
        EnvoyListener(
            f"lds_egress_{address}_{addresses.egress_port}",
            address,
            addresses.egress_port,
            "OUTBOUND",
            tuple(egress_chains),
            default,
        )
    )
    clusters.append(EnvoyCluster(passthrough, (), discovery="ORIGINAL_DST"))
    return EnvoyResources(tuple(listeners), tuple(route_configs), tuple(clusters))


def side_resources(resources: EnvoyResources, *, ingress: bool) -> EnvoyResources:
    """One side of a node's resources: its ingress listener with the local app's clusters and routes, or
    its egress listener with the backend clusters and the egress routes (to run Envoy as half a sidecar:
    the bench's TLS scenarios, the interop tests)."""
    listeners = tuple(lst for lst in resources.listeners if lst.name.startswith("lds_ingress_") == ingress)
    clusters = tuple(c for c in resources.clusters if c.name.startswith("cds_ingress_") == ingress)
    configs = tuple(r for r in resources.route_configs if r.name.startswith("rds_ingress_") == ingress)
    return EnvoyResources(listeners, configs, clusters)


def _terminating(chain: EnvoyChain, tls: TlsTermination | None) -> tuple[EnvoyChain, ...]:
    """`chain` with the listener's TLS termination: STRICT one TLS chain, PERMISSIVE a TLS and a plaintext
    chain, DISABLED (or none) the chain as it is."""
    if tls is None or tls.mode == "DISABLED":
        return (chain,)
    secured = replace(chain, tls=tls)
    if tls.mode == "PERMISSIVE":
        return secured, replace(chain, plaintext_only=True)
    return (secured,)


# ------------------------------------------------------------------------------------------------ render


def duration(seconds: float) -> str:
    """A protobuf Duration in JSON form ("15s", "0.25s")."""
    if seconds < 0:
        raise EnvoyConfigError(f"negative duration {seconds}")
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _string_matcher(kind: str, value: str) -> dict[str, Any]:
    if kind == "regex":
        return {"safe_regex": {"regex": value}}
    if kind in ("exact", "prefix", "suffix"):
        return {kind: value}
    raise EnvoyConfigError(f"no string matcher for {kind!r}")


def _header_matcher(match: EnvoyHeaderMatch) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": match.name}
    if match.kind == "present":
        rendered["present_match"] = True
    elif match.kind == "range":
        rendered["range_match"] = {"start": match.range_start, "end": match.range_end}
    else:
        rendered["string_match"] = _string_matcher(match.kind, match.value)
    if match.invert:
        rendered["invert_match"] = True
    return rendered


def _query_matcher(match: EnvoyHeaderMatch) -> dict[str, Any]:
    if match.kind == "present":
        return {"name": match.name, "present_match": True}
    return {"name": match.name, "string_match": _string_matcher(match.kind, match.value)}


def _retry_policy(retry: EnvoyRetryPolicy) -> dict[str, Any]:
    rendered: dict[str, Any] = {"retry_on": ",".join(retry.retry_on), "num_retries": retry.num_retries}
    if retry.retriable_status_codes:
        rendered["retriable_status_codes"] = list(retry.retriable_status_codes)
    if retry.per_try_timeout is not None:
        rendered["per_try_timeout"] = duration(retry.per_try_timeout)
    if retry.previous_hosts:
        rendered["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS_TYPE},
            }
        ]
        rendered["host_selection_retry_max_attempts"] = retry.host_selection_retry_max_attempts
    return rendered


def render_route(route: EnvoyRoute) -> dict[str, Any]:
    if not route.targets:
        raise EnvoyConfigError(f"route {route.name} has no weighted targets")
    match: dict[str, Any] = {}
    if route.path is not None:
        match["path"] = route.path
    elif route.path_regex is not None:
        match["safe_regex"] = {"regex": route.path_regex}
    else:
        match["prefix"] = route.prefix if route.prefix is not None else "/"
    if route.headers:
        match["headers"] = [_header_matcher(h) for h in route.headers]
    if route.query:
        match["query_parameters"] = [_query_matcher(q) for q in route.query]
    action: dict[str, Any] = {
        # App Mesh renders weighted targets as weighted_clusters even for one target ([DUMP], spec §4.5).
        "weighted_clusters": {"clusters": [{"name": t.cluster, "weight": t.weight} for t in route.targets]},
        "timeout": duration(route.timeout) if route.timeout is not None else "0s",
    }
    if route.idle_timeout is not None:
        action["idle_timeout"] = duration(route.idle_timeout)
    if route.retry is not None:
        action["retry_policy"] = _retry_policy(route.retry)
    if route.path_rewrite is not None:
        action["regex_rewrite"] = {"pattern": {"regex": ".*"}, "substitution": route.path_rewrite}
    elif route.prefix_rewrite is not None:
        action["prefix_rewrite"] = route.prefix_rewrite
    if route.host_rewrite is not None:
        action["host_rewrite_literal"] = route.host_rewrite
    return {"name": route.name, "match": match, "route": action}


def render_route_config(config: EnvoyRouteConfig) -> dict[str, Any]:
    domains = [d for vh in config.virtual_hosts for d in vh.domains]
    if not _unique(domains):
        raise EnvoyConfigError(f"route configuration {config.name}: a domain appears in two virtual hosts")
    return {
        "name": config.name,
        "virtual_hosts": [
            {"name": vh.name, "domains": list(vh.domains), "routes": [render_route(r) for r in vh.routes]}
            for vh in config.virtual_hosts
        ],
    }


def _health_check(check: HealthCheck) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "timeout": duration(check.timeout),
        "interval": duration(check.interval),
        "healthy_threshold": check.healthy_threshold,
        "unhealthy_threshold": check.unhealthy_threshold,
    }
    protocol = check.protocol.value
    if protocol == "tcp":
        rendered["tcp_health_check"] = {}
    elif protocol == "grpc":
        rendered["grpc_health_check"] = {}
    else:
        http: dict[str, Any] = {"path": check.path or "/"}
        if protocol == "http2":
            http["codec_client_type"] = "HTTP2"
        rendered["http_health_check"] = http
    return rendered


def render_cluster(cluster: EnvoyCluster) -> dict[str, Any]:
    if cluster.discovery not in ("STATIC", "LOGICAL_DNS", "STRICT_DNS", "ORIGINAL_DST"):
        raise EnvoyConfigError(f"cluster {cluster.name}: unknown discovery type {cluster.discovery!r}")
    if not cluster.endpoints and cluster.discovery in ("LOGICAL_DNS", "STRICT_DNS"):
        raise EnvoyConfigError(f"cluster {cluster.name} has no endpoints")
    rendered: dict[str, Any] = {
        "name": cluster.name,
        "type": cluster.discovery,
        "connect_timeout": duration(cluster.connect_timeout),
        "lb_policy": "CLUSTER_PROVIDED" if cluster.discovery == "ORIGINAL_DST" else "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": cluster.max_connections,
                    "max_pending_requests": cluster.max_pending_requests,
                    "max_requests": cluster.max_requests,
                    "max_retries": cluster.max_retries,
                }
            ]
        },
    }
    if cluster.discovery != "ORIGINAL_DST":
        rendered["load_assignment"] = {
            "cluster_name": cluster.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in cluster.endpoints
                    ]
                }
            ],
        }
    if cluster.discovery in ("LOGICAL_DNS", "STRICT_DNS"):
        rendered["dns_lookup_family"] = "V4_PREFERRED"
    if cluster.http2:
        rendered["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    outlier = cluster.outlier
    if outlier is not None:
        rendered["outlier_detection"] = {
            "consecutive_5xx": outlier.max_server_errors,
            "interval": duration(outlier.interval),
            "base_ejection_time": duration(outlier.base_ejection),
            "max_ejection_percent": outlier.max_ejection_percent,
        }
    if cluster.health_check is not None:
        rendered["health_checks"] = [_health_check(cluster.health_check)]
    if cluster.tls is not None:
        rendered["transport_socket"] = _upstream_tls(cluster.tls)
    return rendered


def file_access_log(path: str, log: AccessLogConfig | None = None) -> list[dict[str, Any]]:
    """`envoy.access_loggers.file`: Envoy's default format, or the node's text / JSON format (spec §5.5)."""
    config: dict[str, Any] = {"@type": FILE_ACCESS_LOG_TYPE, "path": path}
    if log is not None and log.json_format is not None:
        config["log_format"] = {"json_format": dict(log.json_format)}
    elif log is not None and log.text_format is not None:
        config["log_format"] = {"text_format_source": {"inline_string": log.text_format}}
    return [{"name": "envoy.access_loggers.file", "typed_config": config}]


def _xray_tracing(telemetry: EnvoyTelemetry) -> dict[str, Any]:
    """The HCM `tracing` block App Mesh renders for ENABLE_ENVOY_XRAY_TRACING=1 (spec §5.4)."""
    assert telemetry.xray_port is not None
    config: dict[str, Any] = {
        "@type": XRAY_CONFIG_TYPE,
        "daemon_endpoint": {
            "protocol": "UDP",
            "address": telemetry.xray_address,
            "port_value": telemetry.xray_port,
        },
        "segment_name": telemetry.xray_segment_name,
        "segment_fields": {
            "origin": XRAY_ORIGIN,
            "aws": {
                "app_mesh": {
                    "mesh_name": telemetry.mesh_name,
                    "virtual_node_name": telemetry.virtual_node_name,
                }
            },
        },
    }
    if telemetry.sampling_rules is not None:
        config["sampling_rule_manifest"] = {"filename": telemetry.sampling_rules}
    return {"provider": {"name": "envoy.tracers.xray", "typed_config": config}}


def http_connection_manager(
    stat_prefix: str,
    route: Mapping[str, Any],
    *,
    telemetry: EnvoyTelemetry | None = None,
    access_log: AccessLogConfig | None = None,
    http2: bool = False,
) -> dict[str, Any]:
    """App Mesh's HTTP connection manager (spec §4.9) with `route`: `{"rds": ...}` or `{"route_config": ...}`.

    The access log is the node's `access_log` (its format), else `telemetry.access_log_path` (Envoy's
    default format); tracing is X-Ray when `telemetry.xray_port` is set.
    """
    manager: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "HTTP2" if http2 else "AUTO",
        "generate_request_id": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket", "enabled": True}],
        **route,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if access_log is not None:
        manager["access_log"] = file_access_log(access_log.path, access_log)
    elif telemetry is not None and telemetry.access_log_path is not None:
        manager["access_log"] = file_access_log(telemetry.access_log_path)
    if telemetry is not None and telemetry.xray_port is not None:
        manager["tracing"] = _xray_tracing(telemetry)
    return manager


def _tcp_proxy(chain: EnvoyTcpChain) -> dict[str, Any]:
    proxy: dict[str, Any] = {"@type": TCP_PROXY_TYPE, "stat_prefix": chain.stat_prefix}
    if len(chain.targets) == 1:
        proxy["cluster"] = chain.targets[0].cluster
    else:
        proxy["weighted_clusters"] = {
            "clusters": [{"name": t.cluster, "weight": t.weight} for t in chain.targets]
        }
    if chain.idle_timeout is not None:
        proxy["idle_timeout"] = duration(chain.idle_timeout)
    return proxy


def _sds_secret(name: str) -> dict[str, Any]:
    """An SdsSecretConfig fetched from the agent's SDS cluster (spec §1.8)."""
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
                "transport_api_version": "V3",
            },
            "resource_api_version": "V3",
        },
    }


def _certificate_context(certificate: CertificateSource | None) -> dict[str, Any]:
    if certificate is None:
        return {}
    if certificate.sds_secret is not None:
        return {"tls_certificate_sds_secret_configs": [_sds_secret(certificate.sds_secret)]}
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": certificate.certificate_chain},
                "private_key": {"filename": certificate.private_key},
            }
        ]
    }


def _validation_context(validation: PeerValidation | None) -> dict[str, Any]:
    """A file trust bundle as `validation_context`; an SDS one as a `combined_validation_context` whose static
    part carries the SANs (SAN lists are exact matches, spec §4.2)."""
    if validation is None:
        return {}
    names = [{"exact": name} for name in validation.subject_alternative_names]
    if validation.trust_sds_secret is not None:
        secret = _sds_secret(validation.trust_sds_secret)
        if not names:
            return {"validation_context_sds_secret_config": secret}
        return {
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": names},
                "validation_context_sds_secret_config": secret,
            }
        }
    context: dict[str, Any] = {"trusted_ca": {"filename": validation.trust_file}}
    if names:
        context["match_subject_alt_names"] = names
    return {"validation_context": context}


def _downstream_tls(tls: TlsTermination, alpn: Sequence[str] = ()) -> dict[str, Any]:
    common = {**_certificate_context(tls.certificate), **_validation_context(tls.validation)}
    if alpn:
        common["alpn_protocols"] = list(alpn)
    config: dict[str, Any] = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.require_client_certificate:
        config["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": config}


def _upstream_tls(tls: TlsOrigination) -> dict[str, Any]:
    """No `sni` (App Mesh never set one) and no ALPN: Envoy's connection pools offer h2 / http/1.1 by the
    cluster's protocol themselves."""
    common = {**_certificate_context(tls.certificate), **_validation_context(tls.validation)}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": common},
    }


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """The agent's SDS cluster: STATIC, HTTP/2, connect timeout 1 s, the unix socket (spec §1.8)."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """What every HTTP chain of a proxy shares: its telemetry, the node's access log, and, for a bootstrap
    of static resources, the route configurations to carry inline (without them, chains name theirs over
    RDS: what App Mesh's Envoy ran, and what /config_dump shows)."""

    telemetry: EnvoyTelemetry | None = None
    access_log: AccessLogConfig | None = None
    route_configs: Mapping[str, EnvoyRouteConfig] | None = None


def render_chain(chain: EnvoyChain, options: ChainOptions = ChainOptions()) -> dict[str, Any]:
    """One filter chain (see `ChainOptions`)."""
    match: dict[str, Any] = {}
    if chain.destination_port is not None:
        match["destination_port"] = chain.destination_port
    if chain.tls is not None:
        match["transport_protocol"] = "tls"
    elif chain.plaintext_only:
        match["transport_protocol"] = "raw_buffer"
    rendered: dict[str, Any] = {}
    if isinstance(chain, EnvoyHttpChain):
        if chain.application_protocols:
            match["application_protocols"] = list(chain.application_protocols)
        route: dict[str, Any]
        if options.route_configs is not None:
            route = {"route_config": render_route_config(options.route_configs[chain.route_config])}
        else:
            route = {
                "rds": {
                    "route_config_name": chain.route_config,
                    "config_source": {"ads": {}, "resource_api_version": "V3"},
                }
            }
        manager = http_connection_manager(
            chain.stat_prefix,
            route,
            telemetry=options.telemetry,
            access_log=options.access_log,
            http2=chain.http2,
        )
        rendered["filters"] = [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
        ]
    else:
        if chain.server_names:
            match["server_names"] = list(chain.server_names)
            match["transport_protocol"] = "tls"
        rendered["filters"] = [{"name": "envoy.filters.network.tcp_proxy", "typed_config": _tcp_proxy(chain)}]
    if match:
        rendered = {"filter_chain_match": match, **rendered}
    if chain.tls is not None:
        alpn = HTTP_ALPN if isinstance(chain, EnvoyHttpChain) else ()
        rendered["transport_socket"] = _downstream_tls(chain.tls, alpn)
    return rendered


def render_listener(listener: EnvoyListener, options: ChainOptions = ChainOptions()) -> dict[str, Any]:
    def chain(c: EnvoyChain) -> dict[str, Any]:
        return render_chain(c, options)

    filters: list[dict[str, Any]] = []
    if listener.original_dst:
        filters.append(
            {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ORIGINAL_DST_TYPE}}
        )
    every = [*listener.chains, *([listener.default_chain] if listener.default_chain else [])]
    if any(c.tls is not None or c.plaintext_only or getattr(c, "server_names", ()) for c in every):
        filters.append(
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR_TYPE}}
        )
    if any(isinstance(c, EnvoyHttpChain) and c.application_protocols for c in every):
        filters.append(
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": HTTP_INSPECTOR_TYPE}}
        )
    rendered: dict[str, Any] = {
        "name": listener.name,
        "address": {"socket_address": {"address": listener.address, "port_value": listener.port}},
        "traffic_direction": listener.direction,
    }
    if filters:
        rendered["listener_filters"] = filters
    rendered["filter_chains"] = [chain(c) for c in listener.chains]
    if listener.default_chain is not None:
        rendered["default_filter_chain"] = chain(listener.default_chain)
    return rendered


def _unique(names: Iterable[str]) -> bool:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return False
        seen.add(name)
    return True


def stats_config(fixed_tags: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """App Mesh's tag specifiers: the three regexes always, the fixed tags (stats tags, metrics extension)."""
    tags: list[dict[str, str]] = [{"tag_name": name, "regex": regex} for name, regex in APPMESH_TAG_REGEXES]
    tags.extend({"tag_name": name, "fixed_value": value} for name, value in fixed_tags)
    return {"stats_tags": tags}


def admin_and_node(
    node_id: str, node_cluster: str, admin_port: int, admin_address: str = "127.0.0.1"
) -> dict[str, Any]:
    """The bootstrap's node, admin, App Mesh runtime layers and stats tags."""
    return {
        "node": {"id": node_id, "cluster": node_cluster or node_id},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "layered_runtime": {
            "layers": [
                {"name": "static_layer_0", "static_layer": dict(APPMESH_STATIC_RUNTIME)},
                {"name": "admin_layer", "admin_layer": {}},
            ]
        },
        "stats_config": stats_config(),
    }


def static_bootstrap(
    base: Mapping[str, Any],
    resources: EnvoyResources,
    *,
    telemetry: EnvoyTelemetry | None = None,
    access_log: AccessLogConfig | None = None,
) -> dict[str, Any]:
    """`base` (node, admin, ...) with `resources` as static resources, route configurations inline: a
    bootstrap real Envoy can load."""
    known = {c.name for c in resources.clusters}
    if not _unique(known) or len(known) != len(resources.clusters):
        raise EnvoyConfigError("duplicate cluster names")
    options = ChainOptions(telemetry, access_log, {r.name: r for r in resources.route_configs})
    for config in resources.route_configs:
        for vh in config.virtual_hosts:
            for route in vh.routes:
                for target in route.targets:
                    if target.cluster not in known:
                        raise EnvoyConfigError(f"route {route.name} targets unknown cluster {target.cluster}")
    return {
        **base,
        "static_resources": {
            "listeners": [render_listener(lst, options) for lst in resources.listeners],
            "clusters": [render_cluster(c) for c in resources.clusters],
        },
    }


def render_bootstrap(bootstrap: EgressBootstrap) -> dict[str, Any]:
    """The bench's Envoy v3 bootstrap as a dict: admin, one egress HTTP listener, static clusters."""
    if not bootstrap.virtual_hosts:
        raise EnvoyConfigError("no virtual hosts: the egress listener would route nothing")
    config = EnvoyRouteConfig(bootstrap.route_config_name, bootstrap.virtual_hosts)
    listener = EnvoyListener(
        bootstrap.listener_name,
        bootstrap.listen_address,
        bootstrap.egress_port,
        "OUTBOUND",
        (EnvoyHttpChain("egress", config.name),),
        original_dst=False,
    )
    return static_bootstrap(
        admin_and_node(bootstrap.node_id, bootstrap.node_cluster, bootstrap.admin_port),
        EnvoyResources((listener,), (config,), bootstrap.clusters),
        telemetry=bootstrap.telemetry,
    )


def render_tcp_bootstrap(bootstrap: TcpBootstrap) -> dict[str, Any]:
    """The Envoy v3 bootstrap as a dict: admin, one ingress tcp_proxy listener, the local app's cluster."""
    chain = EnvoyTcpChain(
        "ingress", (EnvoyWeightedCluster(bootstrap.cluster.name, 1),), idle_timeout=bootstrap.idle_timeout
    )
    listener = EnvoyListener(
        bootstrap.listener_name,
        bootstrap.listen_address,
        bootstrap.ingress_port,
        "INBOUND",
        (chain,),
        original_dst=False,
    )
    return static_bootstrap(
        admin_and_node(bootstrap.node_id, bootstrap.node_cluster, bootstrap.admin_port),
        EnvoyResources((listener,), (), (bootstrap.cluster,)),
    )


def bootstrap_yaml(bootstrap: EgressBootstrap | TcpBootstrap) -> str:
    """The bootstrap as the YAML file given to `envoy -c`."""
    import yaml

    rendered = (
        render_tcp_bootstrap(bootstrap)
        if isinstance(bootstrap, TcpBootstrap)
        else render_bootstrap(bootstrap)
    )
    return yaml.safe_dump(rendered, sort_keys=False, default_flow_style=False)


def bootstrap_from_snapshot(
    snapshot: Snapshot, *, egress_port: int, admin_port: int, listen_address: str = "127.0.0.1"
) -> EgressBootstrap:
    """The egress HTTP side of a compiled snapshot as an Envoy bootstrap (clusters the routes reach only)."""
    virtual_hosts = virtual_hosts_from_table(snapshot.egress_routes)
    used: list[str] = []
    for vh in virtual_hosts:
        for route in vh.routes:
            used.extend(t.cluster for t in route.targets if t.cluster not in used)
    missing = [name for name in used if name not in snapshot.clusters]
    if missing:
        raise EnvoyConfigError(f"routes reach clusters the snapshot does not define: {', '.join(missing)}")
    return EgressBootstrap(
        node_id=snapshot.identity.node_id,
        node_cluster=snapshot.identity.node_cluster,
        admin_port=admin_port,
        egress_port=egress_port,
        listen_address=listen_address,
        virtual_hosts=virtual_hosts,
        clusters=tuple(cluster_from_snapshot(snapshot.clusters[name]) for name in used),
    )


def tcp_bootstrap_from_snapshot(
    snapshot: Snapshot, *, ingress_port: int, admin_port: int, listen_address: str = "127.0.0.1"
) -> TcpBootstrap:
    """The snapshot's one tcp ingress listener as an Envoy tcp_proxy listener to its local-app cluster."""
    tcp = [listener for listener in snapshot.ingress if listener.protocol.value == "tcp"]
    if len(tcp) != 1 or len(snapshot.ingress) != 1:
        raise EnvoyConfigError(f"expected exactly one (tcp) ingress listener, found {len(snapshot.ingress)}")
    (listener,) = tcp
    cluster = snapshot.clusters.get(listener.cluster)
    if cluster is None:
        raise EnvoyConfigError(f"ingress listener {listener.port} has no cluster {listener.cluster}")
    return TcpBootstrap(
        node_id=snapshot.identity.node_id,
        node_cluster=snapshot.identity.node_cluster,
        admin_port=admin_port,
        ingress_port=ingress_port,
        cluster=cluster_from_snapshot(cluster),
        idle_timeout=listener.idle_timeout,
        listen_address=listen_address,
    )
