"""Reading App Mesh API JSON / YAML: item recognition, multi-document streams, wrappers and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshproxy.config.dialects import read_document, read_file, read_text
from meshproxy.config.model import ResourceType

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"

NODE = {"meshName": "m", "virtualNodeName": "n", "spec": {}}


def kinds(text: str, **kwargs: str) -> list[ResourceType]:
    result = read_text(text, **kwargs)
    assert result.issues == []
    return [raw.kind for raw in result.resources]


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        ({"mesh": {"meshName": "m"}}, ResourceType.MESH),
        ({"virtualNode": NODE}, ResourceType.VIRTUAL_NODE),
        ({"virtualService": {"meshName": "m", "virtualServiceName": "s"}}, ResourceType.VIRTUAL_SERVICE),
        ({"virtualRouter": {"meshName": "m", "virtualRouterName": "r"}}, ResourceType.VIRTUAL_ROUTER),
        ({"route": {"meshName": "m", "virtualRouterName": "r", "routeName": "x"}}, ResourceType.ROUTE),
        ({"virtualGateway": {"meshName": "m", "virtualGatewayName": "g"}}, ResourceType.VIRTUAL_GATEWAY),
        (
            {"gatewayRoute": {"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "x"}},
            ResourceType.GATEWAY_ROUTE,
        ),
    ],
)
def test_describe_responses_and_inner_objects(item: dict[str, dict[str, str]], kind: ResourceType) -> None:
    described = read_document(item)
    assert [raw.kind for raw in described.resources] == [kind]
    inner = next(iter(item.values()))
    assert [raw.kind for raw in read_document(inner).resources] == [kind]
    assert read_document(inner).resources[0].body is inner


def test_route_and_gateway_route_objects_are_not_mistaken_for_their_parents() -> None:
    route = {"meshName": "m", "virtualRouterName": "r", "routeName": "x"}
    gateway_route = {"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "x"}
    assert [r.kind for r in read_document([route, gateway_route]).resources] == [
        ResourceType.ROUTE,
        ResourceType.GATEWAY_ROUTE,
    ]


def test_list_wrappers_and_export_bundles() -> None:
    bundle = {
        "meshes": [{"meshName": "m"}],
        "virtualNodes": [NODE, NODE],
        "routes": [{"meshName": "m", "virtualRouterName": "r", "routeName": "x"}],
    }
    result = read_document(bundle, source="bundle.json")
    assert [r.kind for r in result.resources] == [
        ResourceType.MESH,
        ResourceType.VIRTUAL_NODE,
        ResourceType.VIRTUAL_NODE,
        ResourceType.ROUTE,
    ]
    assert result.resources[2].location == "virtualNodes[1]"
    assert result.resources[2].source == "bundle.json"


def test_json_single_item_and_list() -> None:
    assert kinds(json.dumps({"virtualNode": NODE})) == [ResourceType.VIRTUAL_NODE]
    assert kinds(json.dumps([{"virtualNode": NODE}, {"mesh": {"meshName": "m"}}])) == [
        ResourceType.VIRTUAL_NODE,
        ResourceType.MESH,
    ]


def test_yaml_multi_document_stream_with_lists_and_empty_documents() -> None:
    text = """
---
meshName: m
---
# only a comment
---
- meshName: m
  virtualNodeName: a
- virtualNode: {meshName: m, virtualNodeName: b}
---
"""
    result = read_text(text, source="mesh.yaml")
    assert result.issues == []
    assert [r.kind for r in result.resources] == [
        ResourceType.MESH,
        ResourceType.VIRTUAL_NODE,
        ResourceType.VIRTUAL_NODE,
    ]
    assert result.resources[2].location == "document 3, item [1]"


def test_syntax_is_guessed_without_an_extension() -> None:
    assert kinds("meshName: m\n") == [ResourceType.MESH]
    assert kinds('{"meshName": "m"}') == [ResourceType.MESH]


def test_invalid_json_reports_line_and_column() -> None:
    result = read_text('[{"meshName": "m",}]', source="bad.json")
    assert result.resources == []
    [issue] = result.issues
    assert issue.source == "bad.json"
    assert issue.path == "line 1 column 19"
    assert issue.message.startswith("invalid JSON")


def test_invalid_yaml_reports_line() -> None:
    result = read_text("meshName: m\n  bad: [1, 2\n", source="bad.yaml")
    [issue] = result.issues
    assert issue.message.startswith("invalid YAML")
    assert issue.path.startswith("line ")
    assert issue.located().startswith("bad.yaml: error: line ")


def test_unrecognised_items_are_reported_with_their_location() -> None:
    result = read_document([{"virtualNode": NODE}, {"hello": 1}, 42, {"virtualNode": []}], source="x.json")
    assert len(result.resources) == 1
    messages = [str(issue) for issue in result.issues]
    assert messages[0].startswith("item [1]: not an App Mesh resource (members: hello)")
    assert messages[1] == "item [2]: expected an App Mesh resource object, got int"
    assert messages[2] == "item [3], virtualNode: expected an object, got list"


def test_bundle_with_a_non_list() -> None:
    result = read_document({"virtualNodes": {"meshName": "m"}})
    assert [str(i) for i in result.issues] == ["virtualNodes: expected a list of resource objects"]


def test_missing_file_is_an_issue(tmp_path: Path) -> None:
    result = read_file(str(tmp_path / "nope.json"))
    [issue] = result.issues
    assert issue.message.startswith("cannot read file")
    assert issue.source.endswith("nope.json")


def test_binary_file_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "mesh.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    [issue] = read_file(str(path)).issues
    assert "UTF-8" in issue.message


def test_fixture_files_read_the_same_resources() -> None:
    from_json = read_file(str(FIXTURES / "colour-describe.json"))
    from_yaml = read_file(str(FIXTURES / "colour-objects.yaml"))
    assert from_json.issues == from_yaml.issues == []
    assert [r.kind for r in from_json.resources] == [r.kind for r in from_yaml.resources]
    for a, b in zip(from_json.resources, from_yaml.resources, strict=True):
        assert a.body.get("spec") == b.body.get("spec")
