"""CloudFormation templates: `AWS::AppMesh::*` resources -> `RawResource`s in the App Mesh API's shape.

A template is read statically, the way a reviewer would: the App Mesh resources are taken from `Resources`
(other resource types are ignored), their PascalCase properties are renamed to the API's members along the
shape table, and numbers written as strings become numbers. Intrinsic functions are resolved where their value
is known without deploying the stack:

- `Ref` to a parameter (its `Default`), to an App Mesh resource in the template (CloudFormation returns its
  ARN; meshproxy uses the resource's name, with a warning), `AWS::NoValue` (the member is dropped), and
  `AWS::Partition` ("aws");
- `Fn::GetAtt` of an App Mesh resource's name attributes (`MeshName`, `VirtualNodeName`, ...);
- `Fn::Sub` over those, and `Fn::Join`.

Anything else (`AWS::Region`, `Fn::ImportValue`, `Fn::If`, ...) is reported as an error naming the property.
YAML short forms (`!Ref`, `!GetAtt`, `!Sub`, ...) are read by the YAML loader in `dialects.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import RESOURCE_TYPES, ResourceType
from meshproxy.config.raw import RawResource, ReadResult
from meshproxy.config.shapes import to_api_members

APP_MESH_TYPES: Final[Mapping[str, ResourceType]] = {
    "AWS::AppMesh::Mesh": ResourceType.MESH,
    "AWS::AppMesh::VirtualNode": ResourceType.VIRTUAL_NODE,
    "AWS::AppMesh::VirtualService": ResourceType.VIRTUAL_SERVICE,
    "AWS::AppMesh::VirtualRouter": ResourceType.VIRTUAL_ROUTER,
    "AWS::AppMesh::Route": ResourceType.ROUTE,
    "AWS::AppMesh::VirtualGateway": ResourceType.VIRTUAL_GATEWAY,
    "AWS::AppMesh::GatewayRoute": ResourceType.GATEWAY_ROUTE,
}
# Properties around the spec that carry no routing configuration.
_ENVELOPE_IGNORED = frozenset({"tags", "meshowner"})
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def app_mesh_type(resource: Any) -> ResourceType | None:
    """The App Mesh resource type of a template resource, None for anything else."""
    kind = resource.get("Type") if isinstance(resource, dict) else None
    return APP_MESH_TYPES.get(kind) if isinstance(kind, str) else None


def is_template(document: Mapping[str, Any]) -> bool:
    resources = document.get("Resources")
    if not isinstance(resources, dict):
        return False
    if "AWSTemplateFormatVersion" in document:
        return True
    return any(isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::") for r in resources.values())


class _Unresolved(Exception):
    """An intrinsic function whose value is not known without deploying the stack."""


@dataclass(slots=True)
class _Template:
    document: Mapping[str, Any]
    source: str
    location: str
    issues: list[Issue] = field(default_factory=list)
    resolving: set[tuple[str, str]] = field(default_factory=set)  # names being resolved, to stop cycles

    @property
    def resources(self) -> Mapping[str, Any]:
        resources: Mapping[str, Any] = self.document.get("Resources") or {}
        return resources

    @property
    def parameters(self) -> Mapping[str, Any]:
        parameters = self.document.get("Parameters")
        return parameters if isinstance(parameters, dict) else {}

    def issue(self, logical_id: str, path: str, message: str, severity: Severity = Severity.ERROR) -> None:
        where = f"Resources.{logical_id}" + (f".{path}" if path else "")
        if self.location:
            where = f"{self.location}, {where}"
        self.issues.append(Issue("", "", where, message, severity, self.source))

    # --- intrinsic functions ---

    def resolve(self, value: Any, logical_id: str, path: str) -> Any:
        """`value` with intrinsic functions replaced; unresolvable ones are reported and dropped (None)."""
        if isinstance(value, list):
            resolved = [self.resolve(item, logical_id, f"{path}[{i}]") for i, item in enumerate(value)]
            return [item for item in resolved if item is not None]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if isinstance(key, str) and (key == "Ref" or key.startswith("Fn::")):
                try:
                    return self._intrinsic(key, argument, logical_id)
                except _Unresolved as exc:
                    self.issue(logical_id, path, f"{key}: {exc}")
                    return None
        out = {}
        for key, item in value.items():
            resolved = self.resolve(item, logical_id, f"{path}.{key}" if path else str(key))
            if resolved is not None:
                out[key] = resolved
        return out

    def _intrinsic(self, function: str, argument: Any, logical_id: str) -> Any:
        match function:
            case "Ref":
                return self._ref(argument, logical_id)
            case "Fn::GetAtt":
                parts = argument.split(".", 1) if isinstance(argument, str) else argument
                if not (
                    isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)
                ):
                    raise _Unresolved(f"expected [LogicalId, Attribute], got {argument!r}")
                return self._get_att(parts[0], parts[1], logical_id)
            case "Fn::Sub":
                return self._sub(argument, logical_id)
            case "Fn::Join":
                if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)):
                    raise _Unresolved(f"expected [delimiter, [values]], got {argument!r}")
                values = [self._scalar(self._resolve_strict(v, logical_id)) for v in argument[1]]
                return str(argument[0]).join(values)
        raise _Unresolved("not supported when reading a template statically; use the deployed value")

    def _resolve_strict(self, value: Any, logical_id: str) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, argument),) = value.items()
            if isinstance(key, str) and (key == "Ref" or key.startswith("Fn::")):
                return self._intrinsic(key, argument, logical_id)
        return value

    @staticmethod
    def _scalar(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Unresolved(f"expected a string, got {value!r}")
        return str(value)

    def _ref(self, name: Any, logical_id: str) -> Any:
        if not isinstance(name, str):
            raise _Unresolved(f"expected a name, got {name!r}")
        if name == "AWS::NoValue":
            return None
        if name == "AWS::Partition":
            return "aws"
        parameter = self.parameters.get(name)
        if isinstance(parameter, dict):
            if "Default" not in parameter:
                raise _Unresolved(f"parameter {name!r} has no Default")
            return parameter["Default"]
        target = self.resources.get(name)
        kind = app_mesh_type(target)
        if kind is not None:
            self.issue(
                logical_id,
                "",
                f"Ref {name} is the resource's ARN in CloudFormation; using its name",
                Severity.WARNING,
            )
            return self._name_of(name, RESOURCE_TYPES[kind].name_members[-1])
        raise _Unresolved(f"{name!r} is not known without deploying the stack")

    def _get_att(self, target_id: str, attribute: str, logical_id: str) -> Any:
        target = self.resources.get(target_id)
        kind = app_mesh_type(target)
        if kind is None:
            raise _Unresolved(f"{target_id}.{attribute}: not an App Mesh resource of this template")
        members = RESOURCE_TYPES[kind].name_members
        wanted = next((m for m in members if m.lower() == attribute.lower()), None)
        if wanted is None:
            raise _Unresolved(f"{target_id}.{attribute} is only known after deployment")
        return self._name_of(target_id, wanted)

    def _name_of(self, target_id: str, member: str) -> str:
        properties = self.resources[target_id].get("Properties")
        if not isinstance(properties, dict):
            raise _Unresolved(f"{target_id} has no Properties")
        value = next((v for k, v in properties.items() if str(k).lower() == member.lower()), None)
        if value is None:
            raise _Unresolved(f"{target_id} has no {member[0].upper()}{member[1:]}")
        key = (target_id, member)
        if key in self.resolving:
            raise _Unresolved(f"{target_id}.{member[0].upper()}{member[1:]} refers to itself")
        self.resolving.add(key)
        try:
            return self._scalar(self._resolve_strict(value, target_id))
        finally:
            self.resolving.discard(key)

    def _sub(self, argument: Any, logical_id: str) -> str:
        variables: Mapping[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            argument, variables = argument
        if not isinstance(argument, str):
            raise _Unresolved(f"expected a string, got {argument!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} stays literal
            if name in variables:
                return self._scalar(self._resolve_strict(variables[name], logical_id))
            if "." in name:
                target_id, attribute = name.split(".", 1)
                return self._scalar(self._get_att(target_id, attribute, logical_id))
            return self._scalar(self._ref(name, logical_id))

        return _SUB_VARIABLE.sub(replace, argument)


def read_template(document: Mapping[str, Any], *, source: str = "", location: str = "") -> ReadResult:
    """The App Mesh resources of one template, with the problems found resolving it."""
    template = _Template(document, source, location)
    raws: list[RawResource] = []
    for logical_id, resource in template.resources.items():
        found = app_mesh_type(resource)
        if found is None:
            continue
        kind = found
        info = RESOURCE_TYPES[kind]
        if "Condition" in resource:
            template.issue(
                logical_id,
                "Condition",
                "conditions are not evaluated; the resource is included",
                Severity.WARNING,
            )
        properties = resource.get("Properties")
        if not isinstance(properties, dict):
            template.issue(logical_id, "Properties", "expected an object")
            continue
        properties = template.resolve(properties, logical_id, "Properties")
        if not isinstance(properties, dict):  # the whole of Properties was an intrinsic function
            template.issue(logical_id, "Properties", "expected an object")
            continue
        envelope = {member.lower(): member for member in info.name_members}
        body: dict[str, Any] = {}
        for key, value in properties.items():
            lowered = str(key).lower()
            if lowered == "spec":
                body["spec"] = to_api_members(value, info.spec_shape, coerce_scalars=True)
            elif lowered in envelope:
                body[envelope[lowered]] = value
            elif lowered not in _ENVELOPE_IGNORED:
                body[str(key)] = value  # reported by validation as an unsupported field
        where = f"Resources.{logical_id}"
        raws.append(RawResource(kind, body, source, f"{location}, {where}" if location else where))
    return ReadResult(resources=raws, issues=template.issues)
