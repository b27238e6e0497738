"""App Mesh API JSON (camelCase members) -> the typed model in `model.py`.

Input must already have passed `shapes.ShapeChecker` without errors for its spec shape, so types, required
members and unions are known to be right; this module only builds objects. Unknown members were reported as
warnings by the checker and are ignored here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from meshproxy.config.model import (
    AwsCloudMapServiceDiscovery,
    BackendDefaults,
    ClientPolicy,
    ClientPolicyTls,
    ConnectionPool,
    DnsServiceDiscovery,
    Duration,
    FileAccessLog,
    GatewayRoute,
    GatewayRouteAction,
    GatewayRouteHostnameMatch,
    GatewayRouteRewrite,
    GatewayRouteSpec,
    GatewayRouteTarget,
    GrpcGatewayRoute,
    GrpcGatewayRouteMatch,
    GrpcRoute,
    GrpcRouteMatch,
    HeaderMatchMethod,
    HealthCheckPolicy,
    HttpGatewayRoute,
    HttpGatewayRouteMatch,
    HttpPathMatch,
    HttpQueryParameter,
    HttpRoute,
    HttpRouteHeader,
    HttpRouteMatch,
    HttpTimeout,
    Listener,
    ListenerTimeout,
    ListenerTls,
    ListenerTlsCertificate,
    Logging,
    LoggingFormat,
    MatchRange,
    Mesh,
    MeshSpec,
    OutlierDetection,
    PortMapping,
    QueryParameterMatch,
    Resource,
    ResourceType,
    RetryPolicy,
    Route,
    RouteAction,
    RouteSpec,
    ServiceDiscovery,
    TcpRoute,
    TcpTimeout,
    TlsValidationContext,
    VirtualGateway,
    VirtualGatewaySpec,
    VirtualNode,
    VirtualNodeSpec,
    VirtualRouter,
    VirtualRouterListener,
    VirtualRouterSpec,
    VirtualService,
    VirtualServiceBackend,
    VirtualServiceProvider,
    VirtualServiceSpec,
    WeightedTarget,
)
from meshproxy.config.snapshot import EgressFilter, ListenerProtocol

Json = Mapping[str, Any]
T = TypeVar("T")


def _opt(data: Json, member: str, build: Callable[[Json], T]) -> T | None:
    value = data.get(member)
    return None if value is None else build(value)


def _many(data: Json, member: str, build: Callable[[Json], T]) -> tuple[T, ...]:
    items: Sequence[Json] = data.get(member) or ()
    return tuple(build(item) for item in items)


def duration(data: Json) -> Duration:
    # validate.py reports a Duration without value or unit; 0 s is the harmless stand-in here
    return Duration(value=int(data.get("value", 0)), unit=str(data.get("unit", "s")))


def _opt_duration(data: Json, member: str) -> Duration | None:
    return _opt(data, member, duration)


def _port_mapping(data: Json) -> PortMapping:
    return PortMapping(port=data["port"], protocol=ListenerProtocol(data["protocol"]))


def _http_timeout(data: Json) -> HttpTimeout:
    return HttpTimeout(per_request=_opt_duration(data, "perRequest"), idle=_opt_duration(data, "idle"))


def _tcp_timeout(data: Json) -> TcpTimeout:
    return TcpTimeout(idle=_opt_duration(data, "idle"))


def _header_match(data: Json) -> HeaderMatchMethod:
    range_ = data.get("range")
    return HeaderMatchMethod(
        exact=data.get("exact"),
        prefix=data.get("prefix"),
        suffix=data.get("suffix"),
        regex=data.get("regex"),
        range=None if range_ is None else MatchRange(start=range_["start"], end=range_["end"]),
    )


def _header(data: Json) -> HttpRouteHeader:
    return HttpRouteHeader(
        name=data["name"], invert=bool(data.get("invert", False)), match=_opt(data, "match", _header_match)
    )


def _query_parameter(data: Json) -> HttpQueryParameter:
    return HttpQueryParameter(
        name=data["name"], match=_opt(data, "match", lambda m: QueryParameterMatch(exact=m.get("exact")))
    )


def _path_match(data: Json) -> HttpPathMatch:
    return HttpPathMatch(exact=data.get("exact"), regex=data.get("regex"))


# --- TLS --------------------------------------------------------------------------------------------------


def _certificate(data: Json) -> ListenerTlsCertificate:
    acm, file, sds = data.get("acm") or {}, data.get("file") or {}, data.get("sds") or {}
    return ListenerTlsCertificate(
        acm_certificate_arn=acm.get("certificateArn"),
        file_certificate_chain=file.get("certificateChain"),
        file_private_key=file.get("privateKey"),
        sds_secret_name=sds.get("secretName"),
    )


def _validation(data: Json) -> TlsValidationContext:
    trust = data.get("trust") or {}
    acm, file, sds = trust.get("acm") or {}, trust.get("file") or {}, trust.get("sds") or {}
    sans = ((data.get("subjectAlternativeNames") or {}).get("match") or {}).get("exact") or ()
    return TlsValidationContext(
        acm_certificate_authority_arns=tuple(acm.get("certificateAuthorityArns") or ()),
        file_certificate_chain=file.get("certificateChain"),
        sds_secret_name=sds.get("secretName"),
        subject_alternative_names=tuple(sans),
    )


def _listener_tls(data: Json) -> ListenerTls:
    return ListenerTls(
        mode=data["mode"],
        certificate=_certificate(data["certificate"]),
        validation=_opt(data, "validation", _validation),
    )


def _client_policy(data: Json) -> ClientPolicy:
    def tls(t: Json) -> ClientPolicyTls:
        return ClientPolicyTls(
            validation=_validation(t["validation"]),
            enforce=bool(t.get("enforce", True)),
            ports=tuple(t.get("ports") or ()),
            certificate=_opt(t, "certificate", _certificate),
        )

    return ClientPolicy(tls=_opt(data, "tls", tls))


def _backend_defaults(data: Json) -> BackendDefaults:
    return BackendDefaults(client_policy=_opt(data, "clientPolicy", _client_policy))


# --- listeners --------------------------------------------------------------------------------------------


def _listener_timeout(data: Json) -> ListenerTimeout:
    return ListenerTimeout(
        http=_opt(data, "http", _http_timeout),
        http2=_opt(data, "http2", _http_timeout),
        grpc=_opt(data, "grpc", _http_timeout),
        tcp=_opt(data, "tcp", _tcp_timeout),
    )


def _connection_pool(data: Json) -> ConnectionPool:
    (member, pool), *_ = (
        (k, v) for k, v in data.items() if v is not None and k in ("http", "http2", "grpc", "tcp")
    )
    return ConnectionPool(
        protocol=ListenerProtocol(member),
        max_connections=pool.get("maxConnections"),
        max_pending_requests=pool.get("maxPendingRequests"),
        max_requests=pool.get("maxRequests"),
    )


def _outlier(data: Json) -> OutlierDetection:
    return OutlierDetection(
        max_server_errors=data["maxServerErrors"],
        interval=duration(data["interval"]),
        base_ejection_duration=duration(data["baseEjectionDuration"]),
        max_ejection_percent=data["maxEjectionPercent"],
    )


def _health_check(data: Json) -> HealthCheckPolicy:
    return HealthCheckPolicy(
        protocol=ListenerProtocol(data["protocol"]),
        interval_millis=data["intervalMillis"],
        timeout_millis=data["timeoutMillis"],
        healthy_threshold=data["healthyThreshold"],
        unhealthy_threshold=data["unhealthyThreshold"],
        path=data.get("path"),
        port=data.get("port"),
    )


def _listener(data: Json) -> Listener:
    return Listener(
        port_mapping=_port_mapping(data["portMapping"]),
        connection_pool=_opt(data, "connectionPool", _connection_pool),
        health_check=_opt(data, "healthCheck", _health_check),
        outlier_detection=_opt(data, "outlierDetection", _outlier),
        timeout=_opt(data, "timeout", _listener_timeout),
        tls=_opt(data, "tls", _listener_tls),
    )


def _logging(data: Json) -> Logging:
    def file(f: Json) -> FileAccessLog:
        def fmt(x: Json) -> LoggingFormat:
            json_pairs = x.get("json")
            return LoggingFormat(
                text=x.get("text"),
                json=None if json_pairs is None else tuple((p["key"], p["value"]) for p in json_pairs),
            )

        return FileAccessLog(path=f["path"], format=_opt(f, "format", fmt))

    access_log = data.get("accessLog") or {}
    return Logging(access_log=_opt(access_log, "file", file))


def _service_discovery(data: Json) -> ServiceDiscovery:
    def dns(d: Json) -> DnsServiceDiscovery:
        return DnsServiceDiscovery(
            hostname=d["hostname"], response_type=d.get("responseType"), ip_preference=d.get("ipPreference")
        )

    def cloud_map(c: Json) -> AwsCloudMapServiceDiscovery:
        return AwsCloudMapServiceDiscovery(
            namespace_name=c["namespaceName"],
            service_name=c["serviceName"],
            attributes=tuple((a["key"], a["value"]) for a in c.get("attributes") or ()),
            ip_preference=c.get("ipPreference"),
        )

    return ServiceDiscovery(dns=_opt(data, "dns", dns), aws_cloud_map=_opt(data, "awsCloudMap", cloud_map))


# --- specs ------------------------------------------------------------------------------------------------


def mesh_spec(data: Json) -> MeshSpec:
    egress = data.get("egressFilter") or {}
    discovery = data.get("serviceDiscovery") or {}
    return MeshSpec(
        egress_filter=None if egress.get("type") is None else EgressFilter(egress["type"]),
        ip_preference=discovery.get("ipPreference"),
    )


def virtual_node_spec(data: Json) -> VirtualNodeSpec:
    def backend(b: Json) -> VirtualServiceBackend:
        vs = b["virtualService"]
        return VirtualServiceBackend(
            virtual_service_name=vs["virtualServiceName"],
            client_policy=_opt(vs, "clientPolicy", _client_policy),
        )

    return VirtualNodeSpec(
        listeners=_many(data, "listeners", _listener),
        backends=_many(data, "backends", backend),
        backend_defaults=_opt(data, "backendDefaults", _backend_defaults),
        service_discovery=_opt(data, "serviceDiscovery", _service_discovery),
        logging=_opt(data, "logging", _logging),
    )


def virtual_service_spec(data: Json) -> VirtualServiceSpec:
    def provider(p: Json) -> VirtualServiceProvider:
        return VirtualServiceProvider(
            virtual_node_name=(p.get("virtualNode") or {}).get("virtualNodeName"),
            virtual_router_name=(p.get("virtualRouter") or {}).get("virtualRouterName"),
        )

    return VirtualServiceSpec(provider=_opt(data, "provider", provider))


def virtual_router_spec(data: Json) -> VirtualRouterSpec:
    return VirtualRouterSpec(
        listeners=_many(data, "listeners", lambda x: VirtualRouterListener(_port_mapping(x["portMapping"])))
    )


def _action(data: Json) -> RouteAction:
    def target(t: Json) -> WeightedTarget:
        return WeightedTarget(virtual_node=t["virtualNode"], weight=t["weight"], port=t.get("port"))

    return RouteAction(weighted_targets=_many(data, "weightedTargets", target))


def _retry_policy(data: Json) -> RetryPolicy:
    return RetryPolicy(
        max_retries=data["maxRetries"],
        per_retry_timeout=duration(data["perRetryTimeout"]),
        http_retry_events=tuple(data.get("httpRetryEvents") or ()),
        tcp_retry_events=tuple(data.get("tcpRetryEvents") or ()),
        grpc_retry_events=tuple(data.get("grpcRetryEvents") or ()),
    )


def _http_route(data: Json) -> HttpRoute:
    match = data["match"]
    return HttpRoute(
        match=HttpRouteMatch(
            prefix=match.get("prefix"),
            path=_opt(match, "path", _path_match),
            method=match.get("method"),
            scheme=match.get("scheme"),
            headers=_many(match, "headers", _header),
            query_parameters=_many(match, "queryParameters", _query_parameter),
            port=match.get("port"),
        ),
        action=_action(data["action"]),
        retry_policy=_opt(data, "retryPolicy", _retry_policy),
        timeout=_opt(data, "timeout", _http_timeout),
    )


def _grpc_route(data: Json) -> GrpcRoute:
    match = data["match"]
    return GrpcRoute(
        match=GrpcRouteMatch(
            service_name=match.get("serviceName"),
            method_name=match.get("methodName"),
            metadata=_many(match, "metadata", _header),
            port=match.get("port"),
        ),
        action=_action(data["action"]),
        retry_policy=_opt(data, "retryPolicy", _retry_policy),
        timeout=_opt(data, "timeout", _http_timeout),
    )


def _tcp_route(data: Json) -> TcpRoute:
    return TcpRoute(
        action=_action(data["action"]),
        match_port=(data.get("match") or {}).get("port"),
        timeout=_opt(data, "timeout", _tcp_timeout),
    )


def route_spec(data: Json) -> RouteSpec:
    return RouteSpec(
        priority=data.get("priority"),
        http_route=_opt(data, "httpRoute", _http_route),
        http2_route=_opt(data, "http2Route", _http_route),
        grpc_route=_opt(data, "grpcRoute", _grpc_route),
        tcp_route=_opt(data, "tcpRoute", _tcp_route),
    )


def virtual_gateway_spec(data: Json) -> VirtualGatewaySpec:
    return VirtualGatewaySpec(
        listeners=_many(data, "listeners", _listener),
        backend_defaults=_opt(data, "backendDefaults", _backend_defaults),
        logging=_opt(data, "logging", _logging),
    )


def _hostname_match(data: Json) -> GatewayRouteHostnameMatch:
    return GatewayRouteHostnameMatch(exact=data.get("exact"), suffix=data.get("suffix"))


def _gateway_action(data: Json) -> GatewayRouteAction:
    target = data["target"]

    def rewrite(r: Json) -> GatewayRouteRewrite:
        prefix = r.get("prefix") or {}
        return GatewayRouteRewrite(
            default_target_hostname=(r.get("hostname") or {}).get("defaultTargetHostname"),
            path_exact=(r.get("path") or {}).get("exact"),
            prefix_default=prefix.get("defaultPrefix"),
            prefix_value=prefix.get("value"),
        )

    return GatewayRouteAction(
        target=GatewayRouteTarget(
            virtual_service_name=target["virtualService"]["virtualServiceName"], port=target.get("port")
        ),
        rewrite=_opt(data, "rewrite", rewrite),
    )


def _http_gateway_route(data: Json) -> HttpGatewayRoute:
    match = data["match"]
    return HttpGatewayRoute(
        match=HttpGatewayRouteMatch(
            prefix=match.get("prefix"),
            path=_opt(match, "path", _path_match),
            hostname=_opt(match, "hostname", _hostname_match),
            method=match.get("method"),
            headers=_many(match, "headers", _header),
            query_parameters=_many(match, "queryParameters", _query_parameter),
            port=match.get("port"),
        ),
        action=_gateway_action(data["action"]),
    )


def _grpc_gateway_route(data: Json) -> GrpcGatewayRoute:
    match = data["match"]
    return GrpcGatewayRoute(
        match=GrpcGatewayRouteMatch(
            service_name=match.get("serviceName"),
            hostname=_opt(match, "hostname", _hostname_match),
            metadata=_many(match, "metadata", _header),
            port=match.get("port"),
        ),
        action=_gateway_action(data["action"]),
    )


def gateway_route_spec(data: Json) -> GatewayRouteSpec:
    return GatewayRouteSpec(
        priority=data.get("priority"),
        http_route=_opt(data, "httpRoute", _http_gateway_route),
        http2_route=_opt(data, "http2Route", _http_gateway_route),
        grpc_route=_opt(data, "grpcRoute", _grpc_gateway_route),
    )


def resource(kind: ResourceType, names: Sequence[str], spec: Json, source: str = "") -> Resource:
    """Build one resource from its identifying names (outermost first, as in RESOURCE_TYPES) and spec."""
    match kind:
        case ResourceType.MESH:
            return Mesh(mesh_name=names[0], spec=mesh_spec(spec), source=source)
        case ResourceType.VIRTUAL_NODE:
            return VirtualNode(names[0], names[1], virtual_node_spec(spec), source=source)
        case ResourceType.VIRTUAL_SERVICE:
            return VirtualService(names[0], names[1], virtual_service_spec(spec), source=source)
        case ResourceType.VIRTUAL_ROUTER:
            return VirtualRouter(names[0], names[1], virtual_router_spec(spec), source=source)
        case ResourceType.ROUTE:
            return Route(names[0], names[1], names[2], route_spec(spec), source=source)
        case ResourceType.VIRTUAL_GATEWAY:
            return VirtualGateway(names[0], names[1], virtual_gateway_spec(spec), source=source)
        case ResourceType.GATEWAY_ROUTE:
            return GatewayRoute(names[0], names[1], names[2], gateway_route_spec(spec), source=source)
