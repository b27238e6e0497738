"""Reading configuration files: JSON or YAML text -> `RawResource`s in the App Mesh API's own shape.

A file holds one document (JSON, or YAML possibly as a multi-document stream); each document is a list of
items or a single item. An item is recognised as:

- an `aws appmesh describe-*` response: `{"virtualNode": {...}}`, `{"route": {...}}`, `{"mesh": {...}}`, ...
  (the single key is the resource type);
- a resource object itself, recognised by its name members: `gatewayRouteName`, then `routeName`, then
  `virtualNodeName`, `virtualServiceName`, `virtualRouterName`, `virtualGatewayName`, and `meshName` alone;
- an export bundle / `list-*`-style wrapper: `{"virtualNodes": [...], "routes": [...]}` whose lists hold full
  resource objects (real `list-*` output carries references without `spec`; validation says so).

`metadata` and `status` are ignored. Every problem becomes an `Issue`; nothing here raises for bad input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import RESOURCE_TYPES, ResourceType

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

# The C loader (when PyYAML was built with libyaml) is several times faster on large exports; both are safe.
_YamlLoader: type[yaml.SafeLoader | yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class RawResource:
    """One resource as the App Mesh API shapes it (`meshName`, `<type>Name`, `spec`, ...), not yet checked."""

    kind: ResourceType
    body: Mapping[str, Any]
    source: str = ""  # file name, for messages
    location: str = ""  # where in the file, e.g. "document 2, item [3]"


@dataclass(slots=True)
class ReadResult:
    resources: list[RawResource] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    def extend(self, other: ReadResult) -> None:
        self.resources.extend(other.resources)
        self.issues.extend(other.issues)


def read_file(path: str) -> ReadResult:
    """Read one JSON or YAML file. An unreadable file is an issue, not an exception."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return ReadResult(issues=[Issue("", "", "", f"cannot read file: {exc.strerror or exc}", source=path)])
    return read_bytes(data, source=path)


def read_bytes(data: bytes, *, source: str = "<text>") -> ReadResult:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return ReadResult(issues=[Issue("", "", "", f"not UTF-8 text: {exc}", source=source)])
    return read_text(text, source=source)


def read_text(text: str, *, source: str = "<text>", syntax: str | None = None) -> ReadResult:
    """Parse JSON or YAML text. `syntax` is "json" or "yaml"; by default a `.json` source is JSON, a
    `.yaml`/`.yml` source is YAML, and anything else is tried as JSON first, then YAML."""
    if syntax is None:
        extension = os.path.splitext(source)[1].lower()
        syntax = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(extension)
    if syntax is None:
        try:
            documents: list[Any] = [json.loads(text)]
        except ValueError:
            syntax = "yaml"
        else:
            return _read_documents(documents, source)
    if syntax == "json":
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError as exc:
            return ReadResult(
                issues=[
                    Issue(
                        "",
                        "",
                        f"line {exc.lineno} column {exc.colno}",
                        f"invalid JSON: {exc.msg}",
                        source=source,
                    )
                ]
            )
    else:
        try:
            documents = list(yaml.load_all(text, Loader=_YamlLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            return ReadResult(issues=[Issue("", "", where, f"invalid YAML: {problem}", source=source)])
    return _read_documents(documents, source)


def _read_documents(documents: Sequence[Any], source: str) -> ReadResult:
    result = ReadResult()
    several = len(documents) > 1
    for number, document in enumerate(documents, start=1):
        if document is None:  # an empty YAML document (`---` at the end, comments only)
            continue
        result.extend(
            read_document(document, source=source, location=f"document {number}" if several else "")
        )
    if not result.resources and not result.issues:
        result.issues.append(Issue("", "", "", "no App Mesh resources found", Severity.WARNING, source))
    return result


def read_document(document: Any, *, source: str = "", location: str = "") -> ReadResult:
    """Recognise the items of one parsed JSON/YAML document (see the module docstring)."""
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
