"""The TCP proxy over real loopback sockets: a connection-error retry moves to another host before any byte
flows (issue 5), bytes cross unchanged both ways, and half-close is forwarded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import uvloop

from meshproxy.config.compile import DEFAULT_TCP_RETRY_POLICY
from meshproxy.tcp.proxy import TcpProxySession
from meshproxy.telemetry.stats import ClusterStats, TcpProxyStats

from ..proxy import tcp_cluster


def refused_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        yield run


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # until the client's half-close
    writer.write(data.upper())
    await writer.drain()
    writer.close()


async def _through_proxy(hosts: tuple[tuple[str, int], ...], payload: bytes) -> tuple[bytes, ClusterStats]:
    cluster = tcp_cluster(hosts, "cds_egress_m_db_tcp_7100")
    stats = cluster.stats
    tcp_stats = TcpProxyStats()

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        session = TcpProxySession(transport, b"", cluster, tcp_stats, DEFAULT_TCP_RETRY_POLICY, 30.0)  # type: ignore[arg-type]
        transport.set_protocol(session.protocol)
        session.start()

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        writer.write_eof()  # half-close: the upstream reads to EOF, then answers
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer, stats
    finally:
        proxy.close()
        cluster.shutdown()


def test_connect_failure_is_retried_on_another_host_before_any_byte_flows(runner: asyncio.Runner) -> None:
    async def scenario() -> tuple[bytes, ClusterStats]:
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        try:
            live = echo.sockets[0].getsockname()[1]
            # round robin starts after the first host: the refused one (second) is picked first
            hosts = (("127.0.0.1", live), ("127.0.0.1", refused_port()))
            return await _through_proxy(hosts, b"select 1;" * 1000)
        finally:
            echo.close()

    answer, stats = runner.run(scenario())
    assert answer == b"SELECT 1;" * 1000
    assert stats.upstream_cx_connect_fail == 1
    assert stats.upstream_rq_retry == 1
    assert stats.upstream_cx_total == 2


def test_all_hosts_refusing_closes_the_client(runner: asyncio.Runner) -> None:
    answer, stats = runner.run(_through_proxy((("127.0.0.1", refused_port()),), b"hello"))
    assert answer == b""
    assert stats.upstream_cx_connect_fail == 1 + DEFAULT_TCP_RETRY_POLICY.max_retries


def test_bytes_for_a_transport_that_closed_itself_are_dropped_and_the_session_closes(
    runner: asyncio.Runner,
) -> None:
    """uvloop gives up on a transport itself on a read or write error and reports connection_lost a turn
    later; bytes relayed into it in between are dropped by its `write` (the relay does not ask
    `is_closing()` first), nothing raises, and the upstream's connection_lost then closes the client.
    `abort()` stands in for the error: uvloop's error path is the same `_force_close`."""

    async def scenario() -> tuple[bytes, int]:
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        cluster = tcp_cluster((("127.0.0.1", echo.sockets[0].getsockname()[1]),), "cds_egress_m_db_tcp_7100")
        sessions: list[TcpProxySession] = []

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transport = writer.transport
            session = TcpProxySession(transport, b"", cluster, TcpProxyStats(), None, 30.0)  # type: ignore[arg-type]
            transport.set_protocol(session.protocol)
            session.start()
            sessions.append(session)

        proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.sockets[0].getsockname()[1])
            for _ in range(200):
                if sessions and sessions[0].up is not None:
                    break
                await asyncio.sleep(0.01)
            session = sessions[0]
            up = session.up
            assert up is not None and up.transport is not None
            up.transport.abort()  # the handle is closed now; connection_lost comes on the next turn
            session.down.data_received(b"after the upstream closed")  # must not raise
            answer = await asyncio.wait_for(reader.read(), 10)  # the client is closed in turn
            writer.close()
            return answer, cluster.stats.upstream_cx_destroy
        finally:
            proxy.close()
            echo.close()
            cluster.shutdown()

    answer, destroyed = runner.run(scenario())
    assert answer == b""
    assert destroyed == 1
