"""The compiled, immutable configuration the data plane runs on.

`compile.py` turns App Mesh resources plus this proxy's identity into one `Snapshot`. Nothing on the request
path reads raw resources: a request captures the snapshot once at its start and only reads these values.
Regexes are compiled here, once; durations are float seconds, and ``None`` means "disabled" (App Mesh's 0).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class ListenerProtocol(enum.StrEnum):
    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"


class ResourceKind(enum.StrEnum):
    VIRTUAL_NODE = "virtualNode"
    VIRTUAL_GATEWAY = "virtualGateway"


class EgressFilter(enum.StrEnum):
    DROP_ALL = "DROP_ALL"
    ALLOW_ALL = "ALLOW_ALL"


class StringMatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"
    RANGE = "range"
    PRESENT = "present"  # App Mesh header/query match with no `match` member: the name must be present


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this proxy is: parsed from APPMESH_RESOURCE_ARN (or its legacy fallbacks)."""

    node_id: str  # verbatim, as Envoy's node.id
    mesh: str  # may carry `@<owner account>` on K8s for shared meshes; `mesh_name` strips it
    kind: ResourceKind
    name: str
    node_cluster: str  # APPMESH_RESOURCE_CLUSTER or node_id

    @property
    def mesh_name(self) -> str:
        return self.mesh.split("@", 1)[0]


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """One header / query / gRPC-metadata condition. `name` is lower-cased for headers and metadata."""

    name: str
    kind: StringMatchKind
    value: str = ""  # exact / prefix / suffix value
    pattern: re.Pattern[str] | None = None  # REGEX, compiled once, matched with fullmatch (RE2 semantics)
    range_start: int = 0  # RANGE: start inclusive
    range_end: int = 0  # RANGE: end exclusive
    invert: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What an HTTP request must look like for a route. Unset members match everything."""

    prefix: str | None = None
    path_exact: str | None = None
    path_regex: re.Pattern[str] | None = None
    method: str | None = None
    scheme: str | None = None
    port: int | None = None
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()
    # gRPC routes: service / method are matched against the `/<service>/<method>` path
    grpc_service: str | None = None
    grpc_method: str | None = None
    # gateway routes: Host / :authority without the port, compared case-insensitively (values are lower-case)
    hostname_exact: str | None = None
    hostname_suffix: str | None = None


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: str  # key into Snapshot.clusters
    weight: int
    virtual_node: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """App Mesh retry policy as Envoy rendered it (spec §4.5).

    `per_try_timeout` of None means the attempt is only bounded by the route's per-request timeout.
    """

    max_retries: int
    per_try_timeout: float | None
    retriable_statuses: frozenset[int] = frozenset()  # server-error / gateway-error / client-error
    retry_on_reset: bool = False  # upstream reset / disconnect before a response (server/gateway-error)
    retry_on_connect_failure: bool = False  # tcpRetryEvents connection-error
    retry_on_refused_stream: bool = False  # stream-error
    grpc_statuses: frozenset[int] = frozenset()  # numeric grpc-status codes
    is_default: bool = False  # App Mesh's implicit default policy (no policy on the route)


@dataclass(frozen=True, slots=True)
class PathRewrite:
    """Gateway-route rewrites (spec §4.7). `prefix` replaces the matched prefix; `exact` the whole path."""

    prefix: str | None = None
    exact: str | None = None
    hostname: str | None = None  # Host / :authority replacement (defaultTargetHostname ENABLED)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One compiled App Mesh route (or the implicit route of a virtual-node provider)."""

    name: str  # `<virtualRouter>/<route>` or `<virtualService>` for the implicit route
    match: RouteMatch
    targets: tuple[WeightedCluster, ...]
    total_weight: int
    retry: RetryPolicy | None
    timeout: float | None  # perRequest; None = disabled
    idle_timeout: float | None
    priority: int | None = None
    protocol: ListenerProtocol = ListenerProtocol.HTTP
    rewrite: PathRewrite | None = None
    virtual_service: str = ""  # the virtual service this route serves (metrics: TargetVirtualService)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """One virtual service reachable from this node: the domains it answers to, its routes in match order."""

    name: str  # virtual service name
    domains: tuple[str, ...]  # `<vs>` and `<vs>:<port>` for each provider listener port
    routes: tuple[RouteEntry, ...]
    protocol: ListenerProtocol = ListenerProtocol.HTTP
    # Derived once: whether any route matches on the port (then the request's port must be looked up).
    matches_port: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches_port", any(r.match.port is not None for r in self.routes))


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Egress (or gateway) HTTP routes: Host/:authority -> VirtualHost -> first matching RouteEntry."""

    name: str  # e.g. rds_egress_http_15001
    virtual_hosts: tuple[VirtualHost, ...]
    by_domain: Mapping[str, VirtualHost] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class DnsDiscovery:
    hostname: str
    port: int
    response_type: str = "LOADBALANCER"  # or ENDPOINTS
    ip_preference: str | None = None


@dataclass(frozen=True, slots=True)
class StaticDiscovery:
    addresses: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CloudMapDiscovery:
    namespace: str
    service: str
    port: int
    attributes: tuple[tuple[str, str], ...] = ()
    ip_preference: str | None = None


Discovery = DnsDiscovery | StaticDiscovery | CloudMapDiscovery


@dataclass(frozen=True, slots=True)
class ConnectionPoolLimits:
    """Envoy circuit breakers. App Mesh's defaults are 'effectively unlimited' (2147483647)."""

    max_connections: int = 2147483647
    max_pending_requests: int = 2147483647
    max_requests: int = 2147483647


APP_MESH_LIMITS = ConnectionPoolLimits()  # what App Mesh rendered for every cluster without a connectionPool
# Envoy's own default thresholds per cluster (cluster.proto CircuitBreakers: 1024 connections, pending and
# requests). meshproxy applies them to egress clusters (MESHPROXY_EGRESS_MAX_*): App Mesh rendered 2147483647
# there, which let one failing backend hold any number of connections and queued requests.
ENVOY_DEFAULT_LIMITS = ConnectionPoolLimits(1024, 1024, 1024)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retries a cluster allows, following its recent success rate (router/retry.py).

    gRPC's retry throttling (gRFC A6) as a token bucket per cluster: every attempt that fails takes a token,
    every attempt that succeeds gives back `token_ratio`; retries go while more than half of `max_tokens`
    are left, so they flow freely while most attempts succeed (with the default ratio of 1, while more than
    half do) and stop when most fail. Beyond that, `min_retries_per_second` retries are always allowed (a
    floor, as linkerd's budgets have). A retry the budget refuses counts `upstream_rq_retry_overflow` and
    the response (or failure) stands, flagged UO, as Envoy's `max_retries` breaker does.
    """

    max_tokens: float = 100.0
    token_ratio: float = 1.0
    min_retries_per_second: float = 5.0


DEFAULT_RETRY_BUDGET = RetryBudget()


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    max_server_errors: int
    interval: float
    base_ejection: float
    max_ejection_percent: int


@dataclass(frozen=True, slots=True)
class HealthCheck:
    protocol: ListenerProtocol
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    path: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class CertificateSource:
    """A certificate chain and its private key (spec §4.2 `certificate`): two PEM files, or an SDS secret."""

    certificate_chain: str | None = None
    private_key: str | None = None
    sds_secret: str | None = None

    def describe(self) -> str:
        """For log lines: the file or the secret."""
        return f"SDS secret {self.sds_secret!r}" if self.sds_secret else f"file {self.certificate_chain}"


@dataclass(frozen=True, slots=True)
class PeerValidation:
    """How a peer's certificate is checked (spec §4.2 `validation`): the trust bundle (a PEM file or an SDS
    secret) and the subject alternative names to accept (empty: any name the trusted CA signed)."""

    trust_file: str | None = None
    trust_sds_secret: str | None = None
    subject_alternative_names: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"SDS secret {self.trust_sds_secret!r}" if self.trust_sds_secret else f"file {self.trust_file}"


@dataclass(frozen=True, slots=True)
class TlsOrigination:
    """TLS from this proxy to a cluster's hosts: a client policy (spec §4.2 `clientPolicy.tls`), or App
    Mesh's server-driven default (the target listener terminates TLS and no client policy covers its port:
    TLS is negotiated and the server's certificate is not validated, `validation` None)."""

    validation: PeerValidation | None
    certificate: CertificateSource | None = None  # the client certificate (mTLS)


@dataclass(frozen=True, slots=True)
class Cluster:
    """An upstream: the local app (ingress) or a backend virtual node (egress)."""

    name: str  # cds_<direction>_<mesh>_<node>_<protocol>_<port>
    discovery: Discovery
    protocol: ListenerProtocol
    virtual_node: str
    connect_timeout: float = 1.0
    limits: ConnectionPoolLimits = ConnectionPoolLimits()
    outlier: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    tls: TlsOrigination | None = None


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str
    text_format: str | None = None  # Envoy format string; None and no json = Envoy's default format
    json_format: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class TlsTermination:
    """A listener's `tls` (spec §4.2, §4.6): STRICT (TLS only) or PERMISSIVE (TLS and plaintext); DISABLED
    listeners compile to no termination. With `validation` the listener asks for a client certificate (mTLS)
    and checks it; a STRICT listener then requires one, a PERMISSIVE one accepts clients without."""

    mode: str  # STRICT | PERMISSIVE
    certificate: CertificateSource
    validation: PeerValidation | None = None

    @property
    def require_client_certificate(self) -> bool:
        return self.validation is not None and self.mode == "STRICT"


@dataclass(frozen=True, slots=True)
class IngressListener:
    """A virtual-node listener: traffic redirected to the ingress port for `port` goes to the local app."""

    port: int
    protocol: ListenerProtocol
    cluster: str  # cds_ingress_<mesh>_<node>_<proto>_<port>, 127.0.0.1:<port>
    timeout: float | None = 15.0  # perRequest
    idle_timeout: float | None = 300.0
    tls: TlsTermination | None = None


@dataclass(frozen=True, slots=True)
class GatewayListener:
    """A virtual-gateway listener: bound directly on `port`, routed through `routes`."""

    port: int
    protocol: ListenerProtocol
    routes: RouteTable
    limits: ConnectionPoolLimits = ConnectionPoolLimits()
    tls: TlsTermination | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one proxy needs, for one identity, at one config version."""

    version: str
    identity: Identity
    egress_filter: EgressFilter
    ingress: tuple[IngressListener, ...]
    egress_routes: RouteTable
    tcp_routes: Mapping[int, RouteEntry]  # egress TCP: original destination port -> route
    clusters: Mapping[str, Cluster]
    gateway: tuple[GatewayListener, ...] = ()
    access_log: AccessLogConfig | None = None
    backends: tuple[str, ...] = ()  # virtual service names this node may call
    # Ports the node's HTTP backends (http, http2, grpc) listen on: an egress connection to one of them is
    # HTTP even while it is silent (a client that connects first and sends later), never server-first TCP.
    http_ports: frozenset[int] = frozenset()
