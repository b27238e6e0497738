"""Fixtures shared by the component tests: real codecs at both ends, bytes in memory.

`h1` is uvicorn's `http_protocol_cls` idea: ONE fixture parametrised over every HTTP/1.1 implementation the
proxy can run (`MESHPROXY_HTTP1_PARSER`), built by the same `codec_factories` the data plane uses, so each
codec test runs on httptools and on h11. `h1_peer` is the implementation at the other end of the wire, for the
cross-checks (bytes one implementation writes must parse with the other).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meshproxy.codec.h1 import ClientCodec, ServerCodec
from meshproxy.dataplane import codec_factories
from meshproxy.settings import HTTP1_PARSERS

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
