"""Test-tier markers for the whole suite.

Each test is marked by the directory it lives in (`unit`, `component`, `e2e`, `netns`), so one tier can be
selected or skipped, e.g. `pytest -m "not e2e and not netns"` for the quick pure tiers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS_ROOT).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
