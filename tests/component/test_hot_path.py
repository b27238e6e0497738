"""The hot path stays honest (issue 8), counted rather than timed: a small keep-alive request through the
egress listener costs one write toward the client and one toward the upstream (hot-path notes: every extra
transport.write is an extra syscall), and requests leave nothing behind in memory.

Everything runs in one process on real loopback sockets: an upstream asyncio server, the data plane with a
compiled snapshot, and a raw keep-alive client.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop

from meshproxy.config.compile import compile_snapshot
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
from meshproxy.config.load import check_resources
from meshproxy.core.direction import ListenerDirection
from meshproxy.dataplane import Dataplane
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.listeners.listener import HttpListener
from meshproxy.settings import load_settings
from meshproxy.telemetry.stats import StatsStore
from meshproxy.upstream.h1_connection import Http1UpstreamConnection

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nblue"
REQUEST = b"GET /color HTTP/1.1\r\nHost: color.demo.local\r\n\r\n"


class WriteCounter:
    """Counts the flushes of one of the proxy's own connection classes that write something (`flush` is the
    one place they call transport.write; the socket module is never touched)."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.original: Callable[..., None] = cls.flush
        self.calls = 0

    def __enter__(self) -> WriteCounter:
        original = self.original

        def counting(instance: Any) -> None:
            if instance.out:  # an empty flush never reaches the socket
                self.calls += 1
            original(instance)

        self.cls.flush = counting
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls.flush = self.original


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _proxy_and_upstream() -> tuple[HttpListener, asyncio.Server]:
    upstream = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    settings = load_settings({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/front"})
    read = read_document(colour_mesh(port, port, port - 1 if port > 1 else port + 1))
    resources, issues = check_resources(read.resources, read.issues)
    assert not [i for i in issues if i.is_error], issues
    snapshot = compile_snapshot(resources, settings.identity, version="test")
    dataplane = Dataplane(settings, StatsStore())
    dataplane.apply(snapshot)
    listener = HttpListener(
        ListenerDirection.EGRESS, "127.0.0.1", 0, dataplane, dataplane.server_codec_factory
    )
    await listener.start()
    return listener, upstream


async def _requests(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            assert await reader.readexactly(length) == b"blue"
    finally:
        writer.close()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        yield run


def test_one_write_per_socket_per_small_request(runner: asyncio.Runner) -> None:
    async def scenario() -> tuple[int, int]:
        listener, upstream = await _proxy_and_upstream()
        try:
            await _requests(listener.port, 5)  # warm: the upstream connection is pooled after the first
            with WriteCounter(Http1ConnectionManager) as down, WriteCounter(Http1UpstreamConnection) as up:
                await _requests(listener.port, 50)
            return down.calls, up.calls
        finally:
            await listener.stop_accepting()
            upstream.close()
            listener.clusters.shutdown()

    down_writes, up_writes = runner.run(scenario())
    assert down_writes == 50  # head + body in one write toward the client
    assert up_writes == 50  # request head (+ empty body) in one write toward the upstream


def test_requests_leave_nothing_behind(runner: asyncio.Runner) -> None:
    async def scenario() -> int:
        listener, upstream = await _proxy_and_upstream()
        try:
            await _requests(listener.port, 200)  # warm caches (date header, pools, interned names)
            gc.collect()
            before = sys.getallocatedblocks()
            await _requests(listener.port, 2000)
            gc.collect()
            return sys.getallocatedblocks() - before
        finally:
            await listener.stop_accepting()
            upstream.close()
            listener.clusters.shutdown()

    growth = runner.run(scenario())
    # 2000 requests: a leak of even one object per request would show as thousands of blocks.
    assert growth < 500, f"{growth} memory blocks still allocated after 2000 requests"
