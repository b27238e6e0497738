"""Validation: raw App Mesh resources -> typed `MeshResources`, with every problem collected as an `Issue`.

Three passes, all of which run so a user sees every problem at once:

1. shape (`shapes.py`): types, required members, unions, enums, ranges, lengths, list sizes, and unknown
   members as warnings ("unsupported field, ignored");
2. per-resource rules the shape table cannot express (spec §4): a prefix starts with '/', exactly one route
   type, path exact/regex, header range start < end, regexes compile, retry events, weight totals, listener
   timeout / connection-pool protocol equals the listener protocol, health-check port, gateway-route reserved
   prefixes and gRPC service names, unsupported certificate sources;
3. references within a mesh: route -> its virtual router and target virtual nodes (and their listener ports),
   virtual service provider -> node / router, backend -> virtual service, gateway route -> gateway and target
   virtual service (and its provider's ports).

A resource with shape errors is left out of the result, but its valid parts are still checked by passes 2
and 3 (see `_Findings.on`), and its name still counts as defined, so one mistake does not cascade into
"not found" errors elsewhere.

A mesh that resources reference but that is not defined is added as an implicit mesh with App Mesh's
defaults (egress filter DROP_ALL), with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshproxy.config import decode
from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import (
    RESOURCE_TYPES,
    ROUTE_TYPE_PROTOCOLS,
    ClientPolicy,
    GatewayRoute,
    GatewayRouteTarget,
    HeaderMatchMethod,
    HttpPathMatch,
    HttpRouteHeader,
    Listener,
    ListenerTls,
    Mesh,
    MeshResources,
    Resource,
    ResourceType,
    RetryPolicy,
    Route,
    RouteAction,
    VirtualGateway,
    VirtualNode,
    VirtualRouter,
    VirtualService,
    display_name,
    resource_type,
)
from meshproxy.config.raw import RawResource
from meshproxy.config.shapes import INVALID, ShapeChecker, join
from meshproxy.config.snapshot import ListenerProtocol

# Members of the envelope around a spec that carry no configuration (describe-* / list-* output).
_IGNORED_MEMBERS = frozenset(
    {
        "metadata",
        "status",
        "tags",
        "clientToken",
        "meshOwner",
        "resourceOwner",
        "arn",
        "createdAt",
        "lastUpdatedAt",
        "version",
        "uid",
    }
)
# App Mesh keeps these for itself on virtual gateways (spec §4.7).
RESERVED_PREFIXES = ("/aws-appmesh", "/aws-app-mesh")
RESERVED_GRPC_SERVICES = ("aws.appmesh", "aws.app-mesh")
MAX_BACKENDS = 50  # quota L-8775AB18, not adjustable (spec §4.8)
# ACM never hands a private key to a proxy it does not run: App Mesh's Envoy got them through the App Mesh
# control plane, which is gone. The way out is the certificate (and key) as files, or an SDS agent.
MOVE_FROM_ACM_CERTIFICATE = (
    "ACM certificates are not supported (only App Mesh's control plane could fetch their keys): export "
    "the certificate, its chain and key (`aws acm export-certificate`) into files and use `file`, or serve "
    "them from an SDS agent (SPIRE) and use `sds`"
)
MOVE_FROM_ACM_AUTHORITY = (
    "ACM certificate authorities are not supported (only App Mesh's control plane could fetch them): put "
    "the CA certificate (`aws acm-pca get-certificate-authority-certificate`) in a file and use "
    "`trust.file`, or serve the bundle from an SDS agent and use `trust.sds`"
)

Finding = Callable[[str, str], None]  # (path, message)


def _is_at_or_above(path: str, other: str) -> bool:
    """`spec.httpRoute` is at or above `spec.httpRoute.match.prefix` and `spec.httpRoute[0]`."""
    return not path or other == path or other.startswith((f"{path}.", f"{path}["))


@dataclass(frozen=True, slots=True)
class _Damage:
    """Where a partly valid resource was cleaned: paths of its shape errors, and lists that lost items."""

    broken: tuple[str, ...]
    shifted: tuple[str, ...]


@dataclass(slots=True)
class _Findings:
    """Collects issues, bound to one resource at a time."""

    issues: list[Issue] = field(default_factory=list)

    def add(self, kind: str, name: str, source: str, path: str, message: str, severity: Severity) -> None:
        self.issues.append(Issue(kind, name, path, message, severity, source))

    def on(self, resource: Resource, damage: _Damage | None = None) -> tuple[Finding, Finding]:
        """(error, warning) reporters for `resource`.

        For a partly valid resource, findings at or above one of its shape errors are dropped (there the
        cleaned copy lacks what the user wrote, so a rule would only echo the first error), and so are
        findings inside a list that lost items (their indexes no longer match the file).
        """
        kind, name, source = resource_type(resource).value, display_name(resource), resource.source
        broken, shifted = (damage.broken, damage.shifted) if damage is not None else ((), ())

        def suppressed(path: str) -> bool:
            return any(_is_at_or_above(path, b) for b in broken) or any(
                _is_at_or_above(s, path) for s in shifted
            )

        def error(path: str, message: str) -> None:
            if not suppressed(path):
                self.add(kind, name, source, path, message, Severity.ERROR)

        def warning(path: str, message: str) -> None:
            if not suppressed(path):
                self.add(kind, name, source, path, message, Severity.WARNING)

        return error, warning


def validate(raw_resources: Sequence[RawResource]) -> tuple[MeshResources, list[Issue]]:
    """Check and decode `raw_resources`; returns the valid resources and every issue (errors and warnings).

    The caller decides what to do with errors (`load.load_resources` raises `ConfigError`).
    """
    findings = _Findings()
    decoded: list[Resource] = []
    # resources with shape errors, decoded from their valid parts, with where they were cleaned
    partial: list[tuple[Resource, _Damage]] = []
    defined: dict[tuple[str, str, str], str] = {}  # (kind, mesh, name) -> source, including broken ones
    for raw in raw_resources:
        resource, key, damage = _decode_one(raw, findings)
        if key is None:
            continue
        if key in defined:
            kind, _, name = key
            message = f"defined more than once (also in {defined[key]})"
            findings.add(kind, name, raw.source, raw.location, message, Severity.ERROR)
            continue
        defined[key] = raw.source or "<text>"
        if resource is None:
            continue
        if damage is not None:
            partial.append((resource, damage))
        else:
            decoded.append(resource)

    decoded.extend(_implicit_meshes([*decoded, *(r for r, _ in partial)], defined, findings))
    resources = MeshResources(
        meshes=tuple(r for r in decoded if isinstance(r, Mesh)),
        virtual_nodes=tuple(r for r in decoded if isinstance(r, VirtualNode)),
        virtual_services=tuple(r for r in decoded if isinstance(r, VirtualService)),
        virtual_routers=tuple(r for r in decoded if isinstance(r, VirtualRouter)),
        routes=tuple(r for r in decoded if isinstance(r, Route)),
        virtual_gateways=tuple(r for r in decoded if isinstance(r, VirtualGateway)),
        gateway_routes=tuple(r for r in decoded if isinstance(r, GatewayRoute)),
    )
    names = frozenset(defined)
    checks: list[tuple[Resource, _Damage | None]] = [(r, None) for r in resources]
    for resource, damage in [*checks, *partial]:
        error, warning = findings.on(resource, damage)
        match resource:
            case VirtualNode():
                _check_virtual_node(resource, names, error, warning)
            case VirtualService():
                _check_virtual_service(resource, names, error)
            case VirtualRouter():
                _check_router(resource, error)
            case Route():
                _check_route(resource, resources, names, error, warning)
            case VirtualGateway():
                _check_gateway(resource, error, warning)
            case GatewayRoute():
                _check_gateway_route(resource, resources, names, error, warning)
    return resources, findings.issues


# --- pass 1: envelope and shape ---------------------------------------------------------------------------


def _decode_one(
    raw: RawResource, findings: _Findings
) -> tuple[Resource | None, tuple[str, str, str] | None, _Damage | None]:
    """(resource built from the valid parts or None, its (kind, mesh, name) key, its damage if partial)."""
    info = RESOURCE_TYPES[raw.kind]
    body = raw.body
    names: list[str] = []
    for member in info.name_members:
        value = body.get(member)
        names.append(value if isinstance(value, str) and value else "")
    display = "/".join(names[1:]) if raw.kind is not ResourceType.MESH else names[0]
    display = display if all(names) else display or "(unnamed)"
    local: list[Issue] = []

    def report(path: str, message: str, severity: Severity) -> None:
        local.append(Issue(raw.kind.value, display, path, message, severity, raw.source))

    checker = ShapeChecker(report)
    for member, shape in zip(info.name_members, info.name_shapes, strict=True):
        if body.get(member) is None:
            report(member, "required member is missing", Severity.ERROR)
        elif checker.check(body[member], shape, member) is not INVALID and body[member] == "":
            report(member, "empty", Severity.ERROR)
    for member in body:
        if member not in info.name_members and member != "spec" and member not in _IGNORED_MEMBERS:
            report(str(member), "unsupported field, ignored", Severity.WARNING)
    spec: Any = body.get("spec")
    if spec is None:
        if info.spec_required:
            hint = " (list-* output carries references only; export with describe-*)" if "arn" in body else ""
            report("spec", f"required member is missing{hint}", Severity.ERROR)
        spec = {}
    cleaned = checker.check(spec, info.spec_shape, "spec")
    findings.issues.extend(local)

    key = (raw.kind.value, names[0], display) if all(names) else None
    broken = tuple(issue.path for issue in local if issue.is_error)
    damage = _Damage(broken, tuple(checker.shifted)) if broken else None
    if key is None or not isinstance(cleaned, dict) or any(not path.startswith("spec") for path in broken):
        return None, key, damage
    try:
        return decode.resource(raw.kind, names, cleaned, raw.source), key, damage
    except (KeyError, TypeError, ValueError):
        if damage is None:
            raise  # a shape-valid spec always decodes; anything else is a bug to surface
        return None, key, damage  # a cleaned copy too broken to read: its shape errors say enough


def _implicit_meshes(
    decoded: Iterable[Resource], defined: Mapping[tuple[str, str, str], str], findings: _Findings
) -> list[Mesh]:
    meshes = {mesh for kind, mesh, _ in defined if kind == ResourceType.MESH}
    implicit: dict[str, str] = {}
    for resource in decoded:
        if resource.mesh_name not in meshes and resource.mesh_name not in implicit:
            implicit[resource.mesh_name] = resource.source
    result = []
    for mesh, source in implicit.items():
        findings.add(
            ResourceType.MESH.value,
            mesh,
            source,
            "",
            "not defined; assuming App Mesh's defaults (egressFilter DROP_ALL)",
            Severity.WARNING,
        )
        result.append(Mesh(mesh_name=mesh, implicit=True, source=source))
    return result


# --- pass 2 and 3: rules and references -------------------------------------------------------------------


def _defined(names: frozenset[tuple[str, str, str]], kind: ResourceType, mesh: str, name: str) -> bool:
    return (kind.value, mesh, name) in names


def _not_found(kind: str, name: str, mesh: str) -> str:
    return f"{kind} {name!r} not found in mesh {mesh!r}"


def _ports(ports: Iterable[int]) -> str:
    return ", ".join(str(port) for port in ports) or "none"


def _check_regex(pattern: str, path: str, error: Finding) -> None:
    # App Mesh uses RE2; Python's engine accepts a superset of RE2 syntax, so this catches malformed patterns
    try:
        re.compile(pattern)
    except re.error as exc:
        error(path, f"invalid regular expression: {exc}")


def _check_header_match(match: HeaderMatchMethod | None, path: str, error: Finding) -> None:
    if match is None:
        return
    if match.regex is not None:
        _check_regex(match.regex, join(path, "regex"), error)
    if match.range is not None and match.range.start >= match.range.end:
        error(join(path, "range"), f"start {match.range.start} must be less than end {match.range.end}")


def _check_headers(headers: Sequence[HttpRouteHeader], path: str, error: Finding) -> None:
    for index, header in enumerate(headers):
        _check_header_match(header.match, f"{path}[{index}].match", error)


def _check_path(path_match: HttpPathMatch | None, path: str, error: Finding) -> None:
    if path_match is None:
        return
    if (path_match.exact is None) == (path_match.regex is None):
        error(path, "exactly one of exact, regex must be set")
    if path_match.exact is not None and not path_match.exact.startswith("/"):
        error(join(path, "exact"), f"{path_match.exact!r} must start with '/'")
    if path_match.regex is not None:
        _check_regex(path_match.regex, join(path, "regex"), error)


def _check_listener_tls(tls: ListenerTls | None, path: str, error: Finding, warning: Finding) -> None:
    if tls is None:
        return
    # a listener with mode DISABLED never presents its certificate, so an unusable source is only a warning
    report = warning if tls.mode == "DISABLED" else error
    if tls.certificate.acm_certificate_arn is not None:
        report(join(path, "certificate.acm"), MOVE_FROM_ACM_CERTIFICATE)
    # listener validation has no ACM member in the API (ListenerTlsValidationContextTrust: file | sds)


def _check_client_policy(policy: ClientPolicy | None, path: str, error: Finding, warning: Finding) -> None:
    if policy is None or policy.tls is None:
        return
    tls = policy.tls
    # an enforced policy that cannot validate would mean no TLS where TLS was required: refused; an
    # unenforced one falls back to what the backend's listener asks for, so it is only a warning
    report = error if tls.enforce else warning
    base = join(path, "tls")
    if tls.validation.acm_certificate_authority_arns:
        report(join(base, "validation.trust.acm"), MOVE_FROM_ACM_AUTHORITY)


def _check_listeners(listeners: Sequence[Listener], path: str, error: Finding, warning: Finding) -> None:
    seen: dict[int, int] = {}
    for index, listener in enumerate(listeners):
        here = f"{path}[{index}]"
        port, protocol = listener.port_mapping.port, listener.port_mapping.protocol
        if port in seen:
            error(f"{here}.portMapping.port", f"port {port} is already used by listeners[{seen[port]}]")
        seen.setdefault(port, index)
        if listener.timeout is not None:
            members = {
                ListenerProtocol.HTTP: listener.timeout.http,
                ListenerProtocol.HTTP2: listener.timeout.http2,
                ListenerProtocol.GRPC: listener.timeout.grpc,
                ListenerProtocol.TCP: listener.timeout.tcp,
            }
            set_protocols = [p for p, value in members.items() if value is not None]
            if set_protocols and set_protocols[0] is not protocol:
                error(
                    f"{here}.timeout.{set_protocols[0]}",
                    f"timeout is for {set_protocols[0]} but the listener protocol is {protocol}",
                )
        if listener.connection_pool is not None and listener.connection_pool.protocol is not protocol:
            pool = listener.connection_pool.protocol
            error(
                f"{here}.connectionPool.{pool}",
                f"connection pool is for {pool} but the listener protocol is {protocol}",
            )
        health = listener.health_check
        if health is not None:
            if health.port is not None and health.port != port:
                error(f"{here}.healthCheck.port", f"{health.port} must equal the listener port {port}")
            if health.timeout_millis >= health.interval_millis:
                warning(
                    f"{here}.healthCheck.timeoutMillis",
                    f"{health.timeout_millis} is not less than intervalMillis {health.interval_millis}",
                )
        _check_listener_tls(listener.tls, f"{here}.tls", error, warning)


def _check_virtual_node(
    node: VirtualNode,
    names: frozenset[tuple[str, str, str]],
    error: Finding,
    warning: Finding,
) -> None:
    spec = node.spec
    _check_listeners(spec.listeners, "spec.listeners", error, warning)
    if spec.listeners and spec.service_discovery is None:
        error("spec.serviceDiscovery", "required when the virtual node has listeners")
    dns = spec.service_discovery.dns if spec.service_discovery is not None else None
    if dns is not None and not dns.hostname.strip():
        error("spec.serviceDiscovery.dns.hostname", "empty")
    if len(spec.backends) > MAX_BACKENDS:
        warning(
            "spec.backends",
            f"has {len(spec.backends)} backends; App Mesh allows {MAX_BACKENDS} per virtual node",
        )
    seen: set[str] = set()
    for index, backend in enumerate(spec.backends):
        path = f"spec.backends[{index}].virtualService"
        name = backend.virtual_service_name
        if name in seen:
            warning(join(path, "virtualServiceName"), f"{name!r} is listed more than once")
        seen.add(name)
        if not _defined(names, ResourceType.VIRTUAL_SERVICE, node.mesh_name, name):
            error(join(path, "virtualServiceName"), _not_found("virtual service", name, node.mesh_name))
        _check_client_policy(backend.client_policy, join(path, "clientPolicy"), error, warning)
    if spec.backend_defaults is not None:
        _check_client_policy(
            spec.backend_defaults.client_policy, "spec.backendDefaults.clientPolicy", error, warning
        )


def _check_virtual_service(
    service: VirtualService, names: frozenset[tuple[str, str, str]], error: Finding
) -> None:
    provider = service.spec.provider
    if provider is None:
        return
    mesh = service.mesh_name
    if provider.virtual_node_name is not None and not _defined(
        names, ResourceType.VIRTUAL_NODE, mesh, provider.virtual_node_name
    ):
        error(
            "spec.provider.virtualNode.virtualNodeName",
            _not_found("virtual node", provider.virtual_node_name, mesh),
        )
    if provider.virtual_router_name is not None and not _defined(
        names, ResourceType.VIRTUAL_ROUTER, mesh, provider.virtual_router_name
    ):
        error(
            "spec.provider.virtualRouter.virtualRouterName",
            _not_found("virtual router", provider.virtual_router_name, mesh),
        )


def _check_router(router: VirtualRouter, error: Finding) -> None:
    seen: dict[int, int] = {}
    for index, listener in enumerate(router.spec.listeners):
        port = listener.port_mapping.port
        if port in seen:
            error(
                f"spec.listeners[{index}].portMapping.port",
                f"port {port} is already used by listeners[{seen[port]}]",
            )
        seen.setdefault(port, index)


def _check_retry_policy(
    policy: RetryPolicy | None, path: str, grpc: bool, error: Finding, warning: Finding
) -> None:
    if policy is None:
        return
    members = ("httpRetryEvents", "tcpRetryEvents") + (("grpcRetryEvents",) if grpc else ())
    if not (policy.http_retry_events or policy.tcp_retry_events or (grpc and policy.grpc_retry_events)):
        error(path, f"at least one of {', '.join(members)} must be set")
    for member, events in (
        ("httpRetryEvents", policy.http_retry_events),
        ("tcpRetryEvents", policy.tcp_retry_events),
        ("grpcRetryEvents", policy.grpc_retry_events),
    ):
        duplicates = sorted({event for event in events if events.count(event) > 1})
        if duplicates:
            warning(join(path, member), f"{', '.join(duplicates)} listed more than once")


def _check_targets(
    action: RouteAction,
    path: str,
    mesh: str,
    protocol: ListenerProtocol,
    resources: MeshResources,
    names: frozenset[tuple[str, str, str]],
    error: Finding,
    warning: Finding,
) -> None:
    targets = action.weighted_targets
    total = sum(target.weight for target in targets)
    if targets and total == 0:
        error(path, "weights sum to 0; at least one target needs a weight above 0")
    elif total > 100:
        error(path, f"weights sum to {total}; App Mesh allows a total of at most 100")
    seen: dict[tuple[str, int | None], int] = {}
    for index, target in enumerate(targets):
        here = f"{path}[{index}]"
        key = (target.virtual_node, target.port)
        if key in seen:
            error(
                here,
                f"virtual node {target.virtual_node!r} is already a target in weightedTargets[{seen[key]}]",
            )
        seen.setdefault(key, index)
        node = resources.virtual_node(mesh, target.virtual_node)
        if node is None:
            if not _defined(names, ResourceType.VIRTUAL_NODE, mesh, target.virtual_node):
                error(join(here, "virtualNode"), _not_found("virtual node", target.virtual_node, mesh))
            continue
        ports = [listener.port_mapping.port for listener in node.spec.listeners]
        if not ports:
            error(
                join(here, "virtualNode"),
                f"virtual node {target.virtual_node!r} has no listeners to route to",
            )
        elif target.port is None and len(ports) > 1:
            error(
                join(here, "port"),
                f"required: virtual node {target.virtual_node!r} has several listeners ({_ports(ports)})",
            )
        elif target.port is not None and target.port not in ports:
            error(
                join(here, "port"),
                f"{target.port} is not a listener port of virtual node "
                f"{target.virtual_node!r} ({_ports(ports)})",
            )
        else:
            listener = node.listener(target.port if target.port is not None else ports[0])
            if listener is not None and listener.port_mapping.protocol is not protocol:
                warning(
                    join(here, "virtualNode"),
                    f"virtual node {target.virtual_node!r} listens with {listener.port_mapping.protocol} "
                    f"on {listener.port_mapping.port}, the route is {protocol}",
                )


def _check_route(
    route: Route,
    resources: MeshResources,
    names: frozenset[tuple[str, str, str]],
    error: Finding,
    warning: Finding,
) -> None:
    spec = route.spec
    members = [
        m
        for m, v in (
            ("httpRoute", spec.http_route),
            ("http2Route", spec.http2_route),
            ("grpcRoute", spec.grpc_route),
            ("tcpRoute", spec.tcp_route),
        )
        if v is not None
    ]
    if len(members) != 1:
        got = ", ".join(members) or "none"
        error("spec", f"exactly one of httpRoute, http2Route, grpcRoute, tcpRoute must be set (got {got})")
        return
    member = members[0]
    base = f"spec.{member}"
    protocol = ROUTE_TYPE_PROTOCOLS[member]
    match_port: int | None = None
    http = spec.http_route or spec.http2_route
    if http is not None:
        match = http.match
        match_port = match.port
        if match.prefix is None and match.path is None:
            error(f"{base}.match", "one of prefix, path must be set")
        if match.prefix is not None and match.path is not None:
            error(f"{base}.match", "only one of prefix, path may be set")
        if match.prefix is not None and not match.prefix.startswith("/"):
            error(f"{base}.match.prefix", f"{match.prefix!r} must start with '/'")
        _check_path(match.path, f"{base}.match.path", error)
        if match.scheme is not None and member == "httpRoute":
            warning(f"{base}.match.scheme", "applies to http2Route only; ignored")
        _check_headers(match.headers, f"{base}.match.headers", error)
        _check_retry_policy(http.retry_policy, f"{base}.retryPolicy", False, error, warning)
    elif spec.grpc_route is not None:
        grpc = spec.grpc_route
        match_port = grpc.match.port
        if grpc.match.method_name is not None and grpc.match.service_name is None:
            error(f"{base}.match.methodName", "requires serviceName")
        _check_headers(grpc.match.metadata, f"{base}.match.metadata", error)
        _check_retry_policy(grpc.retry_policy, f"{base}.retryPolicy", True, error, warning)
    elif spec.tcp_route is not None:
        match_port = spec.tcp_route.match_port
    _check_targets(
        spec.action,
        f"{base}.action.weightedTargets",
        route.mesh_name,
        protocol,
        resources,
        names,
        error,
        warning,
    )

    router = resources.virtual_router(route.mesh_name, route.virtual_router_name)
    if router is None:
        if not _defined(names, ResourceType.VIRTUAL_ROUTER, route.mesh_name, route.virtual_router_name):
            error(
                "virtualRouterName", _not_found("virtual router", route.virtual_router_name, route.mesh_name)
            )
        return
    listeners = [listener.port_mapping for listener in router.spec.listeners]
    ports = [mapping.port for mapping in listeners]
    described = ", ".join(f"{m.protocol} {m.port}" for m in listeners) or "none"
    if not listeners:
        error("virtualRouterName", f"virtual router {route.virtual_router_name!r} has no listeners")
    elif match_port is not None and match_port not in ports:
        error(
            f"{base}.match.port",
            f"{match_port} is not a listener port of virtual router "
            f"{route.virtual_router_name!r} ({_ports(ports)})",
        )
    elif match_port is None and len(listeners) > 1:
        error(
            f"{base}.match.port",
            f"required: virtual router {route.virtual_router_name!r} has several listeners ({described})",
        )
    else:
        candidates = [m for m in listeners if match_port is None or m.port == match_port]
        if not any(m.protocol is protocol for m in candidates):
            error(
                base,
                f"virtual router {route.virtual_router_name!r} has no {protocol} listener for this "
                f"route (listeners: {described})",
            )


def _check_gateway(gateway: VirtualGateway, error: Finding, warning: Finding) -> None:
    if not gateway.spec.listeners:
        error("spec.listeners", "a virtual gateway needs at least one listener")
    _check_listeners(gateway.spec.listeners, "spec.listeners", error, warning)
    if gateway.spec.backend_defaults is not None:
        _check_client_policy(
            gateway.spec.backend_defaults.client_policy, "spec.backendDefaults.clientPolicy", error, warning
        )


def _provider_ports(resources: MeshResources, mesh: str, service_name: str) -> list[int] | None:
    """Listener ports of a virtual service's provider; None if unknown (missing or undecodable)."""
    service = resources.virtual_service(mesh, service_name)
    if service is None or service.spec.provider is None:
        return None
    provider = service.spec.provider
    if provider.virtual_node_name is not None:
        node = resources.virtual_node(mesh, provider.virtual_node_name)
        return None if node is None else [listener.port_mapping.port for listener in node.spec.listeners]
    if provider.virtual_router_name is not None:
        router = resources.virtual_router(mesh, provider.virtual_router_name)
        return None if router is None else [listener.port_mapping.port for listener in router.spec.listeners]
    return None


def _check_gateway_target(
    target: GatewayRouteTarget,
    path: str,
    mesh: str,
    resources: MeshResources,
    names: frozenset[tuple[str, str, str]],
    error: Finding,
) -> None:
    name = target.virtual_service_name
    if not _defined(names, ResourceType.VIRTUAL_SERVICE, mesh, name):
        error(join(path, "virtualService.virtualServiceName"), _not_found("virtual service", name, mesh))
        return
    ports = _provider_ports(resources, mesh, name)
    if ports is None:
        return
    if target.port is None and len(ports) > 1:
        error(
            join(path, "port"), f"required: the provider of {name!r} has several listeners ({_ports(ports)})"
        )
    elif target.port is not None and target.port not in ports:
        error(
            join(path, "port"),
            f"{target.port} is not a listener port of the provider of {name!r} ({_ports(ports)})",
        )


def _check_gateway_route(
    route: GatewayRoute,
    resources: MeshResources,
    names: frozenset[tuple[str, str, str]],
    error: Finding,
    warning: Finding,
) -> None:
    spec = route.spec
    members = [
        m
        for m, v in (
            ("httpRoute", spec.http_route),
            ("http2Route", spec.http2_route),
            ("grpcRoute", spec.grpc_route),
        )
        if v is not None
    ]
    if len(members) != 1:
        got = ", ".join(members) or "none"
        error("spec", f"exactly one of httpRoute, http2Route, grpcRoute must be set (got {got})")
        return
    member = members[0]
    base = f"spec.{member}"
    protocol = ROUTE_TYPE_PROTOCOLS[member]
    http = spec.http_route or spec.http2_route
    match_port: int | None
    if http is not None:
        match = http.match
        match_port = match.port
        if match.prefix is not None and match.path is not None:
            error(f"{base}.match", "only one of prefix, path may be set")
        if match.prefix is not None:
            if not match.prefix.startswith("/"):
                error(f"{base}.match.prefix", f"{match.prefix!r} must start with '/'")
            if match.prefix.lower().startswith(RESERVED_PREFIXES):
                error(
                    f"{base}.match.prefix",
                    f"{match.prefix!r} is reserved by App Mesh (/aws-appmesh*, /aws-app-mesh*)",
                )
        _check_path(match.path, f"{base}.match.path", error)
        if match.hostname is not None and (match.hostname.exact is None) == (match.hostname.suffix is None):
            error(f"{base}.match.hostname", "exactly one of exact, suffix must be set")
        _check_headers(match.headers, f"{base}.match.headers", error)
        rewrite = http.action.rewrite
        if rewrite is not None:
            if rewrite.prefix_default is not None and rewrite.prefix_value is not None:
                error(f"{base}.action.rewrite.prefix", "only one of defaultPrefix, value may be set")
            if (
                rewrite.prefix_default is not None or rewrite.prefix_value is not None
            ) and match.prefix is None:
                error(f"{base}.action.rewrite.prefix", "a prefix rewrite needs a prefix match")
            if rewrite.prefix_value is not None and not rewrite.prefix_value.startswith("/"):
                error(f"{base}.action.rewrite.prefix.value", f"{rewrite.prefix_value!r} must start with '/'")
            if rewrite.path_exact is not None:
                if match.path is None:
                    error(f"{base}.action.rewrite.path", "a path rewrite needs a path match (exact or regex)")
                if not rewrite.path_exact.startswith("/"):
                    error(f"{base}.action.rewrite.path.exact", f"{rewrite.path_exact!r} must start with '/'")
    else:
        assert spec.grpc_route is not None
        grpc = spec.grpc_route.match
        match_port = grpc.port
        service = grpc.service_name
        if service is not None and service.lower().startswith(RESERVED_GRPC_SERVICES):
            error(
                f"{base}.match.serviceName",
                f"{service!r} is reserved by App Mesh (aws.appmesh*, aws.app-mesh*)",
            )
        if grpc.hostname is not None and (grpc.hostname.exact is None) == (grpc.hostname.suffix is None):
            error(f"{base}.match.hostname", "exactly one of exact, suffix must be set")
        _check_headers(grpc.metadata, f"{base}.match.metadata", error)
    _check_gateway_target(
        spec.action.target, f"{base}.action.target", route.mesh_name, resources, names, error
    )

    gateway = resources.virtual_gateway(route.mesh_name, route.virtual_gateway_name)
    if gateway is None:
        if not _defined(names, ResourceType.VIRTUAL_GATEWAY, route.mesh_name, route.virtual_gateway_name):
            error(
                "virtualGatewayName",
                _not_found("virtual gateway", route.virtual_gateway_name, route.mesh_name),
            )
        return
    listeners = [listener.port_mapping for listener in gateway.spec.listeners]
    ports = [m.port for m in listeners]
    if match_port is not None and match_port not in ports:
        error(
            f"{base}.match.port",
            f"{match_port} is not a listener port of virtual gateway "
            f"{route.virtual_gateway_name!r} ({_ports(ports)})",
        )
    elif match_port is None and len(listeners) > 1:
        error(
            f"{base}.match.port",
            f"required: virtual gateway {route.virtual_gateway_name!r} has several listeners "
            f"({_ports(ports)})",
        )
    elif listeners:
        candidates = [m for m in listeners if match_port is None or m.port == match_port]
        if not any(m.protocol is protocol for m in candidates):
            warning(
                base,
                f"virtual gateway {route.virtual_gateway_name!r} has no {protocol} listener for this route",
            )
