"""Envoy v3 bootstrap equivalent to what App Mesh rendered for one virtual node's egress HTTP routes.

The model here is small and Envoy-shaped (virtual hosts, routes, weighted clusters, retry policy, clusters);
two builders fill it from App Mesh values:

- `bench_bootstrap`: the bench mesh (bench/mesh.py) from its key values, with App Mesh's defaults (spec §4.5:
  default retry policy, 15 s route timeout, circuit breakers at 2147483647).
- `bootstrap_from_snapshot`: any compiled `meshproxy.config.snapshot.Snapshot`, so that Envoy and meshproxy
  can be driven by the very same compiled routes once `meshproxy.config.compile` exists.

`render_bootstrap` turns the model into the bootstrap dict; `bootstrap_yaml` into the file Envoy loads.
Stats are Envoy's defaults plus App Mesh's always-on tag regexes. Access logging and X-Ray tracing are off
unless an `EnvoyTelemetry` asks for them (then as App Mesh renders them: spec §5.4, §5.5).

The HTTP protocols of the bench mesh (bench/mesh.py) differ only where App Mesh's rendering does: an http2 or
grpc upstream node makes its cluster speak HTTP/2 (`http2_protocol_options`), and a grpc route's default retry
policy adds `unavailable` (spec §4.5). The `tcp` variant is an ingress tcp_proxy listener instead
(`tcp_bootstrap`), to the local app's cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from bench import mesh

if TYPE_CHECKING:
    from meshproxy.config.snapshot import Cluster, RetryPolicy, RouteEntry, Snapshot, ValueMatch


class EnvoyConfigError(Exception):
    """The input cannot be expressed as the bench's Envoy bootstrap (e.g. a snapshot feature not mapped)."""


PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
UNLIMITED = 2147483647  # App Mesh's default circuit-breaker thresholds (spec §4.5, [UG-defaults])

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

HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XRAY_CONFIG_TYPE = "type.googleapis.com/envoy.config.trace.v3.XRayConfig"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
XRAY_ORIGIN = "AWS::AppMesh::Proxy"


@dataclass(frozen=True, slots=True)
class EnvoyTelemetry:
    """Access log and X-Ray tracing as App Mesh renders them for `ENABLE_ENVOY_XRAY_TRACING=1` and a virtual
    node's `logging.accessLog.file` (spec §5.4, §5.5). `sampling_rules` is the manifest file the agent
    writes when XRAY_SAMPLING_RATE is not 0.05; `xray_port` is the daemon's UDP port on 127.0.0.1."""

    access_log_path: str | None = None
    xray_port: int | None = None
    xray_segment_name: str = f"{mesh.MESH}/{mesh.CLIENT_NODE}"
    sampling_rules: str | None = None
    mesh_name: str = mesh.MESH
    virtual_node_name: str = mesh.CLIENT_NODE


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


@dataclass(frozen=True, slots=True)
class EnvoyVirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[EnvoyRoute, ...]


@dataclass(frozen=True, slots=True)
class EnvoyCluster:
    """An upstream cluster. `discovery` is STATIC, LOGICAL_DNS or STRICT_DNS."""

    name: str
    endpoints: tuple[tuple[str, int], ...]
    discovery: str = "LOGICAL_DNS"
    connect_timeout: float = 1.0
    max_connections: int = UNLIMITED
    max_pending_requests: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED
    http2: bool = False  # an http2/grpc listener on the target node: Envoy speaks HTTP/2 (h2c) to it


@dataclass(frozen=True, slots=True)
class EgressBootstrap:
    """Everything the bench's Envoy needs: identity, admin, one egress HTTP listener, its clusters."""

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


def bench_bootstrap(
    *,
    upstream_port: int,
    egress_port: int,
    admin_port: int,
    upstream_host: str = "127.0.0.1",
    protocol: mesh.MeshProtocol = mesh.MeshProtocol.HTTP,
    telemetry: EnvoyTelemetry | None = None,
) -> EgressBootstrap:
    """The bench mesh's client node as App Mesh would have configured its Envoy (see bench/mesh.py)."""
    if protocol is mesh.MeshProtocol.TCP:
        raise EnvoyConfigError("the tcp variant has no egress routes: use tcp_bootstrap")
    bench_mesh = mesh.BenchMesh(upstream_port=upstream_port, upstream_host=upstream_host, protocol=protocol)
    grpc = protocol is mesh.MeshProtocol.GRPC
    route = EnvoyRoute(
        name=f"{mesh.VIRTUAL_ROUTER}/{mesh.ROUTE}",
        targets=(EnvoyWeightedCluster(bench_mesh.upstream_cluster, 100),),
        prefix="/",  # a grpcRoute without service or method matches every path
        timeout=15.0,  # route perRequest and idle defaults (spec §4.5)
        idle_timeout=300.0,
        retry=APPMESH_DEFAULT_GRPC_RETRY if grpc else APPMESH_DEFAULT_RETRY,
    )
    virtual_host = EnvoyVirtualHost(
        name=mesh.VIRTUAL_SERVICE,
        domains=(mesh.VIRTUAL_SERVICE, f"{mesh.VIRTUAL_SERVICE}:{mesh.ROUTER_PORT}"),
        routes=(route,),
    )
    cluster = EnvoyCluster(
        name=bench_mesh.upstream_cluster,
        endpoints=((upstream_host, upstream_port),),
        discovery="LOGICAL_DNS",  # DNS service discovery, LOADBALANCER response type (spec §4.2)
        http2=protocol is not mesh.MeshProtocol.HTTP,
    )
    return EgressBootstrap(
        node_id=mesh.CLIENT_RESOURCE_ARN,
        admin_port=admin_port,
        egress_port=egress_port,
        virtual_hosts=(virtual_host,),
        clusters=(cluster,),
        telemetry=telemetry,
    )


def tcp_bootstrap(
    *, app_port: int, ingress_port: int, admin_port: int, app_host: str = "127.0.0.1"
) -> TcpBootstrap:
    """The client node with one tcp listener on `app_port` (bench/mesh.py `tcp`): ingress tcp_proxy to the
    local app, a static cluster with App Mesh's 1 s connect timeout and unlimited circuit breakers."""
    bench_mesh = mesh.BenchMesh(
        upstream_port=app_port, upstream_host=app_host, protocol=mesh.MeshProtocol.TCP
    )
    return TcpBootstrap(
        node_id=mesh.CLIENT_RESOURCE_ARN,
        admin_port=admin_port,
        ingress_port=ingress_port,
        cluster=EnvoyCluster(
            name=bench_mesh.upstream_cluster, endpoints=((app_host, app_port),), discovery="STATIC"
        ),
    )


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


def route_from_snapshot(entry: RouteEntry) -> EnvoyRoute:
    """One compiled HTTP route as an Envoy route. gRPC service/method and rewrites are not mapped yet."""
    m = entry.match
    if m.grpc_service is not None or m.grpc_method is not None or entry.rewrite is not None:
        raise EnvoyConfigError(
            f"route {entry.name}: gRPC matches and rewrites are not mapped for the bench yet"
        )
    headers = tuple(_match_from_snapshot(h) for h in m.headers)
    if m.method is not None:
        headers = (EnvoyHeaderMatch(":method", "exact", m.method), *headers)
    if m.scheme is not None:
        headers = (EnvoyHeaderMatch(":scheme", "exact", m.scheme), *headers)
    prefix = m.prefix
    if prefix is None and m.path_exact is None and m.path_regex is None:
        prefix = "/"
    return EnvoyRoute(
        name=entry.name,
        targets=tuple(EnvoyWeightedCluster(t.cluster, t.weight) for t in entry.targets),
        prefix=prefix,
        path=m.path_exact,
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
    )


def cluster_from_snapshot(cluster: Cluster) -> EnvoyCluster:
    """A compiled cluster as an Envoy cluster: DNS -> LOGICAL_DNS / STRICT_DNS, static -> STATIC."""
    from meshproxy.config.snapshot import DnsDiscovery, StaticDiscovery

    discovery = cluster.discovery
    if isinstance(discovery, DnsDiscovery):
        kind = "STRICT_DNS" if discovery.response_type == "ENDPOINTS" else "LOGICAL_DNS"
        endpoints: tuple[tuple[str, int], ...] = ((discovery.hostname, discovery.port),)
    elif isinstance(discovery, StaticDiscovery):
        kind, endpoints = "STATIC", discovery.addresses
    else:
        raise EnvoyConfigError(f"cluster {cluster.name}: Cloud Map discovery is not mapped for the bench")
    return EnvoyCluster(
        name=cluster.name,
        endpoints=endpoints,
        discovery=kind,
        connect_timeout=cluster.connect_timeout,
        max_connections=cluster.limits.max_connections,
        max_pending_requests=cluster.limits.max_pending_requests,
        max_requests=cluster.limits.max_requests,
        http2=cluster.protocol.value in ("http2", "grpc"),
    )


def bootstrap_from_snapshot(
    snapshot: Snapshot, *, egress_port: int, admin_port: int, listen_address: str = "127.0.0.1"
) -> EgressBootstrap:
    """The egress HTTP side of a compiled snapshot as an Envoy bootstrap (clusters the routes reach only)."""
    virtual_hosts = tuple(
        EnvoyVirtualHost(
            name=vh.name,
            domains=vh.domains,
            routes=tuple(route_from_snapshot(r) for r in vh.routes),
        )
        for vh in snapshot.egress_routes.virtual_hosts
    )
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


def compile_config_file(path: str, resource_arn: str, *, egress_port: int) -> Snapshot:
    """Read, validate and compile an App Mesh config file with meshproxy's own config code.

    Raises `EnvoyConfigError` when meshproxy's config code is missing or rejects the file.
    """
    try:
        from meshproxy.config.compile import compile_snapshot
        from meshproxy.config.dialects import read_file
        from meshproxy.config.errors import ConfigError, Severity
        from meshproxy.config.validate import validate
        from meshproxy.settings import parse_identity
    except ImportError as exc:
        raise EnvoyConfigError(f"meshproxy's config compiler is not available: {exc}") from None
    read = read_file(path)
    resources, issues = validate(read.resources)
    problems = [str(i) for i in (*read.issues, *issues) if i.severity is Severity.ERROR]
    if problems:
        raise EnvoyConfigError(f"{path}: " + "; ".join(problems[:5]))
    identity = parse_identity({"APPMESH_RESOURCE_ARN": resource_arn})
    try:
        snapshot = compile_snapshot(resources, identity, version="bench", egress_port=egress_port)
    except ConfigError as exc:
        raise EnvoyConfigError(f"{path}: {exc}") from None
    except Exception as exc:  # a compiler bug must not end the bench run: report it as Envoy's failure
        raise EnvoyConfigError(f"meshproxy's compiler failed on {path}: {exc!r}") from exc
    return snapshot


def bootstrap_from_config_file(
    path: str, resource_arn: str, *, egress_port: int, admin_port: int, listen_address: str = "127.0.0.1"
) -> EgressBootstrap:
    """An App Mesh config file compiled by meshproxy (`compile_config_file`), rendered for Envoy's egress."""
    snapshot = compile_config_file(path, resource_arn, egress_port=egress_port)
    return bootstrap_from_snapshot(
        snapshot, egress_port=egress_port, admin_port=admin_port, listen_address=listen_address
    )


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


def _route(route: EnvoyRoute) -> dict[str, Any]:
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
    return {"name": route.name, "match": match, "route": action}


def _cluster(cluster: EnvoyCluster) -> dict[str, Any]:
    if cluster.discovery not in ("STATIC", "LOGICAL_DNS", "STRICT_DNS"):
        raise EnvoyConfigError(f"cluster {cluster.name}: unknown discovery type {cluster.discovery!r}")
    if not cluster.endpoints:
        raise EnvoyConfigError(f"cluster {cluster.name} has no endpoints")
    rendered: dict[str, Any] = {
        "name": cluster.name,
        "type": cluster.discovery,
        "connect_timeout": duration(cluster.connect_timeout),
        "lb_policy": "ROUND_ROBIN",
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
        "load_assignment": {
            "cluster_name": cluster.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in cluster.endpoints
                    ]
                }
            ],
        },
    }
    if cluster.discovery != "STATIC":
        rendered["dns_lookup_family"] = "V4_PREFERRED"
    if cluster.http2:
        rendered["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return rendered


def _access_log(path: str) -> list[dict[str, Any]]:
    """`envoy.access_loggers.file` with no format: Envoy's default format, as App Mesh renders it (§5.5)."""
    return [
        {"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_ACCESS_LOG_TYPE, "path": path}}
    ]


def _xray_tracing(telemetry: EnvoyTelemetry) -> dict[str, Any]:
    """The HCM `tracing` block App Mesh renders for ENABLE_ENVOY_XRAY_TRACING=1 (spec §5.4)."""
    assert telemetry.xray_port is not None
    config: dict[str, Any] = {
        "@type": XRAY_CONFIG_TYPE,
        "daemon_endpoint": {"protocol": "UDP", "address": "127.0.0.1", "port_value": telemetry.xray_port},
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


def _admin_and_node(node_id: str, node_cluster: str, admin_port: int) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": node_cluster or node_id},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "layered_runtime": {
            "layers": [
                {"name": "static_layer_0", "static_layer": dict(APPMESH_STATIC_RUNTIME)},
                {"name": "admin_layer", "admin_layer": {}},
            ]
        },
        "stats_config": {
            "stats_tags": [{"tag_name": name, "regex": regex} for name, regex in APPMESH_TAG_REGEXES]
        },
    }


def _unique(names: Iterable[str]) -> bool:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return False
        seen.add(name)
    return True


def render_bootstrap(bootstrap: EgressBootstrap) -> dict[str, Any]:
    """The Envoy v3 bootstrap as a dict: admin, one egress HTTP listener, static clusters."""
    if not bootstrap.virtual_hosts:
        raise EnvoyConfigError("no virtual hosts: the egress listener would route nothing")
    if not _unique(c.name for c in bootstrap.clusters):
        raise EnvoyConfigError("duplicate cluster names")
    domains = [d for vh in bootstrap.virtual_hosts for d in vh.domains]
    if not _unique(domains):
        raise EnvoyConfigError("a domain appears in two virtual hosts")
    known = {c.name for c in bootstrap.clusters}
    for vh in bootstrap.virtual_hosts:
        for route in vh.routes:
            for target in route.targets:
                if target.cluster not in known:
                    raise EnvoyConfigError(f"route {route.name} targets unknown cluster {target.cluster}")
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "egress",
        "codec_type": "AUTO",
        "generate_request_id": True,
        # App Mesh's HCM options (spec §4.9).
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket", "enabled": True}],
        "route_config": {
            "name": bootstrap.route_config_name,
            "virtual_hosts": [
                {"name": vh.name, "domains": list(vh.domains), "routes": [_route(r) for r in vh.routes]}
                for vh in bootstrap.virtual_hosts
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    telemetry = bootstrap.telemetry
    if telemetry is not None and telemetry.access_log_path is not None:
        connection_manager["access_log"] = _access_log(telemetry.access_log_path)
    if telemetry is not None and telemetry.xray_port is not None:
        connection_manager["tracing"] = _xray_tracing(telemetry)
    return {
        **_admin_and_node(bootstrap.node_id, bootstrap.node_cluster, bootstrap.admin_port),
        "static_resources": {
            "listeners": [
                {
                    "name": bootstrap.listener_name,
                    "address": {
                        "socket_address": {
                            "address": bootstrap.listen_address,
                            "port_value": bootstrap.egress_port,
                        }
                    },
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(c) for c in bootstrap.clusters],
        },
    }


def render_tcp_bootstrap(bootstrap: TcpBootstrap) -> dict[str, Any]:
    """The Envoy v3 bootstrap as a dict: admin, one ingress tcp_proxy listener, the local app's cluster."""
    tcp_proxy: dict[str, Any] = {
        "@type": TCP_PROXY_TYPE,
        "stat_prefix": "ingress",
        "cluster": bootstrap.cluster.name,
    }
    if bootstrap.idle_timeout is not None:
        tcp_proxy["idle_timeout"] = duration(bootstrap.idle_timeout)
    return {
        **_admin_and_node(bootstrap.node_id, bootstrap.node_cluster, bootstrap.admin_port),
        "static_resources": {
            "listeners": [
                {
                    "name": bootstrap.listener_name,
                    "address": {
                        "socket_address": {
                            "address": bootstrap.listen_address,
                            "port_value": bootstrap.ingress_port,
                        }
                    },
                    "traffic_direction": "INBOUND",
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp_proxy}]}
                    ],
                }
            ],
            "clusters": [_cluster(bootstrap.cluster)],
        },
    }


def bootstrap_yaml(bootstrap: EgressBootstrap | TcpBootstrap) -> str:
    """The bootstrap as the YAML file given to `envoy -c`."""
    rendered = (
        render_tcp_bootstrap(bootstrap)
        if isinstance(bootstrap, TcpBootstrap)
        else render_bootstrap(bootstrap)
    )
    return yaml.safe_dump(rendered, sort_keys=False, default_flow_style=False)
