"""Bad input gets issues, never a crash: random damage to a rich mesh, checked by validate (and compile)."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
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
ROUNDS = 400


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


def test_rich_mesh_is_valid() -> None:
    read = read_document(rich_mesh(), source="everything.json")
    assert read.issues == []
    _, issues = validate(read.resources)
    assert [str(i) for i in issues] == []


def test_random_damage_never_crashes() -> None:
    rng = random.Random(20240601)
    base = rich_mesh()
    reported = 0
    for _ in range(ROUNDS):
        document = copy.deepcopy(base)
        damage(document, rng)
        read = read_document(document, source="damaged.json")
        _, issues = validate(read.resources)
        reported += bool(read.issues or issues)
    assert reported > ROUNDS // 2  # the damage is real: most rounds produce issues
