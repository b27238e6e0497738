"""Bad input gets issues, never a crash: random damage to a rich mesh, checked by validate (and compile)."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproxy.config import dialects
from meshproxy.config.compile import compile_snapshot
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
from meshproxy.config.errors import ConfigError
from meshproxy.config.model import MeshResources
from meshproxy.config.snapshot import Identity, ResourceKind
from meshproxy.config.validate import validate

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
JUNK: list[Any] = [
    None,
    "",
    -1,
    0,
    1.5,
    [],
    {},
    "x" * 300,
    True,
    "/",
    {"a": 1},
    [1, "a"],
    70000,
    "http",
    "((",
]
# CloudFormation intrinsics, including a self-reference and malformed arguments
JUNK += [
    {"Ref": "Mesh"},
    {"Fn::GetAtt": ["Mesh", "MeshName"]},
    {"Fn::GetAtt": 5},
    {"Fn::Sub": "${Mesh.MeshName}"},
    {"Fn::Join": 3},
    {"Fn::Sub": [1, 2]},
    {"Ref": "AWS::NoValue"},
    {"Fn::GetAtt": ["BlueNode", "VirtualNodeName"]},
]
# Kubernetes references
JUNK += [{"name": "blue"}, {"virtualNodeRef": {"name": "blue"}}, {"virtualNodeARN": "arn:x/virtualNode/blue"}]
ROUNDS = 300


def rich_mesh() -> list[Any]:
    items: list[Any] = json.loads((FIXTURES / "everything.json").read_text())
    return items + colour_mesh(9001, 9002, 9000)[1:]


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*path, index))


def damage(document: list[Any], rng: random.Random) -> None:
    candidates = [p for p in paths(document) if p]
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(candidates)
        parent: Any = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict) and rng.random() < 0.3:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path


def compile_everyone(resources: MeshResources) -> int:
    """Compile for every node and gateway; a ConfigError is fine, any other exception fails the test."""
    compiled = 0
    identities = [
        (ResourceKind.VIRTUAL_NODE, n.mesh_name, n.virtual_node_name) for n in resources.virtual_nodes
    ]
    identities += [
        (ResourceKind.VIRTUAL_GATEWAY, g.mesh_name, g.virtual_gateway_name)
        for g in resources.virtual_gateways
    ]
    for kind, mesh, name in identities:
        identity = Identity(
            node_id=f"mesh/{mesh}/{kind}/{name}", mesh=mesh, kind=kind, name=name, node_cluster="c"
        )
        try:
            compile_snapshot(resources, identity, version="fuzz")
        except ConfigError:
            continue
        compiled += 1
    return compiled


def test_rich_mesh_is_valid() -> None:
    read = read_document(rich_mesh(), source="everything.json")
    assert read.issues == []
    resources, issues = validate(read.resources)
    assert [str(i) for i in issues] == []
    assert compile_everyone(resources) == 7  # six virtual nodes and the gateway


def test_random_damage_never_crashes() -> None:
    rng = random.Random(20240601)
    base = rich_mesh()
    reported = compiled = 0
    for _ in range(ROUNDS):
        document = copy.deepcopy(base)
        damage(document, rng)
        read = read_document(document, source="damaged.json")
        resources, issues = validate(read.resources)
        reported += bool(read.issues or issues)
        if not any(issue.is_error for issue in issues):
            compiled += compile_everyone(resources)
    assert reported > ROUNDS // 2  # the damage is real: most rounds produce issues
    assert compiled > 0  # and some damaged meshes are still valid and compile


@pytest.mark.parametrize("name", ["colour-cloudformation.yaml", "colour-kubernetes.yaml"])
def test_random_damage_to_other_dialects_never_crashes(name: str) -> None:
    base = list(yaml.load_all((FIXTURES / name).read_text(), Loader=dialects._yaml_loader()))
    rng = random.Random(name)
    for _ in range(ROUNDS // 2):
        document = copy.deepcopy(base)
        damage(document, rng)
        read = dialects.resolve_document(document, source=name)
        resources, issues = validate(read.resources)
        if not any(issue.is_error for issue in [*read.issues, *issues]):
            compile_everyone(resources)
