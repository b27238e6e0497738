"""Fixtures shared by the e2e tests; the harness (proxy subprocess, clients, stats) is in harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .apps import AppLoop
from .harness import PARSERS


@pytest.fixture(scope="module")
def app_loop() -> Iterator[AppLoop]:
    """The event-loop thread hosting this module's upstream apps."""
    loop = AppLoop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module", params=PARSERS)
def http1_parser(request: pytest.FixtureRequest) -> str:
    """MESHPROXY_HTTP1_PARSER for a module whose tests must pass on both parsers."""
    parser: str = request.param
    return parser
