"""The in-memory twins keep the promises of the real seams (asyncio transports, the loop's clock, the
connector), so what the component tier proves over them holds over sockets."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from meshproxy.net.connector import ConnectFailure

from .memory import READ_SIZE, Accept, Blackhole, MemoryNetwork, Refuse, Run


class Recorder(asyncio.Protocol):
    def __init__(self, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.transport: asyncio.Transport | None = None
        self.reads: list[bytes] = []
        self.log: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)

    def eof_received(self) -> bool | None:
        self.log.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.append(f"lost:{type(exc).__name__ if exc else None}")

    def pause_writing(self) -> None:
        self.log.append("pause_writing")

    def resume_writing(self) -> None:
        self.log.append("resume_writing")


def test_bytes_arrive_on_a_later_turn_in_order_and_in_bounded_reads(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        a, b = Recorder(), Recorder()
        end_a, _ = net.connect(a, b)
        end_a.write(b"x" * (READ_SIZE + 10))
        end_a.write(b"tail")
        assert b.reads == []  # never inside write()
        await net.settle()
        assert [len(r) for r in b.reads] == [READ_SIZE, 14]
        assert b"".join(b.reads).endswith(b"xtail")

    run(scenario())


def test_a_reader_that_pauses_fills_the_writers_buffer_and_pauses_the_writer(
    run: Run, net: MemoryNetwork
) -> None:
    async def scenario() -> None:
        a, b = Recorder(), Recorder()
        end_a, end_b = net.connect(a, b, client_high_water=1000)
        end_b.pause_reading()
        end_a.write(b"y" * 1500)
        await net.settle()
        assert (b.reads, a.log, end_a.get_write_buffer_size()) == ([], ["pause_writing"], 1500)
        end_b.resume_reading()
        await net.settle()
        assert (len(b"".join(b.reads)), a.log) == (1500, ["pause_writing", "resume_writing"])

    run(scenario())


def test_eof_follows_the_bytes_and_a_protocol_that_does_not_keep_it_open_closes(
    run: Run, net: MemoryNetwork
) -> None:
    async def scenario() -> None:
        a, b = Recorder(keep_open=True), Recorder(keep_open=False)
        end_a, end_b = net.connect(a, b)
        end_a.write(b"last")
        end_a.write_eof()
        with pytest.raises(RuntimeError):
            end_a.write(b"after eof")
        await net.settle()
        assert (b.reads, b.log) == ([b"last"], ["eof", "lost:None"])  # b closed itself...
        assert a.log == ["eof"] and end_b.is_closing()  # ...and a got its EOF, kept half-open

    run(scenario())


def test_abort_is_a_reset_for_the_peer(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        a, b = Recorder(), Recorder()
        end_a, _ = net.connect(a, b)
        end_a.write(b"dropped")
        end_a.abort()
        await net.settle()
        assert (b.reads, b.log, a.log) == ([], ["lost:ConnectionResetError"], ["lost:None"])

    run(scenario())


def test_fake_timers_fire_only_when_time_is_advanced_in_time_order(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        fired: list[str] = []
        clock = net.clock
        clock.call_later(2.0, lambda: fired.append("2s"))
        clock.call_later(1.0, lambda: fired.append("1s"))
        clock.call_later(1.5, lambda: fired.append("cancelled")).cancel()
        await net.settle()
        assert fired == [] and clock.pending() == [1.0, 2.0]
        await net.advance(1.9)
        assert fired == ["1s"]
        await net.advance(0.1)
        assert fired == ["1s", "2s"] and clock.pending() == []

    run(scenario())


def test_the_connector_refuses_times_out_on_the_fake_clock_and_accepts(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        server = Recorder()
        net.connector.route(("10.0.9.1", 80), Refuse())
        net.connector.route(("10.0.9.2", 80), Blackhole())
        net.connector.route(("10.0.9.3", 80), Accept(lambda: server))
        with pytest.raises(ConnectFailure) as refused:
            await net.connector.connect(Recorder(), "10.0.9.1", 80, 1.0)
        assert not refused.value.timed_out

        pending = asyncio.ensure_future(net.connector.connect(Recorder(), "10.0.9.2", 80, 1.0))
        await net.advance(0.9)
        assert not pending.done()
        await net.advance(0.2)
        with pytest.raises(ConnectFailure) as timed_out:
            await pending
        assert timed_out.value.timed_out

        client = Recorder()
        await net.connector.connect(client, "10.0.9.3", 80, 1.0)
        assert client.transport is not None and server.transport is not None  # connection_made has run
        assert client.transport.get_extra_info("peername") == ("10.0.9.3", 80)

    run(scenario())
