"""Compile App Mesh resources for one proxy identity into the immutable `Snapshot` the data plane runs on.

For a virtual node VN in mesh M (spec §4.2-4.5):

- ingress: one `IngressListener` per VN listener, forwarding to the local app through the cluster
  `cds_ingress_{M}_{VN}_{proto}_{port}` (127.0.0.1, or ::1 when the node prefers IPv6, spec §4.1), with the
  listener's connection pool as its limits and the listener's timeouts (perRequest 15 s and idle 300 s by
  default; 0 disables);
- egress: per backend virtual service VS, a `VirtualHost` answering to `VS` and `VS:<port>` for each
  provider listener port. A virtual-node provider P gets App Mesh's implicit route (prefix "/", the default
  retry policy, 15 s / 300 s); a virtual-router provider contributes its routes in match order (below). HTTP,
  HTTP/2 and gRPC go to the route table `rds_egress_http_{egress_port}`; TCP listeners/routes go to
  `tcp_routes[port]`. Every target (node, listener) becomes a cluster `cds_egress_{M}_{node}_{proto}_{port}`
  with the node's service discovery, outlier detection and health check;
- the mesh's egress filter (DROP_ALL unless the mesh says ALLOW_ALL), the node's access log, its backends.

Route match order within a virtual router (spec §4.5): routes with a `priority` come first, lowest value
first. Routes without one follow, ordered by specificity as App Mesh does ("longest match first",
[ISSUE-77]); meshproxy's exact rule, for HTTP / HTTP/2 routes:

  1. `path.exact` before everything else;
  2. then the longer match string first: the length of `path.exact`, `path.regex` or `prefix`;
  3. then more conditions first (headers + query parameters + method + scheme + port);
  4. then the route name, so the order never depends on file order.

For gRPC routes step 1-2 become: service and method, then service only, then neither; step 3 counts metadata
and port. Routes that share a priority are ordered by the same rule. The same ordering applies to gateway
routes (hostname counts as a condition).

Retry policies map to Envoy's behaviour as App Mesh rendered it (spec §4.5); a route without one gets the
App Mesh default (2 retries on 503, reset, connect failure, refused stream, gRPC UNAVAILABLE). Regexes are
compiled here, once; header and metadata names are lower-cased.

A virtual gateway identity gets one `GatewayListener` per gateway listener, each with its gateway routes in
match order. A gateway route forwards, as App Mesh does (spec §4.6), to a self-redirect cluster on the egress
listener (127.0.0.1:egress_port), rewriting Host to the target virtual service so the egress route table
(built for every target virtual service) resolves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from meshproxy.config.errors import ConfigError, Issue
from meshproxy.config.model import (
    ClientPolicy,
    ClientPolicyTls,
    ConnectionPool,
    Duration,
    GatewayRoute,
    HttpQueryParameter,
    HttpRouteHeader,
    HttpTimeout,
    Listener,
    ListenerTls,
    ListenerTlsCertificate,
    Logging,
    MeshResources,
    Route,
    RouteSpec,
    TcpTimeout,
    TlsValidationContext,
    VirtualGateway,
    VirtualNode,
    VirtualService,
)
from meshproxy.config.model import RetryPolicy as ApiRetryPolicy
from meshproxy.config.snapshot import (
    APP_MESH_LIMITS,
    AccessLogConfig,
    CertificateSource,
    CloudMapDiscovery,
    Cluster,
    ConnectionPoolLimits,
    Discovery,
    DnsDiscovery,
    EgressFilter,
    GatewayListener,
    HealthCheck,
    Identity,
    IngressListener,
    ListenerProtocol,
    OutlierDetection,
    PathRewrite,
    PeerValidation,
    ResourceKind,
    RetryPolicy,
    RouteEntry,
    RouteMatch,
    RouteTable,
    Snapshot,
    StaticDiscovery,
    StringMatchKind,
    TlsOrigination,
    TlsTermination,
    ValueMatch,
    VirtualHost,
    WeightedCluster,
)

DEFAULT_PER_REQUEST_S: Final = (
    15.0  # App Mesh's default route / listener perRequest timeout (spec §4.2, §4.5)
)
DEFAULT_IDLE_S: Final = 300.0  # the user guide's idle default (spec §4.2, §7)
CONNECT_TIMEOUT_S: Final = 1.0  # App Mesh clusters (spec §4.9)
SELF_REDIRECT_CONNECT_TIMEOUT_S: Final = 0.25  # the virtual gateway's self-redirect cluster (spec §4.9)

# httpRetryEvents -> retriable HTTP status codes (spec §4.5, API HttpRetryPolicy documentation)
HTTP_RETRY_STATUSES: Final[Mapping[str, frozenset[int]]] = MappingProxyType(
    {
        "server-error": frozenset({500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}),
        "gateway-error": frozenset({502, 503, 504}),
        "client-error": frozenset({409}),
        "stream-error": frozenset(),  # refused stream, not a status
    }
)
# grpcRetryEvents -> grpc-status codes
GRPC_RETRY_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}
)
TCP_RETRY_EVENTS: Final = frozenset({"connection-error"})

# App Mesh's default retry policy for routes without one (spec §4.5 [UG-defaults]); its per-try timeout is
# undocumented, so attempts are bounded only by the route timeout.
DEFAULT_RETRY_POLICY: Final = RetryPolicy(
    max_retries=2,
    per_try_timeout=None,
    retriable_statuses=frozenset({503}),
    retry_on_reset=True,
    retry_on_connect_failure=True,
    retry_on_refused_stream=True,
    grpc_statuses=frozenset({14}),
    is_default=True,
)
# TCP routes have no retryPolicy in the API. They get the connect-failure part of App Mesh's default policy
# (2 retries, each on a host not yet tried), and only before any byte has flowed: decided for meshproxy, so a
# refused connection to one endpoint is not an outage for the client.
DEFAULT_TCP_RETRY_POLICY: Final = RetryPolicy(
    max_retries=2, per_try_timeout=None, retry_on_connect_failure=True, is_default=True
)

_LOOPBACK_V4, _LOOPBACK_V6 = "127.0.0.1", "::1"
_IPV6_FIRST = frozenset({"IPv6_PREFERRED", "IPv6_ONLY"})


def compile_snapshot(
    resources: MeshResources,
    identity: Identity,
    *,
    version: str,
    egress_port: int = 15001,
    egress_limits: ConnectionPoolLimits = APP_MESH_LIMITS,
) -> Snapshot:
    """Build the `Snapshot` for `identity` (a virtual node or virtual gateway) from validated `resources`.

    `egress_limits` are the circuit-breaker thresholds of the clusters to backends: App Mesh rendered them
    unlimited (the default here); the proxy runs with `Settings.egress_limits`, Envoy's defaults.
    Raises `ConfigError` if the identity's node or gateway is not defined, or if the configuration cannot be
    expressed in a snapshot (two backends claiming the same egress TCP port).
    """
    compiler = _Compiler(resources, identity.mesh_name, egress_port, egress_limits)
    if identity.kind is ResourceKind.VIRTUAL_NODE:
        node = resources.virtual_node(identity.mesh_name, identity.name)
        if node is None:
            raise ConfigError([_missing(identity, "virtualNode")])
        return compiler.node_snapshot(node, identity, version)
    gateway = resources.virtual_gateway(identity.mesh_name, identity.name)
    if gateway is None:
        raise ConfigError([_missing(identity, "virtualGateway")])
    return compiler.gateway_snapshot(gateway, identity, version)


def _missing(identity: Identity, kind: str) -> Issue:
    return Issue(
        kind,
        identity.name,
        "",
        f"not found in mesh {identity.mesh_name!r}: APPMESH_RESOURCE_ARN ({identity.node_id}) names a "
        f"{kind} the configuration does not define",
    )


# --- small mappings -----------------------------------------------------------------------------------------


def _seconds(duration: Duration | None, default: float | None) -> float | None:
    """App Mesh Duration -> seconds; absent = `default`, 0 = disabled (None)."""
    if duration is None:
        return default
    return None if duration.value == 0 else duration.seconds


def _http_timeouts(timeout: HttpTimeout | None) -> tuple[float | None, float | None]:
    if timeout is None:
        return DEFAULT_PER_REQUEST_S, DEFAULT_IDLE_S
    return _seconds(timeout.per_request, DEFAULT_PER_REQUEST_S), _seconds(timeout.idle, DEFAULT_IDLE_S)


def _tcp_idle(timeout: TcpTimeout | None) -> float | None:
    return DEFAULT_IDLE_S if timeout is None else _seconds(timeout.idle, DEFAULT_IDLE_S)


def retry_policy(policy: ApiRetryPolicy | None) -> RetryPolicy:
    """An App Mesh retry policy as Envoy applies it (spec §4.5); None gives App Mesh's default policy."""
    if policy is None:
        return DEFAULT_RETRY_POLICY
    statuses: set[int] = set()
    for event in policy.http_retry_events:
        statuses |= HTTP_RETRY_STATUSES.get(event, frozenset())
    return RetryPolicy(
        max_retries=policy.max_retries,
        per_try_timeout=_seconds(policy.per_retry_timeout, None),
        retriable_statuses=frozenset(statuses),
        # "Both server-error and gateway-error under httpRetryEvents include the Envoy reset policy" [API]
        retry_on_reset=bool({"server-error", "gateway-error"} & set(policy.http_retry_events)),
        retry_on_connect_failure=bool(TCP_RETRY_EVENTS & set(policy.tcp_retry_events)),
        retry_on_refused_stream="stream-error" in policy.http_retry_events,
        grpc_statuses=frozenset(
            GRPC_RETRY_CODES[e] for e in policy.grpc_retry_events if e in GRPC_RETRY_CODES
        ),
    )


def _value_match(header: HttpRouteHeader, *, lower_name: bool = True) -> ValueMatch:
    name = header.name.lower() if lower_name else header.name
    match = header.match
    if match is None:
        return ValueMatch(name=name, kind=StringMatchKind.PRESENT, invert=header.invert)
    if match.exact is not None:
        return ValueMatch(name=name, kind=StringMatchKind.EXACT, value=match.exact, invert=header.invert)
    if match.prefix is not None:
        return ValueMatch(name=name, kind=StringMatchKind.PREFIX, value=match.prefix, invert=header.invert)
    if match.suffix is not None:
        return ValueMatch(name=name, kind=StringMatchKind.SUFFIX, value=match.suffix, invert=header.invert)
    if match.regex is not None:
        return ValueMatch(
            name=name, kind=StringMatchKind.REGEX, pattern=re.compile(match.regex), invert=header.invert
        )
    assert match.range is not None
    return ValueMatch(
        name=name,
        kind=StringMatchKind.RANGE,
        range_start=match.range.start,
        range_end=match.range.end,
        invert=header.invert,
    )


def _query_match(parameter: HttpQueryParameter) -> ValueMatch:
    # query parameter names are case-sensitive; without `match` the parameter only has to be present
    if parameter.match is None or parameter.match.exact is None:
        return ValueMatch(name=parameter.name, kind=StringMatchKind.PRESENT)
    return ValueMatch(name=parameter.name, kind=StringMatchKind.EXACT, value=parameter.match.exact)


def _limits(pool: ConnectionPool | None) -> ConnectionPoolLimits:
    """Listener connection pool -> circuit-breaker limits on the cluster to the local app (spec §4.2)."""
    if pool is None:
        return ConnectionPoolLimits()
    default = ConnectionPoolLimits()
    if pool.protocol in (ListenerProtocol.HTTP2, ListenerProtocol.GRPC):
        return ConnectionPoolLimits(max_requests=pool.max_requests or default.max_requests)
    return ConnectionPoolLimits(
        max_connections=pool.max_connections or default.max_connections,
        max_pending_requests=pool.max_pending_requests or default.max_pending_requests,
    )


def _certificate(certificate: ListenerTlsCertificate | None) -> CertificateSource | None:
    """A file or SDS certificate; None for ACM (validation refuses ACM wherever it would be used)."""
    if certificate is None:
        return None
    if certificate.sds_secret_name is not None:
        return CertificateSource(sds_secret=certificate.sds_secret_name)
    chain, key = certificate.file_certificate_chain, certificate.file_private_key
    if chain is None or key is None:
        return None
    return CertificateSource(certificate_chain=chain, private_key=key)


def _validation(
    validation: TlsValidationContext | None, default_names: tuple[str, ...] = ()
) -> PeerValidation | None:
    """A file or SDS trust bundle with its SANs (`default_names` when none are listed); None for ACM."""
    if validation is None:
        return None
    if validation.file_certificate_chain is None and validation.sds_secret_name is None:
        return None
    return PeerValidation(
        trust_file=validation.file_certificate_chain,
        trust_sds_secret=validation.sds_secret_name,
        subject_alternative_names=validation.subject_alternative_names or default_names,
    )


def _tls(tls: ListenerTls | None) -> TlsTermination | None:
    # validation refuses ACM certificates unless the mode is DISABLED, which serves no certificate
    if tls is None or tls.mode == "DISABLED":
        return None
    certificate = _certificate(tls.certificate)
    if certificate is None:
        return None
    return TlsTermination(mode=tls.mode, certificate=certificate, validation=_validation(tls.validation))


def _policy_tls(policy: ClientPolicy | None) -> ClientPolicyTls | None:
    return None if policy is None else policy.tls


def _discovery_names(node: VirtualNode) -> tuple[str, ...]:
    """The name a node's certificate must carry when a client policy lists no SANs (user guide, TLS)."""
    discovery = node.spec.service_discovery
    if discovery is not None and discovery.dns is not None:
        return (discovery.dns.hostname,)
    if discovery is not None and discovery.aws_cloud_map is not None:
        cloud_map = discovery.aws_cloud_map
        return (f"{cloud_map.service_name}.{cloud_map.namespace_name}",)
    return ()


def terminates_tls(listener: Listener) -> bool:
    return listener.tls is not None and listener.tls.mode in ("STRICT", "PERMISSIVE")


def origination(
    policy: ClientPolicyTls | None, target: Listener, discovery_names: tuple[str, ...]
) -> TlsOrigination | None:
    """TLS toward one target listener, as App Mesh configured its Envoy (user guide, TLS: "How App Mesh
    configures Envoys to negotiate TLS"):

    - a client policy whose `ports` (empty: every port) include the target's port applies: TLS with its
      validation and client certificate, unless it is not enforced and the target terminates no TLS (then
      plaintext: `enforce: false` falls back only when the backend has no TLS);
    - otherwise the server decides: a STRICT or PERMISSIVE target gets TLS without validating its
      certificate (App Mesh validated only ACM server certificates, which meshproxy cannot use);
    - SANs: the policy's list, else the target's service discovery name (the DNS hostname, or
      `<service>.<namespace>` for Cloud Map; user guide, TLS: certificate requirements);
    - SNI: none. App Mesh never set `sni` on its upstream TLS contexts (roadmap #311: "App Mesh doesn't
      configure SNI for Virtual Node backends"), so neither does meshproxy.
    """
    port = target.port_mapping.port
    server_tls = terminates_tls(target)
    validation = None if policy is None else _validation(policy.validation, discovery_names)
    if policy is not None and validation is not None and (not policy.ports or port in policy.ports):
        if not policy.enforce and not server_tls:
            return None
        return TlsOrigination(validation=validation, certificate=_certificate(policy.certificate))
    return TlsOrigination(validation=None) if server_tls else None


def _access_log(logging: Logging | None) -> AccessLogConfig | None:
    if logging is None or logging.access_log is None:
        return None
    log = logging.access_log
    fmt = log.format
    return AccessLogConfig(
        path=log.path,
        text_format=None if fmt is None else fmt.text,
        json_format=None if fmt is None else fmt.json,
    )


def _listener_timeouts(listener: Listener) -> tuple[float | None, float | None]:
    """(perRequest, idle) of a virtual-node listener; TCP listeners have no per-request timeout."""
    timeout = listener.timeout
    protocol = listener.port_mapping.protocol
    if protocol is ListenerProtocol.TCP:
        return None, _tcp_idle(None if timeout is None else timeout.tcp)
    chosen = None
    if timeout is not None:
        chosen = {
            ListenerProtocol.HTTP: timeout.http,
            ListenerProtocol.HTTP2: timeout.http2,
            ListenerProtocol.GRPC: timeout.grpc,
        }[protocol]
    return _http_timeouts(chosen)


# --- match order ------------------------------------------------------------------------------------------


def _http_specificity(
    exact: str | None, other: str | None, conditions: int, name: str
) -> tuple[int, int, int, str]:
    if exact is not None:
        return (0, -len(exact), -conditions, name)
    return (1, -len(other or ""), -conditions, name)


def route_order_key(route: Route) -> tuple[int, tuple[int, int, int, str]]:
    """Sort key for the routes of one virtual router (see the module docstring for the rule)."""
    spec = route.spec
    priority = spec.priority if spec.priority is not None else 1 << 30  # after every explicit priority
    return priority, _specificity(spec, route.route_name)


def _specificity(spec: RouteSpec, name: str) -> tuple[int, int, int, str]:
    http = spec.http_route or spec.http2_route
    if http is not None:
        match = http.match
        conditions = len(match.headers) + len(match.query_parameters)
        conditions += sum(x is not None for x in (match.method, match.scheme, match.port))
        exact = match.path.exact if match.path is not None else None
        other = match.path.regex if match.path is not None and match.path.regex is not None else match.prefix
        return _http_specificity(exact, other, conditions, name)
    if spec.grpc_route is not None:
        grpc = spec.grpc_route.match
        rank = 0 if grpc.method_name is not None else 1 if grpc.service_name is not None else 2
        conditions = len(grpc.metadata) + (grpc.port is not None)
        return (rank, 0, -conditions, name)
    port = spec.tcp_route.match_port if spec.tcp_route is not None else None
    return (2, 0, -(port is not None), name)


def gateway_route_order_key(route: GatewayRoute) -> tuple[int, tuple[int, int, int, str]]:
    """Sort key for the routes of one virtual gateway: priority, then the same specificity rule."""
    spec = route.spec
    priority = spec.priority if spec.priority is not None else 1 << 30
    http = spec.http_route or spec.http2_route
    name = route.gateway_route_name
    if http is not None:
        match = http.match
        conditions = len(match.headers) + len(match.query_parameters)
        conditions += sum(x is not None for x in (match.method, match.port, match.hostname))
        exact = match.path.exact if match.path is not None else None
        other = match.path.regex if match.path is not None and match.path.regex is not None else match.prefix
        return priority, _http_specificity(exact, other, conditions, name)
    assert spec.grpc_route is not None
    grpc = spec.grpc_route.match
    rank = 0 if grpc.service_name is not None else 1
    conditions = len(grpc.metadata) + sum(x is not None for x in (grpc.port, grpc.hostname))
    return priority, (rank, 0, -conditions, name)


def _gateway_match_port(route: GatewayRoute) -> int | None:
    spec = route.spec
    http = spec.http_route or spec.http2_route
    if http is not None:
        return http.match.port
    return None if spec.grpc_route is None else spec.grpc_route.match.port


def _http_ports(table: RouteTable, tcp_ports: Mapping[int, RouteEntry]) -> frozenset[int]:
    """The ports of the `<service>:<port>` domains of the egress table that no TCP route claims."""
    ports = {
        int(port)
        for host in table.virtual_hosts
        for domain in host.domains
        for _, sep, port in [domain.rpartition(":")]
        if sep and port.isdigit()
    }
    return frozenset(ports - set(tcp_ports))


# --- the compiler -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Compiler:
    resources: MeshResources
    mesh: str
    egress_port: int
    egress_limits: ConnectionPoolLimits
    clusters: dict[str, Cluster] = field(default_factory=dict)
    tcp_routes: dict[int, RouteEntry] = field(default_factory=dict)
    tcp_owner: dict[int, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    # the client policy of the backend being compiled (its own, else backendDefaults): its clusters' TLS
    client_policies: dict[str, ClientPolicyTls] = field(default_factory=dict)
    default_policy: ClientPolicyTls | None = None
    policy: ClientPolicyTls | None = None

    # --- identities ---

    def node_snapshot(self, node: VirtualNode, identity: Identity, version: str) -> Snapshot:
        ingress = tuple(self._ingress(node, listener) for listener in node.spec.listeners)
        backends = tuple(dict.fromkeys(b.virtual_service_name for b in node.spec.backends))
        defaults = node.spec.backend_defaults
        self.default_policy = _policy_tls(None if defaults is None else defaults.client_policy)
        for backend in node.spec.backends:
            own = _policy_tls(backend.client_policy)
            if own is not None:  # a backend's own client policy replaces backendDefaults (spec §4.2)
                self.client_policies.setdefault(backend.virtual_service_name, own)
        egress = self._egress(backends, node.virtual_node_name)
        self._raise_issues()
        return Snapshot(
            version=version,
            identity=identity,
            egress_filter=self._egress_filter(),
            ingress=ingress,
            egress_routes=egress,
            tcp_routes=MappingProxyType(dict(sorted(self.tcp_routes.items()))),
            clusters=MappingProxyType(dict(self.clusters)),
            access_log=_access_log(node.spec.logging),
            backends=backends,
            http_ports=_http_ports(egress, self.tcp_routes),
        )

    def gateway_snapshot(self, gateway: VirtualGateway, identity: Identity, version: str) -> Snapshot:
        routes = sorted(
            self.resources.gateway_routes_of(self.mesh, gateway.virtual_gateway_name),
            key=gateway_route_order_key,
        )
        listeners = tuple(
            self._gateway_listener(gateway, listener, routes) for listener in gateway.spec.listeners
        )
        targets = tuple(dict.fromkeys(r.spec.action.target.virtual_service_name for r in routes))
        # a virtual gateway has only backendDefaults (user guide, mutual TLS: "Trust inside of a mesh")
        defaults = gateway.spec.backend_defaults
        self.default_policy = _policy_tls(None if defaults is None else defaults.client_policy)
        egress = self._egress(targets, gateway.virtual_gateway_name)
        self._raise_issues()
        return Snapshot(
            version=version,
            identity=identity,
            egress_filter=self._egress_filter(),
            ingress=(),
            egress_routes=egress,
            tcp_routes=MappingProxyType(dict(sorted(self.tcp_routes.items()))),
            clusters=MappingProxyType(dict(self.clusters)),
            gateway=listeners,
            access_log=_access_log(gateway.spec.logging),
            backends=targets,
        )

    def _raise_issues(self) -> None:
        if self.issues:
            raise ConfigError(self.issues)

    def _egress_filter(self) -> EgressFilter:
        mesh = self.resources.mesh(self.mesh)
        return EgressFilter.DROP_ALL if mesh is None else mesh.egress_filter

    # --- ingress ---

    def _ingress(self, node: VirtualNode, listener: Listener) -> IngressListener:
        port, protocol = listener.port_mapping.port, listener.port_mapping.protocol
        name = f"cds_ingress_{self.mesh}_{node.virtual_node_name}_{protocol}_{port}"
        self.clusters[name] = Cluster(
            name=name,
            discovery=StaticDiscovery(((self._local_address(node), port),)),
            protocol=protocol,
            virtual_node=node.virtual_node_name,
            limits=_limits(listener.connection_pool),
        )
        timeout, idle = _listener_timeouts(listener)
        return IngressListener(
            port=port,
            protocol=protocol,
            cluster=name,
            timeout=timeout,
            idle_timeout=idle,
            tls=_tls(listener.tls),
        )

    def _ip_preference(self, node: VirtualNode) -> str | None:
        discovery = node.spec.service_discovery
        preference = None
        if discovery is not None and discovery.dns is not None:
            preference = discovery.dns.ip_preference
        elif discovery is not None and discovery.aws_cloud_map is not None:
            preference = discovery.aws_cloud_map.ip_preference
        if preference is None:
            mesh = self.resources.mesh(self.mesh)
            preference = None if mesh is None else mesh.spec.ip_preference
        return preference

    def _local_address(self, node: VirtualNode) -> str:
        # the local app is reached over IPv6 loopback when the node prefers or requires IPv6 (spec §4.1)
        return _LOOPBACK_V6 if self._ip_preference(node) in _IPV6_FIRST else _LOOPBACK_V4

    # --- egress ---

    def _egress(self, service_names: Iterable[str], owner: str) -> RouteTable:
        hosts: list[VirtualHost] = []
        for name in service_names:
            service = self.resources.virtual_service(self.mesh, name)
            if service is None:
                self.issues.append(
                    Issue(
                        "virtualService",
                        name,
                        "",
                        f"not found in mesh {self.mesh!r} (a backend of {owner!r})",
                    )
                )
                continue
            self.policy = self.client_policies.get(name, self.default_policy)
            host = self._virtual_host(service)
            if host is not None:
                hosts.append(host)
        by_domain = {domain: host for host in hosts for domain in host.domains}
        return RouteTable(
            name=f"rds_egress_http_{self.egress_port}",
            virtual_hosts=tuple(hosts),
            by_domain=MappingProxyType(by_domain),
        )

    def _virtual_host(self, service: VirtualService) -> VirtualHost | None:
        name = service.virtual_service_name
        provider = service.spec.provider
        if provider is None:
            # not routed yet: the host exists so requests get a route-not-found reply, not a passthrough
            return VirtualHost(name=name, domains=(name,), routes=())
        if provider.virtual_node_name is not None:
            node = self.resources.virtual_node(self.mesh, provider.virtual_node_name)
            if node is None:
                self._not_found("virtualService", name, "virtual node", provider.virtual_node_name)
                return None
            return self._node_provider(service, node)
        assert provider.virtual_router_name is not None
        router = self.resources.virtual_router(self.mesh, provider.virtual_router_name)
        if router is None:
            self._not_found("virtualService", name, "virtual router", provider.virtual_router_name)
            return None
        mappings = [listener.port_mapping for listener in router.spec.listeners]
        routes = sorted(self.resources.routes_of(self.mesh, router.virtual_router_name), key=route_order_key)
        http_routes: list[RouteEntry] = []
        for route in routes:
            entry = self._route_entry(route, name)
            if entry is None:
                continue
            if route.spec.tcp_route is None:
                http_routes.append(entry)
                continue
            for mapping in mappings:
                wanted = route.spec.tcp_route.match_port
                if mapping.protocol is ListenerProtocol.TCP and wanted in (None, mapping.port):
                    self._claim_tcp(mapping.port, name, entry)
        http_mappings = [m for m in mappings if m.protocol is not ListenerProtocol.TCP]
        if not http_mappings:
            return None
        return VirtualHost(
            name=name,
            domains=(name, *(f"{name}:{m.port}" for m in http_mappings)),
            routes=tuple(http_routes),
            protocol=http_mappings[0].protocol,
        )

    def _node_provider(self, service: VirtualService, node: VirtualNode) -> VirtualHost | None:
        """App Mesh's implicit route to a virtual-node provider (spec §4.3): prefix "/", default retries."""
        name = service.virtual_service_name
        http = [lst for lst in node.spec.listeners if lst.port_mapping.protocol is not ListenerProtocol.TCP]
        routes: list[RouteEntry] = []
        for listener in node.spec.listeners:
            port, protocol = listener.port_mapping.port, listener.port_mapping.protocol
            cluster = self._egress_cluster(node, listener)
            target = (WeightedCluster(cluster=cluster, weight=100, virtual_node=node.virtual_node_name),)
            if protocol is ListenerProtocol.TCP:
                entry = RouteEntry(
                    name=name,
                    match=RouteMatch(port=port),
                    targets=target,
                    total_weight=100,
                    retry=DEFAULT_TCP_RETRY_POLICY,
                    timeout=None,
                    idle_timeout=DEFAULT_IDLE_S,
                    protocol=protocol,
                    virtual_service=name,
                )
                self._claim_tcp(port, name, entry)
                continue
            routes.append(
                RouteEntry(
                    name=name,
                    match=RouteMatch(prefix="/", port=port if len(http) > 1 else None),
                    targets=target,
                    total_weight=100,
                    retry=DEFAULT_RETRY_POLICY,
                    timeout=DEFAULT_PER_REQUEST_S,
                    idle_timeout=DEFAULT_IDLE_S,
                    protocol=protocol,
                    virtual_service=name,
                )
            )
        if not http:
            return None
        return VirtualHost(
            name=name,
            domains=(name, *(f"{name}:{lst.port_mapping.port}" for lst in http)),
            routes=tuple(routes),
            protocol=http[0].port_mapping.protocol,
        )

    def _claim_tcp(self, port: int, service: str, entry: RouteEntry) -> None:
        owner = self.tcp_owner.setdefault(port, service)
        if owner != service:
            self.issues.append(
                Issue(
                    "virtualService",
                    service,
                    "",
                    f"TCP port {port} is also served by {owner!r}: meshproxy routes egress TCP by "
                    "destination port, so two backends cannot share one",
                )
            )
            return
        self.tcp_routes.setdefault(port, entry)  # the first route in match order wins

    def _not_found(self, kind: str, name: str, what: str, target: str) -> None:
        self.issues.append(Issue(kind, name, "", f"{what} {target!r} not found in mesh {self.mesh!r}"))

    def _route_entry(self, route: Route, service: str) -> RouteEntry | None:
        spec = route.spec
        targets: list[WeightedCluster] = []
        for target in spec.action.weighted_targets:
            node = self.resources.virtual_node(self.mesh, target.virtual_node)
            listener = None
            if node is not None:
                listener = (
                    node.listener(target.port)
                    if target.port is not None
                    else next(iter(node.spec.listeners), None)
                )
            if node is None or listener is None:
                self.issues.append(
                    Issue(
                        "route",
                        f"{route.virtual_router_name}/{route.route_name}",
                        "",
                        f"target virtual node {target.virtual_node!r} (port {target.port}) has no such "
                        "listener",
                    )
                )
                return None
            targets.append(
                WeightedCluster(
                    cluster=self._egress_cluster(node, listener),
                    weight=target.weight,
                    virtual_node=node.virtual_node_name,
                )
            )
        retry: RetryPolicy | None
        timeout: float | None
        http = spec.http_route or spec.http2_route
        if http is not None:
            match = http.match
            timeout, idle = _http_timeouts(http.timeout)
            retry = retry_policy(http.retry_policy)
            path = match.path
            route_match = RouteMatch(
                prefix=match.prefix,
                path_exact=None if path is None else path.exact,
                path_regex=None if path is None or path.regex is None else re.compile(path.regex),
                method=match.method,
                scheme=match.scheme,
                port=match.port,
                headers=tuple(_value_match(h) for h in match.headers),
                query=tuple(_query_match(q) for q in match.query_parameters),
            )
        elif spec.grpc_route is not None:
            grpc = spec.grpc_route
            timeout, idle = _http_timeouts(grpc.timeout)
            retry = retry_policy(grpc.retry_policy)
            route_match = RouteMatch(
                port=grpc.match.port,
                headers=tuple(_value_match(m) for m in grpc.match.metadata),
                grpc_service=grpc.match.service_name,
                grpc_method=grpc.match.method_name,
            )
        else:
            assert spec.tcp_route is not None
            retry, timeout, idle = DEFAULT_TCP_RETRY_POLICY, None, _tcp_idle(spec.tcp_route.timeout)
            route_match = RouteMatch(port=spec.tcp_route.match_port)
        return RouteEntry(
            name=f"{route.virtual_router_name}/{route.route_name}",
            match=route_match,
            targets=tuple(targets),
            total_weight=sum(t.weight for t in targets),
            retry=retry,
            timeout=timeout,
            idle_timeout=idle,
            priority=spec.priority,
            protocol=spec.protocol,
            virtual_service=service,
        )

    def _egress_cluster(self, node: VirtualNode, listener: Listener) -> str:
        port, protocol = listener.port_mapping.port, listener.port_mapping.protocol
        name = f"cds_egress_{self.mesh}_{node.virtual_node_name}_{protocol}_{port}"
        if name in self.clusters:
            return name
        health = listener.health_check
        outlier = listener.outlier_detection
        self.clusters[name] = Cluster(
            name=name,
            discovery=self._discovery(node, port),
            protocol=protocol,
            virtual_node=node.virtual_node_name,
            connect_timeout=CONNECT_TIMEOUT_S,
            # connection pools apply on the destination side (the target's ingress), not here (spec §4.2);
            # the thresholds here are a cluster's own (App Mesh: unlimited; meshproxy runs Envoy's defaults)
            limits=self.egress_limits,
            outlier=None
            if outlier is None
            else OutlierDetection(
                max_server_errors=outlier.max_server_errors,
                interval=outlier.interval.seconds,
                base_ejection=outlier.base_ejection_duration.seconds,
                max_ejection_percent=outlier.max_ejection_percent,
            ),
            health_check=None
            if health is None
            else HealthCheck(
                protocol=health.protocol,
                interval=health.interval_millis / 1000.0,
                timeout=health.timeout_millis / 1000.0,
                healthy_threshold=health.healthy_threshold,
                unhealthy_threshold=health.unhealthy_threshold,
                path=health.path,
                port=health.port,
            ),
            # The first backend to reach a cluster decides its TLS (validation warns when two disagree).
            tls=origination(self.policy, listener, _discovery_names(node)),
        )
        return name

    def _discovery(self, node: VirtualNode, port: int) -> Discovery:
        discovery = node.spec.service_discovery
        preference = self._ip_preference(node)
        if discovery is not None and discovery.aws_cloud_map is not None:
            cloud_map = discovery.aws_cloud_map
            return CloudMapDiscovery(
                namespace=cloud_map.namespace_name,
                service=cloud_map.service_name,
                port=port,
                attributes=cloud_map.attributes,
                ip_preference=preference,
            )
        if discovery is None or discovery.dns is None:
            self.issues.append(
                Issue(
                    "virtualNode",
                    node.virtual_node_name,
                    "spec.serviceDiscovery",
                    "required to route to the node",
                )
            )
            return StaticDiscovery(())
        return DnsDiscovery(
            hostname=discovery.dns.hostname,
            port=port,
            response_type=discovery.dns.response_type or "LOADBALANCER",
            ip_preference=preference,
        )

    # --- gateway ---

    def _gateway_listener(
        self, gateway: VirtualGateway, listener: Listener, routes: Sequence[GatewayRoute]
    ) -> GatewayListener:
        port, protocol = listener.port_mapping.port, listener.port_mapping.protocol
        member = {
            ListenerProtocol.HTTP: "httpRoute",
            ListenerProtocol.HTTP2: "http2Route",
            ListenerProtocol.GRPC: "grpcRoute",
        }.get(protocol)
        entries = []
        for route in routes:
            spec = route.spec
            if spec.route_type != member:
                continue
            match_port = _gateway_match_port(route)
            if match_port is not None and match_port != port:
                continue
            entries.append(self._gateway_entry(gateway, route, protocol))
        host = VirtualHost(name="*", domains=("*",), routes=tuple(entries), protocol=protocol)
        return GatewayListener(
            port=port,
            protocol=protocol,
            routes=RouteTable(
                name=f"rds_gateway_{protocol}_{port}",
                virtual_hosts=(host,),
                by_domain=MappingProxyType({"*": host}),
            ),
            limits=_limits(listener.connection_pool),
            tls=_tls(listener.tls),
        )

    def _self_redirect(self, protocol: ListenerProtocol) -> str:
        name = f"cds_gateway_self_redirect_{protocol}_{self.egress_port}"
        if name not in self.clusters:
            self.clusters[name] = Cluster(
                name=name,
                discovery=StaticDiscovery(((_LOOPBACK_V4, self.egress_port),)),
                protocol=protocol,
                virtual_node="",
                connect_timeout=SELF_REDIRECT_CONNECT_TIMEOUT_S,
            )
        return name

    def _gateway_entry(
        self, gateway: VirtualGateway, route: GatewayRoute, protocol: ListenerProtocol
    ) -> RouteEntry:
        spec = route.spec
        action = spec.action
        target = action.target
        rewrite = action.rewrite
        service = target.virtual_service_name
        host = service if target.port is None else f"{service}:{target.port}"
        # hostname: rewritten to the target virtual service unless DISABLED (spec §4.7)
        hostname = None if rewrite is not None and rewrite.default_target_hostname == "DISABLED" else host
        prefix_rewrite = exact_rewrite = None
        http = spec.http_route or spec.http2_route
        if http is not None:
            match = http.match
            if rewrite is not None and rewrite.path_exact is not None:
                exact_rewrite = rewrite.path_exact
            elif match.prefix is not None:
                # by default the matched prefix is replaced with "/" (spec §4.7)
                if rewrite is not None and rewrite.prefix_value is not None:
                    prefix_rewrite = rewrite.prefix_value
                elif rewrite is None or rewrite.prefix_default != "DISABLED":
                    prefix_rewrite = "/"
            route_match = RouteMatch(
                prefix=match.prefix,
                path_exact=match.path.exact if match.path is not None else None,
                path_regex=re.compile(match.path.regex)
                if match.path is not None and match.path.regex
                else None,
                method=match.method,
                port=match.port,
                headers=tuple(_value_match(h) for h in match.headers),
                query=tuple(_query_match(q) for q in match.query_parameters),
                hostname_exact=None
                if match.hostname is None or match.hostname.exact is None
                else match.hostname.exact.lower(),
                hostname_suffix=None
                if match.hostname is None or match.hostname.suffix is None
                else match.hostname.suffix.lower(),
            )
        else:
            assert spec.grpc_route is not None
            grpc = spec.grpc_route.match
            route_match = RouteMatch(
                port=grpc.port,
                headers=tuple(_value_match(m) for m in grpc.metadata),
                grpc_service=grpc.service_name,
                hostname_exact=None
                if grpc.hostname is None or grpc.hostname.exact is None
                else grpc.hostname.exact.lower(),
                hostname_suffix=None
                if grpc.hostname is None or grpc.hostname.suffix is None
                else grpc.hostname.suffix.lower(),
            )
        path_rewrite = None
        if hostname is not None or prefix_rewrite is not None or exact_rewrite is not None:
            path_rewrite = PathRewrite(prefix=prefix_rewrite, exact=exact_rewrite, hostname=hostname)
        return RouteEntry(
            name=f"{gateway.virtual_gateway_name}/{route.gateway_route_name}",
            match=route_match,
            targets=(WeightedCluster(cluster=self._self_redirect(protocol), weight=100, virtual_node=""),),
            total_weight=100,
            # retries and the target's routes are applied by the egress hop; gateway routes have no policy
            retry=None,
            timeout=DEFAULT_PER_REQUEST_S,
            idle_timeout=DEFAULT_IDLE_S,
            priority=spec.priority,
            protocol=protocol,
            rewrite=path_rewrite,
            virtual_service=service,
        )
