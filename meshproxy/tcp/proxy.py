"""The TCP proxy: one downstream connection bridged to one upstream connection (Envoy's tcp_proxy).

Used for `tcp` listeners and routes, ALLOW_ALL passthrough of non-HTTP egress, and TLS passed through by SNI.
The upstream is chosen once per connection; `connection-error` retries happen before any byte flows. Each
upstream connection takes a slot from the cluster's circuit breakers (a tcp listener's `connectionPool`
maxConnections): at the limit the client connection is closed and `upstream_cx_overflow` counted. Both
directions respect flow control (a paused writer pauses the opposite reader) and half-close (EOF one way is
forwarded with write_eof while the other way keeps flowing).

A direction that carries a bulk stream (a read of BULK_READ bytes or more) is handed to a `BulkPump`
(net/bulk.py): from then on its bytes move socket to socket through the worker's bulk buffer, and its
transport no longer reads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import cast

from meshproxy.config.snapshot import RetryPolicy
from meshproxy.core.clock import Timer
from meshproxy.net.bulk import BulkPump, socket_fd
from meshproxy.router.retry import backoff_delay
from meshproxy.telemetry.stats import TcpProxyStats
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.connect import connect_host
from meshproxy.upstream.host import Host

log = logging.getLogger("meshproxy.tcp")

# A read this large means the peer is sending faster than one read takes it: a bulk stream, pumped from
# then on. (uvloop reads up to 256 KiB at a time; request/response traffic reads a message at a time.)
BULK_READ = 64 * 1024


class TcpState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class _Side(asyncio.Protocol):
    """One end of the bridge; forwards everything to the session."""

    __slots__ = ("eof", "pump", "send", "session", "transport", "upstream")

    def __init__(self, session: TcpProxySession, upstream: bool) -> None:
        self.session = session
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        # the transport's bound `write`, looked up once (relay calls it once per read); None once closing
        self.send: Callable[[bytes], object] | None = None
        self.eof = False
        self.pump: BulkPump | None = None  # this side's reading, pumped to the other side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(cast(asyncio.Transport, transport))

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.send = transport.write

    def data_received(self, data: bytes) -> None:
        self.session.relay(self, data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return self.session.half_close(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.side_lost(self)

    def pause_writing(self) -> None:
        self.session.set_reading(not self.upstream, False)

    def resume_writing(self) -> None:
        self.session.set_reading(not self.upstream, True)


class TcpProxySession:
    """A bridged connection. Create it with the accepted transport, then `start()` it."""

    def __init__(
        self,
        transport: asyncio.Transport,
        initial: bytes,
        cluster: ClusterRuntime,
        stats: TcpProxyStats,
        retry: RetryPolicy | None = None,
        idle_timeout: float | None = 3600.0,
    ) -> None:
        self.down = _Side(self, upstream=False)
        self.down.attach(transport)
        self.up: _Side | None = None
        self.pending = [initial] if initial else []
        self.cluster = cluster
        self.stats = stats
        self.retry = retry
        self.idle_timeout = idle_timeout
        self.state = TcpState.CONNECTING
        self.host: Host | None = None
        self.tried: tuple[Host, ...] = ()
        self.attempts = 0
        self.now = cluster.clock.now  # looked up once: relay reads the time once per read
        self.last_activity = self.now()
        self._idle_timer: Timer | None = None
        self.rx = self.tx = 0

    def __repr__(self) -> str:
        return (
            f"<TcpProxySession {self.cluster.config.name} {self.state.value} rx={self.rx} tx={self.tx} "
            f"pumped={self.pumped}>"
        )

    @property
    def protocol(self) -> asyncio.Protocol:
        """The protocol to install on the downstream transport (transport.set_protocol)."""
        return self.down

    def start(self) -> None:
        stats = self.stats
        stats.downstream_cx_total += 1
        stats.downstream_cx_total_active += 1
        if self.pending:
            self.stats.downstream_cx_rx_bytes_total += sum(len(p) for p in self.pending)
        self.down_pause(True)
        asyncio.get_running_loop().create_task(self._connect())
        if self.idle_timeout:
            self._idle_timer = self.cluster.clock.call_later(self.idle_timeout, self._check_idle)

    def down_pause(self, paused: bool) -> None:
        transport = self.down.transport
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    async def _connect(self) -> None:
        cluster = self.cluster
        while self.state is TcpState.CONNECTING:
            if not cluster.resolved:
                try:
                    async with asyncio.timeout(cluster.config.connect_timeout + 5.0):
                        await cluster.wait_resolved()
                except TimeoutError:
                    pass
            host = cluster.pick_host(self.tried)
            if host is None:
                self.stats.downstream_cx_no_route += 1
                self.close()
                return
            if not cluster.breakers.open_connection():
                self.close()  # maxConnections: counted upstream_cx_overflow
                return
            self.host = host
            self.tried += (host,)
            self.attempts += 1
            up = _Side(self, upstream=True)
            failure = await connect_host(
                cluster.connector, up, host, cluster.stats, cluster.config.connect_timeout
            )
            if failure is not None:
                cluster.breakers.connection_closed()
                if self._retry_connect():
                    cluster.stats.upstream_rq_retry += 1
                    await self._back_off(backoff_delay(self.attempts))
                    continue
                self.close()
                return
            self.up = up
            if self.state is not TcpState.CONNECTING:  # downstream went away meanwhile
                if up.transport is not None:
                    up.transport.close()  # side_lost gives the slot and the counts back
                return
            self.state = TcpState.OPEN
            for chunk in self.pending:
                self._write(up, chunk)
            self.pending = []
            if self.down.eof and up.transport is not None and up.transport.can_write_eof():
                up.transport.write_eof()
            self.down_pause(False)
            return

    async def _back_off(self, delay: float) -> None:
        """Envoy's retry back-off, timed on the clock seam as the router's is."""
        elapsed = asyncio.get_running_loop().create_future()
        self.cluster.clock.call_later(delay, lambda: None if elapsed.done() else elapsed.set_result(None))
        await elapsed

    def _retry_connect(self) -> bool:
        retry = self.retry
        return (
            retry is not None
            and retry.retry_on_connect_failure
            and self.attempts <= retry.max_retries
            and self.state is TcpState.CONNECTING
        )

    def _write(self, side: _Side, data: bytes) -> None:
        # Only `close()` closes a transport of ours, and it takes the sides' `send` away first. A transport
        # uvloop gives up on (a read or write error) drops what it is given until its connection_lost
        # closes us.
        send = side.send
        if send is not None:
            send(data)

    def relay(self, side: _Side, data: bytes) -> None:
        size = len(data)
        self.last_activity = self.now()
        if side is self.down:
            self.rx += size
            self.stats.downstream_cx_rx_bytes_total += size
            if self.up is None:
                self.pending.append(data)
                return
            self.cluster.stats.upstream_cx_tx_bytes_total += size
            other = self.up
        else:
            self.tx += size
            self.stats.downstream_cx_tx_bytes_total += size
            self.cluster.stats.upstream_cx_rx_bytes_total += size
            other = self.down
        self._write(other, data)
        if size >= BULK_READ:
            self._pump(side, other)

    def _count(self, side: _Side, size: int) -> None:
        """What `relay` counts, for bytes a pump moved (relay counts inline: it runs once per read)."""
        self.last_activity = self.now()
        if side is self.down:
            self.rx += size
            self.stats.downstream_cx_rx_bytes_total += size
            self.cluster.stats.upstream_cx_tx_bytes_total += size
        else:
            self.tx += size
            self.stats.downstream_cx_tx_bytes_total += size
            self.cluster.stats.upstream_cx_rx_bytes_total += size

    # ---------------------------------------------------------------- bulk (net/bulk.py)
    def _pump(self, side: _Side, other: _Side) -> None:
        """Hand `side`'s reading to a pump into `other`'s socket, once `other`'s transport has nothing left to
        write (the pump must not overtake bytes still queued there); else try again on a later bulk read."""
        source, sink = side.transport, other.transport
        if side.pump is not None or source is None or sink is None or sink.get_write_buffer_size():
            return
        source_fd, sink_fd = socket_fd(source), socket_fd(sink)
        if source_fd is None or sink_fd is None or source.is_closing() or sink.is_closing():
            return
        source.pause_reading()
        side.pump = BulkPump(
            asyncio.get_running_loop(),
            source_fd,
            sink_fd,
            on_moved=lambda size: self._count(side, size),
            on_eof=lambda: self._pumped_eof(side),
            on_error=self._pumped_error,
        )
        side.pump.start()

    def _pumped_eof(self, side: _Side) -> None:
        side.eof = True
        if self.half_close(side) is None:
            return  # both directions ended: closed
        if side.transport is not None and side.transport.is_closing():
            self.close()

    def _pumped_error(self, exc: OSError) -> None:
        log.debug("%r: pumped relay ended: %s", self, exc)
        self.close()

    @property
    def pumped(self) -> int:
        """How many directions a bulk pump moves (0, 1 or 2)."""
        return sum(1 for side in (self.down, self.up) if side is not None and side.pump is not None)

    def half_close(self, side: _Side) -> bool | None:
        other = self.up if side is self.down else self.down
        if other is None:
            return True  # not connected yet: the EOF is forwarded once it is
        transport = other.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        if other.eof:
            self.close()
            return None
        return True  # keep the other direction open

    def set_reading(self, upstream: bool, reading: bool) -> None:
        side = self.up if upstream else self.down
        if side is None or side.pump is not None or side.transport is None or side.transport.is_closing():
            return  # (a pumped side's transport never reads again)
        if reading:
            side.transport.resume_reading()
        else:
            side.transport.pause_reading()

    def side_lost(self, side: _Side) -> None:
        if side.upstream:
            self.cluster.breakers.connection_closed()
            if side is self.up:
                self.up = None
                self.cluster.stats.upstream_cx_active -= 1
                self.cluster.stats.upstream_cx_destroy += 1
                if self.host is not None:
                    self.host.cx_active -= 1
        self.close()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.state is TcpState.CLOSED or not self.idle_timeout:
            return
        idle_for = self.now() - self.last_activity
        if idle_for >= self.idle_timeout:
            self.stats.idle_timeout += 1
            self.close()
            return
        self._idle_timer = self.cluster.clock.call_later(self.idle_timeout - idle_for, self._check_idle)

    def close(self) -> None:
        if self.state is TcpState.CLOSED:
            return
        self.state = TcpState.CLOSED
        self.stats.downstream_cx_total_active -= 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for side in (self.down, self.up):
            if side is not None and side.pump is not None:
                side.pump.close()  # its duplicate descriptors first: the transports close the sockets
        for side in (self.down, self.up):
            if side is not None and side.transport is not None:
                side.send = None  # nothing more is relayed into a closing transport
                side.transport.close()  # the upstream's connection_lost does its accounting
