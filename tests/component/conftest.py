"""Fixtures shared by the component tests: real codecs at both ends, bytes in memory.

`h1` is uvicorn's `http_protocol_cls` idea: ONE fixture parametrised over every HTTP/1.1 implementation the
proxy can run (`MESHPROXY_HTTP1_PARSER`), built by the same `codec_factories` the data plane uses, so each
codec test runs on httptools and on h11. `h1_peer` is the implementation at the other end of the wire, for the
cross-checks (bytes one implementation writes must parse with the other).

`run` and `net` are for the tests that drive the router, the pools and the connection managers over the
in-memory network (memory.py): a fresh event loop per test, and a fake clock every timer runs on.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from meshproxy.codec.h1 import ClientCodec, ServerCodec
from meshproxy.dataplane import codec_factories
from meshproxy.settings import HTTP1_PARSERS, HTTP2_CODECS

from .memory import MemoryNetwork

T = TypeVar("T")
CodecPair = tuple[Callable[[], ServerCodec], Callable[[], ClientCodec]]


@pytest.fixture(params=HTTP1_PARSERS)
def http1_parser(request: pytest.FixtureRequest) -> str:
    """The name of the HTTP/1.1 implementation under test (a `MESHPROXY_HTTP1_PARSER` value)."""
    name: str = request.param
    return name


@pytest.fixture
def h1(http1_parser: str) -> CodecPair:
    """(server codec factory, client codec factory) of the implementation under test."""
    return codec_factories(http1_parser)


@pytest.fixture(params=HTTP1_PARSERS)
def peer_http1_parser(request: pytest.FixtureRequest) -> str:
    """The implementation at the other end of the wire: the same one and the other one, in turn."""
    name: str = request.param
    return name


@pytest.fixture
def h1_peer(peer_http1_parser: str) -> CodecPair:
    """(server codec factory, client codec factory) of the implementation at the other end."""
    return codec_factories(peer_http1_parser)


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """Run a scenario on a fresh uvloop loop. Any exception that escapes a callback (one the loop would only
    log) fails the test: the proxy must never leak a traceback on what a peer does."""
    leaked: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.get_loop().set_exception_handler(lambda _loop, context: leaked.append(context))
        yield runner.run
    where = [
        "".join(traceback.format_exception(context["exception"]))
        for context in leaked
        if isinstance(context.get("exception"), BaseException)
    ]
    assert not leaked, (leaked, *where)


@pytest.fixture
def net() -> MemoryNetwork:
    """The in-memory network of one test: fake clock, scripted connector (tests/component/memory.py)."""
    return MemoryNetwork()


@pytest.fixture(params=HTTP2_CODECS)
def h2_codec(request: pytest.FixtureRequest) -> str:
    """The proxy's HTTP/2 codec under test (`MESHPROXY_HTTP2_CODEC`): the lean frame layer, the h2 library."""
    name: str = request.param
    return name
