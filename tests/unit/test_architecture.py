"""The request path's shape, checked: layers that import only downward, no import cycles, small modules.

ARCHITECTURE.md draws the layers; `LAYERS` below is the same list, lowest first. Every import of a meshproxy
module counts, wherever it is written (module level, `if TYPE_CHECKING:`, inside a function), so an import
moved into a function to dodge a cycle is still seen. A module may import from its own layer or a lower one,
never from a higher one, and the modules must not form a cycle even within a layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "meshproxy"

# Lowest first. A module belongs to the entry with the longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the package root holds the version and picks the compiled or the pure form (meshproxy.native)
    ("meshproxy", "meshproxy.core", "meshproxy.native"),
    ("meshproxy.codec",),
    ("meshproxy.config", "meshproxy.settings", "meshproxy.telemetry"),
    ("meshproxy.net",),
    ("meshproxy.upstream",),
    ("meshproxy.router",),
    ("meshproxy.downstream", "meshproxy.tcp"),
    ("meshproxy.listeners",),
    ("meshproxy.dataplane", "meshproxy.interception"),
    ("meshproxy.admin",),
    (
        "meshproxy.server",
        "meshproxy.supervisor",
        "meshproxy.workers",
        "meshproxy.demo",
        "meshproxy.cli",
        "meshproxy.__main__",
        "meshproxy.kubernetes",  # sidecar injection: commands over config, not on the request path
    ),
)

# The packages a request passes through: kept to modules and functions a newcomer can read in one sitting.
REQUEST_PATH = (
    "meshproxy.core",
    "meshproxy.codec",
    "meshproxy.net",
    "meshproxy.upstream",
    "meshproxy.router",
    "meshproxy.downstream",
    "meshproxy.listeners",
    "meshproxy.tcp",
    "meshproxy.dataplane",
)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
FORBIDDEN_MODULE_NAMES = ("utils", "helpers", "util", "misc", "common")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            # the package root matches only itself: a new package must be given its layer here
            covers = module == prefix or (prefix != "meshproxy" and module.startswith(prefix + "."))
            if covers and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)")
    return best


def imported_modules(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(meshproxy module imported, line) for every import in the file, wherever it is written."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "meshproxy":
                    yield _resolve(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "meshproxy":
                continue
            for alias in node.names:
                full = f"{name}.{alias.name}"
                yield (full if full in MODULES else _resolve(name)), node.lineno


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


GRAPH: dict[str, set[str]] = {
    module: {target for target, _ in imported_modules(module, path) if target != module}
    for module, path in MODULES.items()
}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; the components with more than one module are the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [c for c in components if len(c) > 1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_cycles() -> None:
    assert strongly_connected(GRAPH) == []


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for module, path in MODULES.items():
        for target, line in imported_modules(module, path):
            if target != module and layer_of(target) > layer_of(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    assert upward == []


def test_the_check_sees_a_cycle_and_an_upward_import() -> None:
    """The checker itself can fail: a made-up cycle and a made-up upward edge are caught."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("meshproxy.router.request") > layer_of("meshproxy.upstream.pool")


def _on_request_path(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in REQUEST_PATH)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _on_request_path(m)))
def test_request_path_modules_and_functions_stay_small(module: str) -> None:
    path = MODULES[module]
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines (split it along a seam)"
    long_functions = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long_functions == []


def test_no_grab_bag_modules() -> None:
    assert [m for m in MODULES if m.rpartition(".")[2] in FORBIDDEN_MODULE_NAMES] == []
