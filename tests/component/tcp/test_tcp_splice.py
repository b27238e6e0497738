"""Bulk TCP through the proxy moves by splice(2) (net/splice.py, issue 15): real loopback sockets, the session
in this process. Every byte arrives in order both ways, half-close still travels, the stats count what the
kernel moved, a reset mid-stream ends the session, and request/response traffic is never spliced."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.config.compile import DEFAULT_TCP_RETRY_POLICY
from meshproxy.config.snapshot import Cluster, ListenerProtocol, StaticDiscovery
from meshproxy.net.splice import splice_supported
from meshproxy.tcp.proxy import BULK_READ, TcpProxySession
from meshproxy.telemetry.stats import ClusterStats, TcpProxyStats
from meshproxy.upstream.cluster import ClusterRuntime

pytestmark = pytest.mark.skipif(not splice_supported(), reason="splice(2) is Linux only")

BULK = 8 << 20  # many full reads: the splice takes over after the first one
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
    config = Cluster(
        name="cds_ingress_m_db_tcp_7100",
        discovery=StaticDiscovery((("127.0.0.1", app.sockets[0].getsockname()[1]),)),
        protocol=ListenerProtocol.TCP,
        virtual_node="db",
        connect_timeout=1.0,
    )
    cluster = ClusterRuntime(config, ClusterStats(), HttptoolsClientCodec)
    cluster.start()
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


def test_a_bulk_stream_is_spliced_and_arrives_whole(runner: asyncio.Runner) -> None:
    payload = os.urandom(BULK)
    answer, sessions, stats = runner.run(
        _through_proxy(_echo_stream, lambda port: _send_and_read_back(port, payload))
    )
    assert answer == payload  # every byte, in order, through the pipe, then the half-closes
    # client -> upstream is spliced. (The way back may stay on the transports: it switches only at a bulk
    # read that finds nothing queued toward the client, and this client shares the proxy's loop.)
    assert len(sessions) == 1 and sessions[0].down.pump is not None
    assert stats.downstream_cx_rx_bytes_total == BULK  # what the kernel moved is counted too
    assert stats.downstream_cx_tx_bytes_total == BULK


def test_request_response_messages_are_never_spliced(runner: asyncio.Runner) -> None:
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
    assert [s.spliced for s in sessions] == [0]


def test_an_upstream_reset_mid_stream_ends_the_client_connection(runner: asyncio.Runner) -> None:
    async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4 * BULK_READ)  # the proxy is splicing by now
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
