"""Reading configuration files: JSON or YAML text -> `RawResource`s in the App Mesh API's own shape.

A file holds one document (JSON, or YAML possibly as a multi-document stream); each document is a list of
items or a single item. An item is recognised as:

- an `aws appmesh describe-*` response: `{"virtualNode": {...}}`, `{"route": {...}}`, `{"mesh": {...}}`, ...
  (the single key is the resource type);
- a resource object itself, recognised by its name members: `gatewayRouteName`, then `routeName`, then
  `virtualNodeName`, `virtualServiceName`, `virtualRouterName`, `virtualGatewayName`, and `meshName` alone;
- an export bundle / `list-*`-style wrapper: `{"virtualNodes": [...], "routes": [...]}` whose lists hold full
  resource objects (real `list-*` output carries references without `spec`; validation says so);
- a CloudFormation template with `AWS::AppMesh::*` resources (`cloudformation.py`; YAML short forms such as
  `!Ref` and `!GetAtt` are read as their long forms);
- a Kubernetes `appmesh.k8s.aws/v1beta2` object, or a `kind: List` of them (`kubernetes.py`). These refer to
  each other by Kubernetes name, possibly across files, so `read_files` resolves them after reading all files;
- a Kubernetes `ConfigMap` whose `data` entries hold any of the above (each entry is read as JSON or YAML, by
  its key's extension or by trying); entries that are not JSON/YAML or hold no App Mesh resource are skipped
  with a warning, so an application's own ConfigMaps can sit in the same file;
- any other Kubernetes object (a Deployment, a Service, ...): skipped with a warning, as the App Mesh
  controller ignores them. A manifest file can therefore hold an application and its mesh together.

`metadata` and `status` are ignored. Every problem becomes an `Issue`; nothing here raises for bad input.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshproxy.config import cloudformation, kubernetes
from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import RESOURCE_TYPES, ResourceType
from meshproxy.config.raw import RawResource, ReadResult

if TYPE_CHECKING:
    import yaml

__all__ = ["RawResource", "ReadResult", "read_bytes", "read_document", "read_file", "read_files", "read_text"]

# Checked in this order: a route object also has virtualRouterName, a gateway route also virtualGatewayName.
_NAME_MEMBERS: tuple[tuple[str, ResourceType], ...] = (
    ("gatewayRouteName", ResourceType.GATEWAY_ROUTE),
    ("routeName", ResourceType.ROUTE),
    ("virtualNodeName", ResourceType.VIRTUAL_NODE),
    ("virtualServiceName", ResourceType.VIRTUAL_SERVICE),
    ("virtualRouterName", ResourceType.VIRTUAL_ROUTER),
    ("virtualGatewayName", ResourceType.VIRTUAL_GATEWAY),
    ("meshName", ResourceType.MESH),
)
_DESCRIBE_KEYS: Mapping[str, ResourceType] = {kind.value: kind for kind in ResourceType}
_LIST_KEYS: Mapping[str, ResourceType] = {info.list_key: kind for kind, info in RESOURCE_TYPES.items()}


@functools.cache
def _yaml_loader() -> type[yaml.SafeLoader]:
    """The safe loader, plus CloudFormation's short-form intrinsic tags (`!Ref x` -> `{"Ref": "x"}`). Made
    (and PyYAML imported) on the first YAML document: a proxy configured with JSON never loads PyYAML (1.4 MiB
    of resident memory per worker)."""
    import yaml

    # The C loader (when PyYAML was built with libyaml) is several times faster on large exports; both safe.
    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def cloudformation_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if suffix == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
        return {key: value}

    class YamlLoader(base):  # type: ignore[valid-type,misc]  # a base chosen at run time
        pass

    YamlLoader.add_multi_constructor("!", cloudformation_tag)
    return YamlLoader


def read_file(path: str) -> ReadResult:
    """Read one JSON or YAML file (Kubernetes references resolved within it). Problems become issues."""
    return _resolve_kubernetes(_read_file(path))


def read_files(paths: Sequence[str], objects: list[kubernetes.KubernetesObject] | None = None) -> ReadResult:
    """Read several files as one configuration: Kubernetes objects may refer to objects in other files.

    `objects`, when given, receives the App Mesh Kubernetes objects as read (with their pod selectors and
    namespaces, which the resources they become do not keep): what sidecar injection matches pods against.
    """
    result = ReadResult()
    for path in paths:
        result.extend(_read_file(path))
    return _with_objects(result, objects)


def read_sources(
    sources: Sequence[tuple[str, bytes]], objects: list[kubernetes.KubernetesObject] | None = None
) -> ReadResult:
    """`read_files` over (name, bytes) pairs already fetched (http, s3 or file sources)."""
    result = ReadResult()
    for name, data in sources:
        result.extend(_read_bytes(data, source=name))
    return _with_objects(result, objects)


def _with_objects(result: ReadResult, objects: list[kubernetes.KubernetesObject] | None) -> ReadResult:
    if objects is not None:
        objects.extend(result.kubernetes)
    return _resolve_kubernetes(result)


def _read_file(path: str) -> ReadResult:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return ReadResult(issues=[Issue("", "", "", f"cannot read file: {exc.strerror or exc}", source=path)])
    return _read_bytes(data, source=path)


def _resolve_kubernetes(result: ReadResult) -> ReadResult:
    if result.kubernetes:
        result.extend(kubernetes.resolve_objects(result.kubernetes))
        result.kubernetes.clear()
    return result


def read_bytes(data: bytes, *, source: str = "<text>") -> ReadResult:
    """Read one document's bytes (UTF-8 JSON or YAML)."""
    return _resolve_kubernetes(_read_bytes(data, source=source))


def _read_bytes(data: bytes, *, source: str) -> ReadResult:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return ReadResult(issues=[Issue("", "", "", f"not UTF-8 text: {exc}", source=source)])
    return _read_text(text, source=source, syntax=None)


def read_text(text: str, *, source: str = "<text>", syntax: str | None = None) -> ReadResult:
    """Parse JSON or YAML text. `syntax` is "json" or "yaml"; by default a `.json` source is JSON, a
    `.yaml`/`.yml` source is YAML, and anything else is tried as JSON first, then YAML."""
    return _resolve_kubernetes(_read_text(text, source=source, syntax=syntax))


_SYNTAX_BY_EXTENSION: Mapping[str, str] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def _syntax_of(name: str) -> str | None:
    return _SYNTAX_BY_EXTENSION.get(os.path.splitext(name)[1].lower())


def _parse(text: str, syntax: str | None) -> list[Any] | tuple[str, str]:
    """The documents in `text`, or (where, message) saying why it is not JSON / YAML."""
    if syntax is None:
        try:
            return [json.loads(text)]
        except ValueError:
            syntax = "yaml"
    if syntax == "json":
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            return f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}"
    loader = _yaml_loader()
    import yaml  # already loaded by _yaml_loader

    try:
        return list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        return where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"


def _read_text(text: str, *, source: str, syntax: str | None) -> ReadResult:
    parsed = _parse(text, syntax or _syntax_of(source))
    if isinstance(parsed, tuple):
        return ReadResult(issues=[Issue("", "", parsed[0], parsed[1], source=source)])
    result = _read_documents(parsed, source)
    if not result.resources and not result.issues and not result.kubernetes:
        result.issues.append(Issue("", "", "", "no App Mesh resources found", Severity.WARNING, source))
    return result


def _read_documents(documents: Sequence[Any], source: str, location: str = "") -> ReadResult:
    result = ReadResult()
    several = len(documents) > 1
    for number, document in enumerate(documents, start=1):
        if document is None:  # an empty YAML document (`---` at the end, comments only)
            continue
        where = _at(location, f"document {number}") if several else location
        result.extend(read_document(document, source=source, location=where))
    return result


def read_document(document: Any, *, source: str = "", location: str = "") -> ReadResult:
    """Recognise the items of one parsed JSON/YAML document (see the module docstring).

    Kubernetes objects are returned unresolved in `ReadResult.kubernetes`; `resolve_document` resolves them.
    """
    result = ReadResult()
    if isinstance(document, list):
        for index, item in enumerate(document):
            result.extend(_read_item(item, source, _at(location, f"item [{index}]")))
        return result
    return _read_item(document, source, location)


def _at(location: str, step: str) -> str:
    return f"{location}, {step}" if location else step


def _problem(source: str, location: str, message: str) -> ReadResult:
    return ReadResult(issues=[Issue("", "", location, message, source=source)])


def _read_item(item: Any, source: str, location: str) -> ReadResult:
    if not isinstance(item, dict):
        return _problem(source, location, f"expected an App Mesh resource object, got {type(item).__name__}")
    keys = set(item)
    if cloudformation.is_template(item):
        return cloudformation.read_template(item, source=source, location=location)
    if item.get("kind") == "List" and isinstance(item.get("items"), list):  # `kubectl get -o yaml` output
        return read_document(item["items"], source=source, location=location)
    if kubernetes.is_manifest(item):
        return kubernetes.read_manifest(item, source=source, location=location)
    if kubernetes.is_object(item):
        if item["kind"] == "ConfigMap":
            return _read_config_map(item, source, location)
        return _skipped(source, location, f"{kubernetes.describe(item)} is not an App Mesh kind; skipped")
    # describe-* response: {"virtualNode": {...}}
    if len(keys) == 1 and (key := next(iter(keys))) in _DESCRIBE_KEYS:
        inner = item[key]
        if not isinstance(inner, dict):
            return _problem(source, _at(location, key), f"expected an object, got {type(inner).__name__}")
        return ReadResult(resources=[RawResource(_DESCRIBE_KEYS[key], inner, source, location)])
    # export bundle / list-* wrapper: {"virtualNodes": [...], ...}
    if keys and keys <= set(_LIST_KEYS):
        result = ReadResult()
        for key, items in item.items():
            if not isinstance(items, list):
                result.extend(_problem(source, _at(location, key), "expected a list of resource objects"))
                continue
            for index, inner in enumerate(items):
                where = _at(location, f"{key}[{index}]")
                if isinstance(inner, dict):
                    result.resources.append(RawResource(_LIST_KEYS[key], inner, source, where))
                else:
                    result.extend(_problem(source, where, f"expected an object, got {type(inner).__name__}"))
        return result
    for member, kind in _NAME_MEMBERS:
        if member in item:
            return ReadResult(resources=[RawResource(kind, item, source, location)])
    known = ", ".join(sorted(keys)[:6]) or "no members"
    return _problem(
        source,
        location,
        f"not an App Mesh resource (members: {known}); expected a describe-* response such as "
        '{"virtualNode": {...}} or a resource object with meshName / virtualNodeName / routeName / ...',
    )


def _skipped(source: str, location: str, message: str) -> ReadResult:
    return ReadResult(issues=[Issue("", "", location, message, Severity.WARNING, source)])


def _read_config_map(item: Mapping[str, Any], source: str, location: str) -> ReadResult:
    """The App Mesh resources held in a ConfigMap's `data` entries (see the module docstring)."""
    name = kubernetes.describe(item)
    data = item.get("data")
    result = ReadResult()
    if "binaryData" in item:
        result.extend(_skipped(source, location, f"{name}: binaryData is not read"))
    if data is None:
        return result
    if not isinstance(data, dict):
        return _problem(source, _at(location, f"{name} data"), "expected a mapping of keys to text")
    for key, value in data.items():
        where = _at(location, f"{name} data[{key!r}]")
        if not isinstance(value, str):
            result.extend(_problem(source, where, f"expected text, got {type(value).__name__}"))
            continue
        parsed = _parse(value, _syntax_of(str(key)))
        if isinstance(parsed, tuple):
            result.extend(_skipped(source, where, "not JSON or YAML; skipped"))
            continue
        entry = _read_documents(parsed, source, where)
        if not entry.resources and not entry.kubernetes:
            result.extend(_skipped(source, where, "holds no App Mesh resources; skipped"))
            continue
        result.extend(entry)
    return result


def resolve_document(document: Any, *, source: str = "") -> ReadResult:
    """`read_document` with Kubernetes references resolved within the document."""
    return _resolve_kubernetes(read_document(document, source=source))
