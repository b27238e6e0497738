"""Cross-check our shape table, enums and limits against the installed botocore appmesh service model.

If botocore's `appmesh/2019-01-25` model changes (a new member, a new enum value, a changed limit), these
tests fail and point at the shape, so `meshproxy/config/shapes.py` is updated deliberately, not by drift.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

from meshproxy.config.errors import Severity
from meshproxy.config.model import RESOURCE_TYPES, ResourceType
from meshproxy.config.shapes import (
    HTTP_RETRY_EVENTS,
    SHAPES,
    Boolean,
    Integer,
    ListOf,
    ShapeChecker,
    String,
    Structure,
)
from meshproxy.config.snapshot import EgressFilter, ListenerProtocol

botocore_loaders = pytest.importorskip("botocore.loaders")

_CREATE_INPUTS = {
    ResourceType.MESH: "CreateMeshInput",
    ResourceType.VIRTUAL_NODE: "CreateVirtualNodeInput",
    ResourceType.VIRTUAL_SERVICE: "CreateVirtualServiceInput",
    ResourceType.VIRTUAL_ROUTER: "CreateVirtualRouterInput",
    ResourceType.ROUTE: "CreateRouteInput",
    ResourceType.VIRTUAL_GATEWAY: "CreateVirtualGatewayInput",
    ResourceType.GATEWAY_ROUTE: "CreateGatewayRouteInput",
}


@cache
def model_shapes() -> dict[str, Any]:
    model = botocore_loaders.Loader().load_service_model("appmesh", "service-2", api_version="2019-01-25")
    shapes: dict[str, Any] = model["shapes"]
    return shapes


def reachable(roots: list[str]) -> set[str]:
    shapes = model_shapes()
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        if shape["type"] == "structure":
            stack.extend(member["shape"] for member in shape["members"].values())
        elif shape["type"] == "list":
            stack.append(shape["member"]["shape"])
    return seen


def test_table_covers_exactly_the_shapes_reachable_from_the_specs() -> None:
    roots = [info.spec_shape for info in RESOURCE_TYPES.values()]
    roots += [shape for info in RESOURCE_TYPES.values() for shape in info.name_shapes]
    assert reachable(roots) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_matches_service_model(name: str) -> None:
    ours = SHAPES[name]
    theirs = model_shapes()[name]
    kind = theirs["type"]
    match ours:
        case Structure():
            assert kind == "structure"
            assert dict(ours.members) == {m: spec["shape"] for m, spec in theirs["members"].items()}
            assert set(ours.required) == set(theirs.get("required", []))
            assert ours.union == bool(theirs.get("union", False))
        case ListOf():
            assert kind == "list"
            assert ours.member == theirs["member"]["shape"]
            assert (ours.min, ours.max) == (theirs.get("min"), theirs.get("max"))
        case String():
            assert kind == "string"
            assert (ours.min, ours.max) == (theirs.get("min"), theirs.get("max"))
            assert ours.enum == (tuple(theirs["enum"]) if "enum" in theirs else None)
            assert ours.pattern == theirs.get("pattern")
            if ours.documented_enum is not None:
                assert "enum" not in theirs, "the model now has an enum: drop documented_enum"
        case Integer():
            assert kind in ("integer", "long")
            assert (ours.min, ours.max) == (theirs.get("min"), theirs.get("max"))
        case Boolean():
            assert kind == "boolean"


def test_documented_http_retry_events_are_the_documented_ones() -> None:
    doc = model_shapes()["HttpRetryPolicy"]["members"]["httpRetryEvents"]["documentation"]
    listed = set(re.findall(r"\b([a-z]+-error)\b", doc))
    assert listed == set(HTTP_RETRY_EVENTS)


@pytest.mark.parametrize("kind", list(ResourceType))
def test_resource_type_names_and_spec_shapes(kind: ResourceType) -> None:
    info = RESOURCE_TYPES[kind]
    create = model_shapes()[_CREATE_INPUTS[kind]]
    members = {name: spec["shape"] for name, spec in create["members"].items()}
    assert members["spec"] == info.spec_shape
    for member, shape in zip(info.name_members, info.name_shapes, strict=True):
        assert members[member] == shape
        assert member in create["required"]
    assert ("spec" in create["required"]) == info.spec_required


def test_snapshot_enums_match_the_model() -> None:
    shapes = model_shapes()
    assert {p.value for p in ListenerProtocol} == set(shapes["PortProtocol"]["enum"])
    assert {f.value for f in EgressFilter} == set(shapes["EgressFilterType"]["enum"])


# --- behaviour: the checker enforces every limit the model states -----------------------------------------


def problems(value: object, shape: str) -> list[str]:
    found: list[str] = []

    def report(path: str, message: str, severity: Severity) -> None:
        if severity is Severity.ERROR:
            found.append(message)

    ShapeChecker(report).check(value, shape, "x")
    return found


def _limited(kind: str) -> list[str]:
    return sorted(
        name
        for name in SHAPES
        if model_shapes()[name]["type"] == kind
        and ("min" in model_shapes()[name] or "max" in model_shapes()[name])
    )


@pytest.mark.parametrize("name", _limited("integer") + _limited("long"))
def test_integer_limits_are_enforced(name: str) -> None:
    shape = model_shapes()[name]
    if "min" in shape:
        assert problems(shape["min"], name) == []
        assert problems(shape["min"] - 1, name) != []
    if "max" in shape:
        assert problems(shape["max"], name) == []
        assert problems(shape["max"] + 1, name) != []


def _free_strings() -> list[str]:
    """Length-limited strings whose values are not otherwise constrained (pattern, documented values)."""
    return [
        name
        for name in _limited("string")
        if "pattern" not in model_shapes()[name] and getattr(SHAPES[name], "documented_enum", None) is None
    ]


@pytest.mark.parametrize("name", _free_strings())
def test_string_lengths_are_enforced(name: str) -> None:
    shape = model_shapes()[name]
    if "min" in shape:
        assert problems("a" * shape["min"], name) == []
        if shape["min"] > 0:
            assert problems("a" * (shape["min"] - 1), name) != []
    if "max" in shape:
        assert problems("a" * shape["max"], name) == []
        assert problems("a" * (shape["max"] + 1), name) != []


@pytest.mark.parametrize("name", sorted(n for n in SHAPES if "enum" in model_shapes()[n]))
def test_enums_are_enforced(name: str) -> None:
    for value in model_shapes()[name]["enum"]:
        assert problems(value, name) == []
    assert problems("not-a-value", name) != []


def _string_lists() -> list[str]:
    # sizes of lists of structures are covered by test_config_validate with real members
    return [
        n
        for n in _limited("list")
        if model_shapes()[model_shapes()[n]["member"]["shape"]]["type"] == "string"
    ]


@pytest.mark.parametrize("name", _string_lists())
def test_list_sizes_are_enforced(name: str) -> None:
    shape = model_shapes()[name]
    member_name = shape["member"]["shape"]
    ours = SHAPES[member_name]
    assert isinstance(ours, String)
    allowed = ours.enum or ours.documented_enum or ("a",)
    value = allowed[0]
    if "min" in shape:
        assert problems([value] * shape["min"], name) == []
        assert problems([value] * (shape["min"] - 1), name) != []
    if "max" in shape:
        assert problems([value] * shape["max"], name) == []
        assert problems([value] * (shape["max"] + 1), name) != []


@pytest.mark.parametrize(
    "name", sorted(n for n, s in SHAPES.items() if isinstance(s, Structure) and s.required)
)
def test_required_members_are_enforced(name: str) -> None:
    for member in model_shapes()[name]["required"]:
        assert "required member is missing" in problems({}, name), member
