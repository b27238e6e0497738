"""Typed App Mesh resources: the seven resource types and their specs, as the App Mesh API defines them.

Field names are the API's member names in snake_case (`portMapping` -> `port_mapping`), so a path in an error
message maps one-to-one onto these classes. Three simplifications, each documented where it happens:

- single-member wrapper structures are folded into their parent (`backends[].virtualService` ->
  `VirtualServiceBackend`, `logging.accessLog.file` -> `Logging.access_log`, `egressFilter.type` ->
  `MeshSpec.egress_filter`, `subjectAlternativeNames.match.exact` -> a tuple of names,
  `target.virtualService.virtualServiceName` -> `GatewayRouteTarget.virtual_service_name`,
  `rewrite.hostname.defaultTargetHostname` -> `default_target_hostname`, `rewrite.path.exact` ->
  `path_exact`), and the small TLS unions are flattened into prefixed fields
  (`certificate.file.certificateChain` -> `file_certificate_chain`,
  `validation.trust.acm.certificateAuthorityArns` -> `acm_certificate_authority_arns`);
- shapes that are identical in the API share one class (`HttpTimeout` also serves gRPC, the header match
  classes also serve gRPC metadata and gateway routes, `RouteAction` serves all route types);
- the virtual-gateway listener/TLS shapes reuse the virtual-node classes (the shape table in `shapes.py` still
  checks each against its own API shape).

Every value here has already passed `shapes.py` and `validate.py`; nothing on the request path reads it
(`compile.py` turns it into a `Snapshot`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from meshproxy.config.snapshot import EgressFilter, ListenerProtocol


class ResourceType(enum.StrEnum):
    """An App Mesh resource type, spelled as the API (and every error message) spells it."""

    MESH = "mesh"
    VIRTUAL_NODE = "virtualNode"
    VIRTUAL_SERVICE = "virtualService"
    VIRTUAL_ROUTER = "virtualRouter"
    ROUTE = "route"
    VIRTUAL_GATEWAY = "virtualGateway"
    GATEWAY_ROUTE = "gatewayRoute"


@dataclass(frozen=True, slots=True)
class ResourceTypeInfo:
    """How a resource type appears in the API: its names, spec shape and `list-*` key."""

    name_members: tuple[
        str, ...
    ]  # identifying members, outermost first; the last one is the resource's own name
    name_shapes: tuple[str, ...]
    spec_shape: str
    list_key: str  # `list-*` / export bundle key, e.g. "virtualNodes"
    spec_required: bool = True


RESOURCE_TYPES: Final[MappingProxyType[ResourceType, ResourceTypeInfo]] = MappingProxyType(
    {
        ResourceType.MESH: ResourceTypeInfo(("meshName",), ("ResourceName",), "MeshSpec", "meshes", False),
        ResourceType.VIRTUAL_NODE: ResourceTypeInfo(
            ("meshName", "virtualNodeName"),
            ("ResourceName", "ResourceName"),
            "VirtualNodeSpec",
            "virtualNodes",
        ),
        ResourceType.VIRTUAL_SERVICE: ResourceTypeInfo(
            ("meshName", "virtualServiceName"),
            ("ResourceName", "ServiceName"),
            "VirtualServiceSpec",
            "virtualServices",
        ),
        ResourceType.VIRTUAL_ROUTER: ResourceTypeInfo(
            ("meshName", "virtualRouterName"),
            ("ResourceName", "ResourceName"),
            "VirtualRouterSpec",
            "virtualRouters",
        ),
        ResourceType.ROUTE: ResourceTypeInfo(
            ("meshName", "virtualRouterName", "routeName"),
            ("ResourceName", "ResourceName", "ResourceName"),
            "RouteSpec",
            "routes",
        ),
        ResourceType.VIRTUAL_GATEWAY: ResourceTypeInfo(
            ("meshName", "virtualGatewayName"),
            ("ResourceName", "ResourceName"),
            "VirtualGatewaySpec",
            "virtualGateways",
        ),
        ResourceType.GATEWAY_ROUTE: ResourceTypeInfo(
            ("meshName", "virtualGatewayName", "gatewayRouteName"),
            ("ResourceName", "ResourceName", "ResourceName"),
            "GatewayRouteSpec",
            "gatewayRoutes",
        ),
    }
)


# --- shared shapes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duration:
    value: int
    unit: str  # "s" | "ms"

    @property
    def seconds(self) -> float:
        return self.value / 1000.0 if self.unit == "ms" else float(self.value)


@dataclass(frozen=True, slots=True)
class PortMapping:
    port: int
    protocol: ListenerProtocol


@dataclass(frozen=True, slots=True)
class HttpTimeout:
    """`HttpTimeout` (http, http2) and `GrpcTimeout` (same members)."""

    per_request: Duration | None = None
    idle: Duration | None = None


@dataclass(frozen=True, slots=True)
class TcpTimeout:
    idle: Duration | None = None


@dataclass(frozen=True, slots=True)
class MatchRange:
    start: int  # inclusive
    end: int  # exclusive


@dataclass(frozen=True, slots=True)
class HeaderMatchMethod:
    """Union: exactly one member is set. Also `GrpcRouteMetadataMatchMethod` / `GrpcMetadataMatchMethod`."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    range: MatchRange | None = None


@dataclass(frozen=True, slots=True)
class HttpRouteHeader:
    """A header (or gRPC metadata) condition; `match` None means the header must be present."""

    name: str
    invert: bool = False
    match: HeaderMatchMethod | None = None


@dataclass(frozen=True, slots=True)
class QueryParameterMatch:
    exact: str | None = None


@dataclass(frozen=True, slots=True)
class HttpQueryParameter:
    name: str
    match: QueryParameterMatch | None = None  # None: the parameter must be present


@dataclass(frozen=True, slots=True)
class HttpPathMatch:
    exact: str | None = None
    regex: str | None = None


# --- TLS --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenerTlsCertificate:
    """Union of `acm{certificateArn}`, `file{certificateChain, privateKey}`, `sds{secretName}`."""

    acm_certificate_arn: str | None = None
    file_certificate_chain: str | None = None
    file_private_key: str | None = None
    sds_secret_name: str | None = None


@dataclass(frozen=True, slots=True)
class TlsValidationContext:
    """`trust` union (acm / file / sds) plus the exact subject alternative names to accept."""

    acm_certificate_authority_arns: tuple[str, ...] = ()
    file_certificate_chain: str | None = None
    sds_secret_name: str | None = None
    subject_alternative_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerTls:
    mode: str  # STRICT | PERMISSIVE | DISABLED
    certificate: ListenerTlsCertificate
    validation: TlsValidationContext | None = None


@dataclass(frozen=True, slots=True)
class ClientPolicyTls:
    validation: TlsValidationContext
    enforce: bool = True  # the API's default
    ports: tuple[int, ...] = ()  # empty = every port
    certificate: ListenerTlsCertificate | None = None  # client certificate for mTLS (file or sds)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    tls: ClientPolicyTls | None = None


@dataclass(frozen=True, slots=True)
class BackendDefaults:
    client_policy: ClientPolicy | None = None


# --- listeners --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenerTimeout:
    """Union by protocol: exactly one member is set, and it must match the listener's protocol."""

    http: HttpTimeout | None = None
    http2: HttpTimeout | None = None
    grpc: HttpTimeout | None = None
    tcp: TcpTimeout | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """`VirtualNodeConnectionPool` / `VirtualGatewayConnectionPool`, a union by protocol.

    `protocol` says which member was set; http uses max_connections (+ max_pending_requests), http2 and grpc
    use max_requests, tcp uses max_connections.
    """

    protocol: ListenerProtocol
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    max_server_errors: int
    interval: Duration
    base_ejection_duration: Duration
    max_ejection_percent: int


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    protocol: ListenerProtocol
    interval_millis: int
    timeout_millis: int
    healthy_threshold: int
    unhealthy_threshold: int
    path: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    """A virtual-node listener (a virtual-gateway listener has no timeout / outlier detection)."""

    port_mapping: PortMapping
    connection_pool: ConnectionPool | None = None
    health_check: HealthCheckPolicy | None = None
    outlier_detection: OutlierDetection | None = None
    timeout: ListenerTimeout | None = None
    tls: ListenerTls | None = None


# --- logging, discovery -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggingFormat:
    text: str | None = None
    json: tuple[tuple[str, str], ...] | None = None  # JsonFormatRef {key, value} pairs, in order


@dataclass(frozen=True, slots=True)
class FileAccessLog:
    path: str
    format: LoggingFormat | None = None


@dataclass(frozen=True, slots=True)
class Logging:
    access_log: FileAccessLog | None = None  # accessLog.file


@dataclass(frozen=True, slots=True)
class DnsServiceDiscovery:
    hostname: str
    response_type: str | None = None  # LOADBALANCER (default) | ENDPOINTS
    ip_preference: str | None = None


@dataclass(frozen=True, slots=True)
class AwsCloudMapServiceDiscovery:
    namespace_name: str
    service_name: str
    attributes: tuple[tuple[str, str], ...] = ()  # AwsCloudMapInstanceAttribute {key, value} pairs
    ip_preference: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceDiscovery:
    dns: DnsServiceDiscovery | None = None
    aws_cloud_map: AwsCloudMapServiceDiscovery | None = None


# --- resources --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshSpec:
    egress_filter: EgressFilter | None = None  # egressFilter.type; None = the API default, DROP_ALL
    ip_preference: str | None = None  # serviceDiscovery.ipPreference


@dataclass(frozen=True, slots=True)
class Mesh:
    mesh_name: str
    spec: MeshSpec = MeshSpec()
    implicit: bool = False  # referenced by resources but not defined: App Mesh defaults assumed
    source: str = field(default="", compare=False)

    @property
    def egress_filter(self) -> EgressFilter:
        return self.spec.egress_filter or EgressFilter.DROP_ALL


@dataclass(frozen=True, slots=True)
class VirtualServiceBackend:
    """`backends[].virtualService` (the `Backend` union has only this member)."""

    virtual_service_name: str
    client_policy: ClientPolicy | None = None


@dataclass(frozen=True, slots=True)
class VirtualNodeSpec:
    listeners: tuple[Listener, ...] = ()
    backends: tuple[VirtualServiceBackend, ...] = ()
    backend_defaults: BackendDefaults | None = None
    service_discovery: ServiceDiscovery | None = None
    logging: Logging | None = None


@dataclass(frozen=True, slots=True)
class VirtualNode:
    mesh_name: str
    virtual_node_name: str
    spec: VirtualNodeSpec
    source: str = field(default="", compare=False)

    def listener(self, port: int) -> Listener | None:
        return next((lst for lst in self.spec.listeners if lst.port_mapping.port == port), None)


@dataclass(frozen=True, slots=True)
class VirtualServiceProvider:
    """Union: `virtualNode.virtualNodeName` or `virtualRouter.virtualRouterName`."""

    virtual_node_name: str | None = None
    virtual_router_name: str | None = None


@dataclass(frozen=True, slots=True)
class VirtualServiceSpec:
    provider: VirtualServiceProvider | None = None  # None: the service is not routed yet


@dataclass(frozen=True, slots=True)
class VirtualService:
    mesh_name: str
    virtual_service_name: str
    spec: VirtualServiceSpec
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class VirtualRouterListener:
    port_mapping: PortMapping


@dataclass(frozen=True, slots=True)
class VirtualRouterSpec:
    listeners: tuple[VirtualRouterListener, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualRouter:
    mesh_name: str
    virtual_router_name: str
    spec: VirtualRouterSpec
    source: str = field(default="", compare=False)


# --- routes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeightedTarget:
    virtual_node: str
    weight: int
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RouteAction:
    """`HttpRouteAction` / `GrpcRouteAction` / `TcpRouteAction`."""

    weighted_targets: tuple[WeightedTarget, ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`HttpRetryPolicy` and `GrpcRetryPolicy` (the latter adds `grpc_retry_events`)."""

    max_retries: int
    per_retry_timeout: Duration
    http_retry_events: tuple[str, ...] = ()
    tcp_retry_events: tuple[str, ...] = ()
    grpc_retry_events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpRouteMatch:
    prefix: str | None = None
    path: HttpPathMatch | None = None
    method: str | None = None
    scheme: str | None = None
    headers: tuple[HttpRouteHeader, ...] = ()
    query_parameters: tuple[HttpQueryParameter, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """`httpRoute` and `http2Route`."""

    match: HttpRouteMatch
    action: RouteAction
    retry_policy: RetryPolicy | None = None
    timeout: HttpTimeout | None = None


@dataclass(frozen=True, slots=True)
class GrpcRouteMatch:
    service_name: str | None = None
    method_name: str | None = None
    metadata: tuple[HttpRouteHeader, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class GrpcRoute:
    match: GrpcRouteMatch
    action: RouteAction
    retry_policy: RetryPolicy | None = None
    timeout: HttpTimeout | None = None


@dataclass(frozen=True, slots=True)
class TcpRoute:
    action: RouteAction
    match_port: int | None = None  # match.port
    timeout: TcpTimeout | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Exactly one of the four route members is set."""

    priority: int | None = None
    http_route: HttpRoute | None = None
    http2_route: HttpRoute | None = None
    grpc_route: GrpcRoute | None = None
    tcp_route: TcpRoute | None = None

    @property
    def route_type(self) -> str:
        """The API member that is set: httpRoute | http2Route | grpcRoute | tcpRoute."""
        for member, value in (
            ("httpRoute", self.http_route),
            ("http2Route", self.http2_route),
            ("grpcRoute", self.grpc_route),
            ("tcpRoute", self.tcp_route),
        ):
            if value is not None:
                return member
        raise ValueError("route spec without a route")

    @property
    def protocol(self) -> ListenerProtocol:
        return ROUTE_TYPE_PROTOCOLS[self.route_type]

    @property
    def action(self) -> RouteAction:
        route = self.http_route or self.http2_route or self.grpc_route or self.tcp_route
        if route is None:
            raise ValueError("route spec without a route")
        return route.action


ROUTE_TYPE_PROTOCOLS: Final[MappingProxyType[str, ListenerProtocol]] = MappingProxyType(
    {
        "httpRoute": ListenerProtocol.HTTP,
        "http2Route": ListenerProtocol.HTTP2,
        "grpcRoute": ListenerProtocol.GRPC,
        "tcpRoute": ListenerProtocol.TCP,
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    mesh_name: str
    virtual_router_name: str
    route_name: str
    spec: RouteSpec
    source: str = field(default="", compare=False)


# --- virtual gateways -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VirtualGatewaySpec:
    listeners: tuple[Listener, ...]  # port_mapping, connection_pool, health_check, tls only
    backend_defaults: BackendDefaults | None = None
    logging: Logging | None = None


@dataclass(frozen=True, slots=True)
class VirtualGateway:
    mesh_name: str
    virtual_gateway_name: str
    spec: VirtualGatewaySpec
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class GatewayRouteHostnameMatch:
    exact: str | None = None
    suffix: str | None = None


@dataclass(frozen=True, slots=True)
class HttpGatewayRouteMatch:
    prefix: str | None = None
    path: HttpPathMatch | None = None
    hostname: GatewayRouteHostnameMatch | None = None
    method: str | None = None
    headers: tuple[HttpRouteHeader, ...] = ()
    query_parameters: tuple[HttpQueryParameter, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class GrpcGatewayRouteMatch:
    service_name: str | None = None
    hostname: GatewayRouteHostnameMatch | None = None
    metadata: tuple[HttpRouteHeader, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayRouteTarget:
    virtual_service_name: str  # target.virtualService.virtualServiceName
    port: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayRouteRewrite:
    """`HttpGatewayRouteRewrite` / `GrpcGatewayRouteRewrite` (gRPC has only the hostname member)."""

    default_target_hostname: str | None = None  # hostname.defaultTargetHostname: ENABLED | DISABLED
    path_exact: str | None = None  # path.exact
    prefix_default: str | None = None  # prefix.defaultPrefix: ENABLED | DISABLED
    prefix_value: str | None = None  # prefix.value


@dataclass(frozen=True, slots=True)
class GatewayRouteAction:
    target: GatewayRouteTarget
    rewrite: GatewayRouteRewrite | None = None


@dataclass(frozen=True, slots=True)
class HttpGatewayRoute:
    match: HttpGatewayRouteMatch
    action: GatewayRouteAction


@dataclass(frozen=True, slots=True)
class GrpcGatewayRoute:
    match: GrpcGatewayRouteMatch
    action: GatewayRouteAction


@dataclass(frozen=True, slots=True)
class GatewayRouteSpec:
    priority: int | None = None
    http_route: HttpGatewayRoute | None = None
    http2_route: HttpGatewayRoute | None = None
    grpc_route: GrpcGatewayRoute | None = None

    @property
    def route_type(self) -> str:
        for member, value in (
            ("httpRoute", self.http_route),
            ("http2Route", self.http2_route),
            ("grpcRoute", self.grpc_route),
        ):
            if value is not None:
                return member
        raise ValueError("gateway route spec without a route")

    @property
    def action(self) -> GatewayRouteAction:
        route = self.http_route or self.http2_route or self.grpc_route
        if route is None:
            raise ValueError("gateway route spec without a route")
        return route.action


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    spec: GatewayRouteSpec
    source: str = field(default="", compare=False)


Resource = Mesh | VirtualNode | VirtualService | VirtualRouter | Route | VirtualGateway | GatewayRoute


def resource_type(resource: Resource) -> ResourceType:
    match resource:
        case Mesh():
            return ResourceType.MESH
        case VirtualNode():
            return ResourceType.VIRTUAL_NODE
        case VirtualService():
            return ResourceType.VIRTUAL_SERVICE
        case VirtualRouter():
            return ResourceType.VIRTUAL_ROUTER
        case Route():
            return ResourceType.ROUTE
        case VirtualGateway():
            return ResourceType.VIRTUAL_GATEWAY
        case GatewayRoute():
            return ResourceType.GATEWAY_ROUTE


def display_name(resource: Resource) -> str:
    """The name an issue prints: `color-router/split` for a route, the plain name otherwise."""
    match resource:
        case Mesh():
            return resource.mesh_name
        case VirtualNode():
            return resource.virtual_node_name
        case VirtualService():
            return resource.virtual_service_name
        case VirtualRouter():
            return resource.virtual_router_name
        case Route():
            return f"{resource.virtual_router_name}/{resource.route_name}"
        case VirtualGateway():
            return resource.virtual_gateway_name
        case GatewayRoute():
            return f"{resource.virtual_gateway_name}/{resource.gateway_route_name}"


def _key(*parts: str) -> tuple[str, ...]:
    return parts


@dataclass(frozen=True, slots=True)
class MeshResources:
    """Every resource read from the configuration, across meshes, with lookups by (mesh, name).

    Resources keep the order they were read in; `routes_of` / `gateway_routes_of` return the routes of one
    router / gateway in that order (compile sorts them by App Mesh's match order).
    """

    meshes: tuple[Mesh, ...] = ()
    virtual_nodes: tuple[VirtualNode, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    virtual_routers: tuple[VirtualRouter, ...] = ()
    routes: tuple[Route, ...] = ()
    virtual_gateways: tuple[VirtualGateway, ...] = ()
    gateway_routes: tuple[GatewayRoute, ...] = ()
    _index: dict[tuple[str, ...], Resource] = field(init=False, repr=False, compare=False)
    _children: dict[tuple[str, ...], tuple[Route | GatewayRoute, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str, ...], Resource] = {}
        children: dict[tuple[str, ...], list[Route | GatewayRoute]] = {}
        for resource in self:
            kind = resource_type(resource)
            index[_key(kind, resource.mesh_name, display_name(resource))] = resource
            if isinstance(resource, Route):
                children.setdefault(_key(kind, resource.mesh_name, resource.virtual_router_name), []).append(
                    resource
                )
            elif isinstance(resource, GatewayRoute):
                parent = _key(kind, resource.mesh_name, resource.virtual_gateway_name)
                children.setdefault(parent, []).append(resource)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_children", {key: tuple(value) for key, value in children.items()})

    def __iter__(self) -> Iterator[Resource]:
        yield from self.meshes
        yield from self.virtual_nodes
        yield from self.virtual_services
        yield from self.virtual_routers
        yield from self.routes
        yield from self.virtual_gateways
        yield from self.gateway_routes

    def __len__(self) -> int:
        """Resources read from the configuration (implicit meshes are not counted)."""
        return sum(1 for resource in self if not (isinstance(resource, Mesh) and resource.implicit))

    def mesh(self, mesh: str) -> Mesh | None:
        found = self._index.get(_key(ResourceType.MESH, mesh, mesh))
        return found if isinstance(found, Mesh) else None

    def virtual_node(self, mesh: str, name: str) -> VirtualNode | None:
        found = self._index.get(_key(ResourceType.VIRTUAL_NODE, mesh, name))
        return found if isinstance(found, VirtualNode) else None

    def virtual_service(self, mesh: str, name: str) -> VirtualService | None:
        found = self._index.get(_key(ResourceType.VIRTUAL_SERVICE, mesh, name))
        return found if isinstance(found, VirtualService) else None

    def virtual_router(self, mesh: str, name: str) -> VirtualRouter | None:
        found = self._index.get(_key(ResourceType.VIRTUAL_ROUTER, mesh, name))
        return found if isinstance(found, VirtualRouter) else None

    def virtual_gateway(self, mesh: str, name: str) -> VirtualGateway | None:
        found = self._index.get(_key(ResourceType.VIRTUAL_GATEWAY, mesh, name))
        return found if isinstance(found, VirtualGateway) else None

    def routes_of(self, mesh: str, virtual_router: str) -> tuple[Route, ...]:
        routes = self._children.get(_key(ResourceType.ROUTE, mesh, virtual_router), ())
        return tuple(route for route in routes if isinstance(route, Route))

    def gateway_routes_of(self, mesh: str, virtual_gateway: str) -> tuple[GatewayRoute, ...]:
        routes = self._children.get(_key(ResourceType.GATEWAY_ROUTE, mesh, virtual_gateway), ())
        return tuple(route for route in routes if isinstance(route, GatewayRoute))
