"""Bulk TCP through the proxy moves by the bulk pump (net/bulk.py, issue 15): real loopback sockets, the
session in this process. Every byte arrives in order both ways, half-close still travels, the stats count what
the pump moved, a slow receiver holds the sender back without loss, a reset mid-stream ends the session, and
request/response traffic is never pumped."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop

from meshproxy.config.compile import DEFAULT_TCP_RETRY_POLICY
from meshproxy.tcp.proxy import BULK_READ, TcpProxySession
from meshproxy.telemetry.stats import TcpProxyStats

from ..proxy import tcp_cluster

BULK = 8 << 20  # many full reads: the pump takes over after the first one
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        yield run


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes as it reads, then closes after the client's half-close."""
    while data := await reader.read(1 << 20):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _through_proxy(
    upstream: Handler, client: Callable[[int], Awaitable[bytes]]
) -> tuple[bytes, list[TcpProxySession], TcpProxyStats]:
    app = await asyncio.start_server(upstream, "127.0.0.1", 0)
    cluster = tcp_cluster([("127.0.0.1", app.sockets[0].getsockname()[1])])
    stats = TcpProxyStats()
    sessions: list[TcpProxySession] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        session = TcpProxySession(transport, b"", cluster, stats, DEFAULT_TCP_RETRY_POLICY, 30.0)  # type: ignore[arg-type]
        sessions.append(session)
        transport.set_protocol(session.protocol)
        session.start()

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        answer = await asyncio.wait_for(client(proxy.sockets[0].getsockname()[1]), 30)
        return answer, sessions, stats
    finally:
        proxy.close()
        app.close()
        cluster.shutdown()


async def _send_and_read_back(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for offset in range(0, len(payload), 1 << 20):
            writer.write(payload[offset : offset + (1 << 20)])
            await writer.drain()
        writer.write_eof()

    sending = asyncio.ensure_future(send())
    answer = await reader.read()  # to the proxy's EOF, which follows the upstream's close
    await sending
    writer.close()
    return answer


def test_a_bulk_stream_is_pumped_and_arrives_whole(runner: asyncio.Runner) -> None:
    payload = os.urandom(BULK)
    answer, sessions, stats = runner.run(
        _through_proxy(_echo_stream, lambda port: _send_and_read_back(port, payload))
    )
    assert answer == payload  # every byte, in order, through the bulk buffer, then the half-closes
    # client -> upstream is pumped. (The way back may stay on the transports: it switches only at a bulk
    # read that finds nothing queued toward the client, and this client shares the proxy's loop.)
    assert len(sessions) == 1 and sessions[0].down.pump is not None
    assert stats.downstream_cx_rx_bytes_total == BULK  # what the pump moved is counted too
    assert stats.downstream_cx_tx_bytes_total == BULK


def test_a_slow_receiver_holds_the_sender_back_and_loses_nothing(runner: asyncio.Runner) -> None:
    """The upstream reads in small pieces with pauses, so the proxy's writes to it come back short and the
    pump must keep the rest (its `pending`) and stop reading until the upstream takes it."""
    payload = os.urandom(BULK)

    async def slow_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        for reads in itertools.count():
            data = await reader.read(16 << 10)
            if not data:
                break
            digest.update(data)
            if reads % 16 == 0:
                await asyncio.sleep(0.002)  # ~ 8 MiB / 256 KiB pauses: a receiver that keeps falling behind
        writer.write(digest.digest())
        await writer.drain()
        writer.close()

    answer, sessions, stats = runner.run(
        _through_proxy(slow_digest, lambda port: _send_and_read_back(port, payload))
    )
    assert answer == hashlib.sha256(payload).digest()
    assert len(sessions) == 1 and sessions[0].down.pump is not None
    assert stats.downstream_cx_rx_bytes_total == BULK


def test_request_response_messages_are_never_pumped(runner: asyncio.Runner) -> None:
    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        received = b""
        for _ in range(200):
            writer.write(b"m" * 64)
            received += await reader.readexactly(64)
        writer.write_eof()
        received += await reader.read()
        writer.close()
        return received

    answer, sessions, _ = runner.run(_through_proxy(_echo_stream, client))
    assert answer == b"m" * 64 * 200
    assert [s.pumped for s in sessions] == [0]


def test_an_upstream_reset_mid_stream_ends_the_client_connection(runner: asyncio.Runner) -> None:
    async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4 * BULK_READ)  # the proxy is pumping by now
        writer.transport.abort()

    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(BULK // (1 << 20)):
                writer.write(os.urandom(1 << 20))
                await writer.drain()
        except ConnectionError:
            pass  # the proxy closed the connection while we were still sending: the point of the test
        try:
            return await reader.read()
        except ConnectionError:
            return b""
        finally:
            writer.close()

    answer, sessions, _ = runner.run(_through_proxy(resetting, client))
    assert answer == b""
    assert sessions and all(s.state.value == "closed" for s in sessions)
