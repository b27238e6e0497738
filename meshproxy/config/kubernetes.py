"""Kubernetes `appmesh.k8s.aws/v1beta2` objects -> `RawResource`s in the App Mesh API's shape.

The objects are read the way the App Mesh controller would turn them into API calls:

- names: `spec.awsName`, or the controller's default: the object name for a Mesh, `<name>.<namespace>` for a
  VirtualService, `<name>_<namespace>` for the others;
- mesh membership: `spec.meshRef.name` when present, otherwise the only Mesh among the manifests (the
  controller derives it from namespace labels, which manifests do not carry);
- references: `virtualNodeRef` / `virtualServiceRef` / `virtualRouterRef` / `virtualGatewayRef`
  (`{name, namespace}`, namespace defaulting to the referring object's) become the referenced object's AWS
  name, `*ARN` references their last path segment; a GatewayRoute without `virtualGatewayRef` belongs to the
  only VirtualGateway of its mesh;
- a VirtualRouter's `spec.routes[]` become Route resources named `routes[].name`;
- controller-only fields (`podSelector`, `namespaceSelector`, `gatewayRouteSelector`, `meshRef`, `awsName`)
  are dropped; `backendGroups` is reported as unsupported.

Objects can refer to each other across files, so they are collected while reading and resolved together by
`resolve_objects`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import RESOURCE_TYPES, ResourceType
from meshproxy.config.raw import RawResource, ReadResult
from meshproxy.config.shapes import to_api_members

API_GROUP: Final = "appmesh.k8s.aws/"
KINDS: Final[Mapping[str, ResourceType]] = {
    "Mesh": ResourceType.MESH,
    "VirtualNode": ResourceType.VIRTUAL_NODE,
    "VirtualService": ResourceType.VIRTUAL_SERVICE,
    "VirtualRouter": ResourceType.VIRTUAL_ROUTER,
    "VirtualGateway": ResourceType.VIRTUAL_GATEWAY,
    "GatewayRoute": ResourceType.GATEWAY_ROUTE,
}
_CONTROLLER_FIELDS = (
    "awsName",
    "meshRef",
    "podSelector",
    "namespaceSelector",
    "gatewayRouteSelector",
    "virtualGatewayRef",
    "meshOwner",
)
_ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")


def is_manifest(document: Mapping[str, Any]) -> bool:
    return str(document.get("apiVersion", "")).startswith(API_GROUP) and "kind" in document


def is_object(document: Mapping[str, Any]) -> bool:
    """Any Kubernetes object: `apiVersion` and `kind` are both strings."""
    return isinstance(document.get("apiVersion"), str) and isinstance(document.get("kind"), str)


def describe(document: Mapping[str, Any]) -> str:
    """`<kind> <namespace>/<name>` (or `<kind> <name>`) of a Kubernetes object, for messages."""
    metadata = document.get("metadata")
    name = namespace = None
    if isinstance(metadata, dict):
        name, namespace = metadata.get("name"), metadata.get("namespace")
    label = f"{namespace}/{name}" if isinstance(namespace, str) and namespace else str(name or "(unnamed)")
    return f"{document.get('kind')} {label}"


@dataclass(frozen=True, slots=True)
class KubernetesObject:
    kind: str  # Mesh, VirtualNode, ...
    name: str
    namespace: str
    spec: Mapping[str, Any]
    source: str
    location: str

    @property
    def aws_name(self) -> str:
        explicit = self.spec.get("awsName")
        if isinstance(explicit, str) and explicit:
            return explicit
        if self.kind == "Mesh":
            return self.name
        if self.kind == "VirtualService":
            return f"{self.name}.{self.namespace}"
        return f"{self.name}_{self.namespace}"


def read_manifest(document: Mapping[str, Any], *, source: str = "", location: str = "") -> ReadResult:
    """Collect one App Mesh object; its references are resolved later by `resolve_objects`."""
    kind = document.get("kind")
    where = f"{location}, kind {kind}" if location else f"kind {kind}"
    if not isinstance(kind, str) or kind not in KINDS:
        message = f"{kind!r} is not an App Mesh kind (expected one of {', '.join(KINDS)})"
        return ReadResult(issues=[Issue("", "", where, message, source=source)])
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        return ReadResult(issues=[Issue("", "", where, "metadata.name is missing", source=source)])
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    spec = document.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return ReadResult(
            issues=[Issue("", "", f"{where} {name}", "spec: expected an object", source=source)]
        )
    obj = KubernetesObject(
        str(kind),
        name,
        namespace if isinstance(namespace, str) and namespace else "default",
        spec,
        source,
        f"{where} {name}",
    )
    return ReadResult(kubernetes=[obj])


@dataclass(slots=True)
class _Resolver:
    objects: Sequence[KubernetesObject]
    issues: list[Issue] = field(default_factory=list)
    by_key: dict[tuple[str, str, str], KubernetesObject] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            namespace = "" if obj.kind == "Mesh" else obj.namespace  # meshes are cluster-scoped
            self.by_key.setdefault((obj.kind, namespace, obj.name), obj)

    def problem(self, obj: KubernetesObject, path: str, message: str) -> None:
        self.issues.append(Issue(KINDS[obj.kind].value, obj.aws_name, path, message, source=obj.source))

    def mesh_of(self, obj: KubernetesObject) -> str | None:
        ref = obj.spec.get("meshRef")
        meshes = [o for o in self.objects if o.kind == "Mesh"]
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            mesh = self.by_key.get(("Mesh", "", ref["name"]))
            return mesh.aws_name if mesh is not None else str(ref["name"])
        if len(meshes) == 1:
            return meshes[0].aws_name
        if not meshes:
            self.problem(
                obj, "spec.meshRef", "no Mesh among the manifests; add the Mesh object or spec.meshRef"
            )
        else:
            self.problem(obj, "spec.meshRef", "several Meshes among the manifests; set spec.meshRef.name")
        return None

    def reference(self, obj: KubernetesObject, holder: Mapping[str, Any], kind: str, path: str) -> str | None:
        """The AWS name behind `<kind>Ref` / `<kind>ARN` in `holder` (e.g. virtualNodeRef, virtualNodeARN)."""
        stem = kind[0].lower() + kind[1:]
        ref, arn = holder.get(f"{stem}Ref"), holder.get(f"{stem}ARN")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            ref_namespace = ref.get("namespace")
            namespace = ref_namespace if isinstance(ref_namespace, str) and ref_namespace else obj.namespace
            target = self.by_key.get((kind, namespace, str(ref["name"])))
            if target is None:
                self.problem(
                    obj,
                    f"{path}.{stem}Ref",
                    f"no {kind} {ref['name']!r} in namespace {namespace!r} among the manifests",
                )
                return None
            return target.aws_name
        if isinstance(arn, str) and "/" in arn:
            return arn.rsplit("/", 1)[1]
        self.problem(obj, path, f"{stem}Ref or {stem}ARN is required")
        return None

    def _rename(
        self, obj: KubernetesObject, holder: dict[str, Any], kind: str, member: str, path: str
    ) -> bool:
        """Replace `<kind>Ref` / `<kind>ARN` in `holder` by the API member; False if it cannot be resolved."""
        name = self.reference(obj, holder, kind, path)
        stem = kind[0].lower() + kind[1:]
        holder.pop(f"{stem}Ref", None)
        holder.pop(f"{stem}ARN", None)
        if name is None:
            return False
        holder[member] = name
        return True

    def spec_without(self, obj: KubernetesObject, *extra: str) -> dict[str, Any]:
        spec = copy.deepcopy(dict(obj.spec))
        for name in (*_CONTROLLER_FIELDS, *extra):
            spec.pop(name, None)
        return spec

    def resources(self, obj: KubernetesObject) -> list[RawResource]:
        kind = KINDS[obj.kind]
        if kind is ResourceType.MESH:
            body: dict[str, Any] = {"meshName": obj.aws_name, "spec": self.spec_without(obj)}
            return [self._raw(kind, body, obj)]
        mesh = self.mesh_of(obj)
        if mesh is None:
            return []
        name_member = RESOURCE_TYPES[kind].name_members[-1]
        match kind:
            case ResourceType.VIRTUAL_NODE:
                spec = self.spec_without(obj)
                if "backendGroups" in spec:
                    spec.pop("backendGroups")
                    self.issues.append(
                        Issue(
                            kind.value,
                            obj.aws_name,
                            "spec.backendGroups",
                            "backend groups are not supported by meshproxy; list the backends",
                            Severity.WARNING,
                            obj.source,
                        )
                    )
                if isinstance(spec.get("backends"), list):  # anything else is reported by validation
                    backends = []
                    for index, backend in enumerate(spec["backends"]):
                        service = backend.get("virtualService") if isinstance(backend, dict) else None
                        if isinstance(service, dict):
                            path = f"spec.backends[{index}].virtualService"
                            if not self._rename(obj, service, "VirtualService", "virtualServiceName", path):
                                continue  # reported; leaving it out avoids a second "missing" error
                        backends.append(backend)
                    spec["backends"] = backends
                return [self._raw(kind, {"meshName": mesh, name_member: obj.aws_name, "spec": spec}, obj)]
            case ResourceType.VIRTUAL_SERVICE:
                spec = self.spec_without(obj)
                provider = spec.get("provider")
                if isinstance(provider, dict):
                    for member, target_kind in (
                        ("virtualNode", "VirtualNode"),
                        ("virtualRouter", "VirtualRouter"),
                    ):
                        holder = provider.get(member)
                        if isinstance(holder, dict):
                            name = self.reference(obj, holder, target_kind, f"spec.provider.{member}")
                            if name is None:
                                spec.pop("provider")
                                break
                            provider[member] = {f"{member}Name": name}
                return [self._raw(kind, {"meshName": mesh, name_member: obj.aws_name, "spec": spec}, obj)]
            case ResourceType.VIRTUAL_ROUTER:
                spec = self.spec_without(obj, "routes")
                raws = [self._raw(kind, {"meshName": mesh, name_member: obj.aws_name, "spec": spec}, obj)]
                routes = obj.spec.get("routes")
                if routes is not None and not isinstance(routes, list):
                    self.problem(obj, "spec.routes", "expected a list")
                    return raws
                for index, route in enumerate(routes or []):
                    raws.extend(self._route(obj, mesh, index, route))
                return raws
            case ResourceType.VIRTUAL_GATEWAY:
                spec = self.spec_without(obj)
                return [self._raw(kind, {"meshName": mesh, name_member: obj.aws_name, "spec": spec}, obj)]
            case ResourceType.GATEWAY_ROUTE:
                return self._gateway_route(obj, mesh)
        return []

    def _route(self, router: KubernetesObject, mesh: str, index: int, route: Any) -> list[RawResource]:
        path = f"spec.routes[{index}]"
        if not isinstance(route, dict) or not isinstance(route.get("name"), str):
            self.problem(router, path, "a route needs a name")
            return []
        spec = copy.deepcopy({k: v for k, v in route.items() if k != "name"})
        for member in _ROUTE_TYPES:
            body = spec.get(member)
            action = body.get("action") if isinstance(body, dict) else None
            targets = action.get("weightedTargets") if isinstance(action, dict) else None
            if not isinstance(targets, list):
                continue
            kept = []
            for target_index, target in enumerate(targets):
                where = f"{path}.{member}.action.weightedTargets[{target_index}]"
                if isinstance(target, dict) and not self._rename(
                    router, target, "VirtualNode", "virtualNode", where
                ):
                    continue
                kept.append(target)
            assert isinstance(action, dict)
            action["weightedTargets"] = kept
        body = {
            "meshName": mesh,
            "virtualRouterName": router.aws_name,
            "routeName": route["name"],
            "spec": spec,
        }
        return [
            RawResource(
                ResourceType.ROUTE,
                _api(ResourceType.ROUTE, body),
                router.source,
                f"{router.location}, {path}",
            )
        ]

    def _gateway_route(self, obj: KubernetesObject, mesh: str) -> list[RawResource]:
        gateway_ref = obj.spec.get("virtualGatewayRef")
        gateway: str | None
        if isinstance(gateway_ref, dict):
            gateway = self.reference(obj, obj.spec, "VirtualGateway", "spec")
        else:
            gateways = [o for o in self.objects if o.kind == "VirtualGateway"]
            gateway = gateways[0].aws_name if len(gateways) == 1 else None
            if gateway is None:
                self.problem(
                    obj,
                    "spec.virtualGatewayRef",
                    "set it: the manifests do not contain exactly one VirtualGateway",
                )
        if gateway is None:
            return []
        spec = self.spec_without(obj)
        for member in ("httpRoute", "http2Route", "grpcRoute"):
            body = spec.get(member)
            action = body.get("action") if isinstance(body, dict) else None
            target = action.get("target") if isinstance(action, dict) else None
            service = target.get("virtualService") if isinstance(target, dict) else None
            if isinstance(service, dict):
                where = f"spec.{member}.action.target.virtualService"
                if not self._rename(obj, service, "VirtualService", "virtualServiceName", where):
                    return []  # reported: a gateway route without its target cannot be checked further
        body = {
            "meshName": mesh,
            "virtualGatewayName": gateway,
            "gatewayRouteName": obj.aws_name,
            "spec": spec,
        }
        return [self._raw(ResourceType.GATEWAY_ROUTE, body, obj)]

    @staticmethod
    def _raw(kind: ResourceType, body: dict[str, Any], obj: KubernetesObject) -> RawResource:
        return RawResource(kind, _api(kind, body), obj.source, obj.location)


def _api(kind: ResourceType, body: dict[str, Any]) -> dict[str, Any]:
    body["spec"] = to_api_members(body.get("spec") or {}, RESOURCE_TYPES[kind].spec_shape)
    return body


def mesh_of(obj: KubernetesObject, objects: Sequence[KubernetesObject]) -> str | None:
    """The AWS name of the mesh `obj` belongs to, decided as `resolve_objects` decides it (None: unknown)."""
    return _Resolver(objects).mesh_of(obj)


def resolve_objects(objects: Sequence[KubernetesObject]) -> ReadResult:
    """Turn collected objects into App Mesh API resources, resolving names and references among them."""
    resolver = _Resolver(objects)
    result = ReadResult()
    for obj in objects:
        result.resources.extend(resolver.resources(obj))
    result.issues.extend(resolver.issues)
    return result
