"""In-memory twins of the proxy's I/O seams: a transport pair, a fake clock and a connector.

The component tier runs the real router, pools, connection managers and codecs over these, so what takes a
subprocess and wall-clock seconds end to end (retries, timeouts, pool limits, flow control, half-close) runs
here in milliseconds and the same way every time (STYLE.md habit 5: in-memory twins of the seams, never a
patched socket).

- `MemoryTransport`: one end of a connection. A write reaches the peer protocol's `data_received` on a later
  turn of the loop, in reads of at most `READ_SIZE`, and only while the peer is reading; bytes the peer has
  not read count against the writer's buffer, whose high-water mark calls the writer's `pause_writing` (and
  `resume_writing` below the low-water mark), as asyncio's socket transports do. `write_eof` reaches the peer
  as `eof_received` after the bytes before it; `close` flushes, sends EOF, and ends in `connection_lost`;
  `abort` drops what is queued and the peer sees a reset (`connection_lost(ConnectionResetError)`).
- `FakeClock` implements `meshproxy.core.clock.Clock`: timers fire only when the test advances time.
- `MemoryConnector` implements `meshproxy.net.connector.Connector` over a script per (host, port): refuse,
  hang until the connect timeout passes on the fake clock, wait for the test (`Gate`), or accept with a
  server protocol.
- `MemoryNetwork` ties them together for one test and knows when the loop has gone quiet (`settle`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from meshproxy.net.connector import ConnectFailure

READ_SIZE = 64 * 1024  # bytes handed to one data_received (uvloop reads up to 256 KiB; smaller shows more)
DEFAULT_HIGH_WATER = 64 * 1024  # asyncio's default write-buffer limits
_QUIET_TURNS = 8  # loop turns without network activity before `settle` calls the loop quiet
_MAX_SETTLE_TURNS = 100_000  # a bound: a test that never goes quiet fails instead of hanging

Address = tuple[str, int]
Run = Callable[[Coroutine[Any, Any, Any]], Any]  # the `run` fixture: runs a scenario on a fresh loop


class Activity:
    """Counts the callbacks the memory network has scheduled and not yet run (deliveries, losses)."""

    __slots__ = ("scheduled", "total")

    def __init__(self) -> None:
        self.scheduled = 0
        self.total = 0

    def __repr__(self) -> str:
        return f"<Activity scheduled={self.scheduled} total={self.total}>"

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.scheduled += 1
        self.total += 1

        def run() -> None:
            self.scheduled -= 1
            callback()

        asyncio.get_running_loop().call_soon(run)


# ------------------------------------------------------------------------------------------------ transport


class RedirectedSocket:
    """What `transport.get_extra_info("socket")` gives for a connection iptables redirected: conntrack's
    answer to SO_ORIGINAL_DST (meshproxy/net/original_dst.py) is `original`. Not a socket: nothing else of
    one is here."""

    family = socket.AF_INET

    def __init__(self, local: Address, original: Address) -> None:
        self.local = local
        self.original = original

    def __repr__(self) -> str:
        return f"<RedirectedSocket {self.local} from {self.original}>"

    def getsockname(self) -> Address:
        return self.local

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes:
        host, port = self.original
        return (
            struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + b"\0" * 8
        )


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory TCP connection (see the module docstring for the semantics)."""

    def __init__(
        self,
        protocol: asyncio.BaseProtocol,
        activity: Activity,
        *,
        sockname: Address,
        peername: Address,
        high_water: int = DEFAULT_HIGH_WATER,
        sock: RedirectedSocket | None = None,
    ) -> None:
        super().__init__({"sockname": sockname, "peername": peername, "socket": sock})
        self._protocol = protocol
        self._activity = activity
        self.peer: MemoryTransport | None = None
        self._pending = bytearray()  # written here, not yet read by the peer
        self._eof_written = False  # write_eof() was called
        self._eof_pending = False  # an EOF follows the pending bytes (write_eof or close)
        self._eof_sent = False
        self._delivering = False
        self._reading = True
        self._closing = False
        self._lost = False
        self._writing_paused = False
        self._high = high_water
        self._low = high_water // 4
        self.written = 0  # bytes this side wrote in total
        self.eof_seen = False  # the peer's EOF reached this side's protocol

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return (
            f"<MemoryTransport {self.get_extra_info('sockname')} {state} pending={len(self._pending)} "
            f"reading={self._reading} paused_writing={self._writing_paused}>"
        )

    # ---------------------------------------------------------------- asyncio.Transport
    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self.peer is not None:
            self.peer._schedule()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")  # as asyncio and uvloop do
        if not data or self._closing:
            return  # after close() asyncio drops writes silently
        self._pending += data
        self.written += len(data)
        self._schedule()
        if not self._writing_paused and len(self._pending) > self._high:
            self._writing_paused = True
            self._protocol_call("pause_writing")

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if self._eof_pending:
            return
        self._eof_written = self._eof_pending = True
        self._schedule()

    def close(self) -> None:
        """Flush what is written, send EOF, stop reading; `connection_lost(None)` on a later turn."""
        if self._closing:
            return
        self._closing = True
        self._eof_pending = True
        self._schedule()
        self._lose(None)

    def abort(self) -> None:
        """Drop what is queued; the peer sees a reset."""
        self._pending.clear()
        self._closing = True
        self._eof_pending = True
        self._eof_sent = True
        self._lose(None)
        peer = self.peer
        if peer is not None and not peer._lost:
            peer._pending.clear()
            peer._closing = True
            peer._lose(ConnectionResetError("connection reset by peer"))

    # ---------------------------------------------------------------- delivery
    def _schedule(self) -> None:
        if not self._delivering:
            self._delivering = True
            self._activity.call_soon(self._deliver)

    def _deliver(self) -> None:
        """Hand the peer one read of what this side wrote (if it is reading), then the EOF after it."""
        self._delivering = False
        peer = self.peer
        if peer is None:
            return
        if peer._closing:
            if self._pending and not self._closing:
                # bytes to a connection that is gone: the peer's stack answers with a reset
                self._pending.clear()
                self._closing = True
                self._lose(ConnectionResetError("connection reset by peer"))
            self._pending.clear()
            return
        if not peer._reading:
            return  # the peer's resume_reading schedules the rest
        if self._pending:
            chunk = bytes(self._pending[:READ_SIZE])
            del self._pending[:READ_SIZE]
            self._protocol_wake()
            peer._protocol_call("data_received", chunk)
            if self._pending:
                self._schedule()
                return
        if self._eof_pending and not self._eof_sent and not self._pending:
            self._eof_sent = True
            peer.eof_seen = True
            keep_open = peer._protocol_call("eof_received")
            if not keep_open:
                peer.close()  # asyncio closes a transport whose protocol does not keep it half-open

    def _protocol_wake(self) -> None:
        if self._writing_paused and len(self._pending) <= self._low and not self._lost:
            self._writing_paused = False
            self._protocol_call("resume_writing")

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._reading = False
        self._activity.call_soon(lambda: self._protocol_call("connection_lost", exc))

    def _protocol_call(self, name: str, *args: Any) -> Any:
        return getattr(self._protocol, name)(*args)


def connect_pair(
    client: asyncio.BaseProtocol,
    server: asyncio.BaseProtocol,
    activity: Activity,
    *,
    client_address: Address = ("10.0.0.2", 40000),
    server_address: Address = ("10.0.0.1", 15001),
    client_high_water: int = DEFAULT_HIGH_WATER,
    server_high_water: int = DEFAULT_HIGH_WATER,
    original_destination: Address | None = None,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect two protocols; both `connection_made` have run when this returns (server first).
    `original_destination`: the client meant to reach it and was redirected to the server."""
    client_end = MemoryTransport(
        client, activity, sockname=client_address, peername=server_address, high_water=client_high_water
    )
    redirected = (
        None if original_destination is None else RedirectedSocket(server_address, original_destination)
    )
    server_end = MemoryTransport(
        server,
        activity,
        sockname=server_address,
        peername=client_address,
        high_water=server_high_water,
        sock=redirected,
    )
    client_end.peer, server_end.peer = server_end, client_end
    server.connection_made(server_end)
    client.connection_made(client_end)
    return client_end, server_end


class Peer(asyncio.Protocol):
    """A plain end of a connection for tests: records what arrives, writes what the test says. It stays
    half-open on EOF (the test decides when to close)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.eof = False
        self.lost = False
        self.lost_exc: Exception | None = None
        self.write_pauses = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} received={len(self.received)} eof={self.eof} lost={self.lost}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool | None:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc

    def pause_writing(self) -> None:
        self.write_pauses += 1

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def write_eof(self) -> None:
        assert self.transport is not None
        self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


# ---------------------------------------------------------------------------------------------------- clock


@dataclass(eq=False, slots=True)
class FakeTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """`Clock` whose time moves only when the test says so. `call_soon` is the running loop's."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._sequence = itertools.count()

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now} timers={len(self.pending())}>"

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def call_soon(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)

    def pending(self) -> list[float]:
        """Delays from now of the timers still armed, soonest first."""
        return sorted(t.when - self._now for _, _, t in self._timers if not t.cancelled)

    def fire_next(self, until: float) -> bool:
        """Move to the earliest armed timer due by `until` and run it; False if there is none."""
        while self._timers:
            when, _, timer = self._timers[0]
            if when > until:
                return False
            heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            return True
        return False

    def move_to(self, when: float) -> None:
        self._now = max(self._now, when)


# ------------------------------------------------------------------------------------------------ connector


@dataclass(eq=False)
class Refuse:
    """The connection is refused at once (ECONNREFUSED)."""


@dataclass(eq=False)
class Blackhole:
    """Nothing answers: the connect times out when the fake clock passes the connect timeout."""


@dataclass(eq=False)
class Accept:
    """A server accepts: `server()` builds the protocol at the upstream end of the new connection."""

    server: Callable[[], asyncio.Protocol]
    high_water: int = DEFAULT_HIGH_WATER  # the upstream end's write-buffer limit


@dataclass(eq=False)
class Gate:
    """A connect that waits for the test: `open()` accepts with `server`, `refuse()` refuses; unanswered,
    it times out on the fake clock."""

    server: Callable[[], asyncio.Protocol]
    outcome: asyncio.Future[bool] | None = field(default=None, repr=False)
    reached: bool = False  # the proxy is waiting on this gate

    def open(self) -> None:
        assert self.outcome is not None, "nobody is connecting through this gate yet"
        self.outcome.set_result(True)

    def refuse(self) -> None:
        assert self.outcome is not None, "nobody is connecting through this gate yet"
        self.outcome.set_result(False)


Behaviour = Refuse | Blackhole | Accept | Gate


class MemoryConnector:
    """`Connector` over scripted in-memory upstreams: each (host, port) has a list of behaviours taken one
    per connect, the last one repeating. Unknown addresses refuse."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.scripts: dict[Address, list[Behaviour]] = {}
        self.attempts: list[Address] = []
        self.transports: list[MemoryTransport] = []  # the proxy's ends of accepted connections

    def __repr__(self) -> str:
        return f"<MemoryConnector addresses={len(self.scripts)} attempts={len(self.attempts)}>"

    def route(self, address: Address, *behaviours: Behaviour) -> None:
        assert behaviours
        self.scripts[address] = list(behaviours)

    def _next(self, address: Address) -> Behaviour:
        script = self.scripts.get(address)
        if not script:
            return Refuse()
        return script.pop(0) if len(script) > 1 else script[0]

    async def connect(self, protocol: asyncio.Protocol, host: str, port: int, timeout: float) -> None:
        address = (host, port)
        self.attempts.append(address)
        behaviour = self._next(address)
        if isinstance(behaviour, Refuse):
            raise ConnectFailure("Connection refused")
        if isinstance(behaviour, Blackhole | Gate):
            loop = asyncio.get_running_loop()
            outcome: asyncio.Future[bool | None] = loop.create_future()
            timer = self.network.clock.call_later(
                timeout, lambda: None if outcome.done() else outcome.set_result(None)
            )
            if isinstance(behaviour, Gate):
                gate_outcome: asyncio.Future[bool] = loop.create_future()
                gate_outcome.add_done_callback(
                    lambda f: None if outcome.done() else outcome.set_result(f.result())
                )
                behaviour.outcome = gate_outcome
                behaviour.reached = True
            result = await outcome
            timer.cancel()
            if result is None:
                raise ConnectFailure(f"connect timeout after {timeout}s", timed_out=True)
            if not result:
                raise ConnectFailure("Connection refused")
            assert isinstance(behaviour, Gate)
            server = behaviour.server()
            high_water = DEFAULT_HIGH_WATER
        else:
            server = behaviour.server()
            high_water = behaviour.high_water
        proxy_end, _ = connect_pair(
            protocol,
            server,
            self.network.activity,
            client_address=("10.0.0.1", 50000 + len(self.attempts)),
            server_address=address,
            server_high_water=high_water,
        )
        self.transports.append(proxy_end)


# -------------------------------------------------------------------------------------------------- network


class MemoryNetwork:
    """One test's in-memory world: the fake clock, the connector, and the loop's quiet points."""

    def __init__(self) -> None:
        self.activity = Activity()
        self.clock = FakeClock()
        self.connector = MemoryConnector(self)

    def __repr__(self) -> str:
        return f"<MemoryNetwork {self.clock!r} {self.activity!r}>"

    def connect(
        self,
        client: asyncio.BaseProtocol,
        server: asyncio.BaseProtocol,
        *,
        client_high_water: int = DEFAULT_HIGH_WATER,
        server_high_water: int = DEFAULT_HIGH_WATER,
        original_destination: Address | None = None,
    ) -> tuple[MemoryTransport, MemoryTransport]:
        """A downstream connection: `client` (the test's) to `server` (the proxy's accepted protocol), as
        if redirected from `original_destination` when given."""
        return connect_pair(
            client,
            server,
            self.activity,
            client_high_water=client_high_water,
            server_high_water=server_high_water,
            original_destination=original_destination,
        )

    async def settle(self) -> None:
        """Run the loop until nothing moves on the memory network for a few turns (bounded)."""
        activity = self.activity
        quiet = 0
        for _ in range(_MAX_SETTLE_TURNS):
            before = activity.total
            await asyncio.sleep(0)
            if activity.total == before and activity.scheduled == 0:
                quiet += 1
                if quiet >= _QUIET_TURNS:
                    return
            else:
                quiet = 0
        raise AssertionError(f"the memory network never went quiet: {activity!r}")

    async def advance(self, seconds: float) -> None:
        """Move the fake clock forward, firing each timer at its own time and letting the loop settle
        after each (a retry's back-off armed by a timer fires within the same advance if it is due)."""
        await self.settle()
        clock = self.clock
        until = clock.now() + seconds
        while clock.fire_next(until):
            await self.settle()
        clock.move_to(until)
        await self.settle()
