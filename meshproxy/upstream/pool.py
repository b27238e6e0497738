"""The connection pool of one upstream host, whatever the protocol (httpcore's and Envoy's shape).

One `HostPool` manages `PooledConnection`s: HTTP/1.1 connections (one stream at a time) and HTTP/2
connections (up to the peer's stream limit) alike. It decides synchronously (`acquire`): a stream on a
connection with room now, or queue the request and open connections for the queue, or overflow under the
cluster's circuit breakers. The one piece of I/O, connecting, runs in a task of its own through the
`Connector` seam. Queued requests are served in arrival order as connections gain room.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

from meshproxy.core.clock import Clock
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.net.connector import Connector
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.connect import connect_host
from meshproxy.upstream.host import Host
from meshproxy.upstream.limits import CircuitBreakers
from meshproxy.upstream.ports import ConnectionOwner, PooledConnection, PoolWaiter, Upstream

log = logging.getLogger("meshproxy.upstream")

NewConnection = Callable[[ConnectionOwner], PooledConnection]


class Acquire(enum.Enum):
    READY = "ready"  # a stream was handed over synchronously
    PENDING = "pending"  # the waiter will be called back
    OVERFLOW = "overflow"  # a circuit breaker is open: max requests or max pending requests reached


class PoolState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"  # shut down: no new connections; busy ones close when their streams end


class HostPool(ConnectionOwner):
    """Implements `ConnectionOwner` for its connections.

    `streams_per_connection` is how many queued requests one connection being opened is expected to take
    (1 for HTTP/1.1; for HTTP/2 the stream limit a server is assumed to allow before its SETTINGS arrive), so
    a queue of 100 requests opens 100 HTTP/1.1 connections but one HTTP/2 connection.
    """

    __slots__ = (
        "breakers",
        "clock",
        "connect_timeout",
        "connecting",
        "connections",
        "connector",
        "host",
        "new_connection",
        "pending",
        "ready",
        "serve_scheduled",
        "state",
        "stats",
        "streams_per_connection",
    )  # fmt: skip

    def __init__(
        self,
        host: Host,
        breakers: CircuitBreakers,
        stats: ClusterStats,
        new_connection: NewConnection,
        *,
        streams_per_connection: int,
        connector: Connector,
        connect_timeout: float,
        clock: Clock,
    ) -> None:
        self.host = host
        self.breakers = breakers
        self.stats = stats
        self.new_connection = new_connection
        self.streams_per_connection = streams_per_connection
        self.connector = connector
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.connections: list[PooledConnection] = []
        self.ready: list[PooledConnection] = []  # connections with room, most recently used last
        self.pending: deque[PoolWaiter] = deque()
        self.connecting = 0
        self.serve_scheduled = False
        self.state = PoolState.OPEN

    def __repr__(self) -> str:
        return (
            f"<HostPool {self.host.label} {self.state.value} connections={len(self.connections)} "
            f"ready={len(self.ready)} connecting={self.connecting} pending={len(self.pending)}>"
        )

    @property
    def label(self) -> str:
        return self.host.label

    # ---------------------------------------------------------------- decisions
    def acquire(self, waiter: PoolWaiter) -> tuple[Acquire, Upstream | None]:
        """A stream now (READY), later through the waiter's callbacks (PENDING), or OVERFLOW."""
        breakers = self.breakers
        if not breakers.request_allowed():
            return Acquire.OVERFLOW, None
        ready = self.ready
        while ready:
            connection = ready[-1]
            if connection.has_capacity():
                upstream = connection.new_stream()
                if self.streams_per_connection == 1 or not connection.has_capacity():
                    ready.pop()
                return Acquire.READY, upstream
            ready.pop()
        if self.state is PoolState.CLOSED or not breakers.admit_pending():
            return Acquire.OVERFLOW, None
        self.pending.append(waiter)
        self._connect_for_pending()
        return Acquire.PENDING, None

    def cancel(self, waiter: PoolWaiter) -> None:
        """The waiter gave up (timeout, client gone)."""
        try:
            self.pending.remove(waiter)
        except ValueError:
            return
        self.breakers.pending_done()

    def _connect_for_pending(self) -> None:
        """Open connections until those being opened can take every queued request."""
        while (
            self.state is PoolState.OPEN
            and self.connecting * self.streams_per_connection < len(self.pending)
            and self.breakers.open_connection()
        ):
            self.connecting += 1
            connection = self.new_connection(self)
            asyncio.get_running_loop().create_task(self._connect(connection))

    def _next_waiter(self) -> PoolWaiter:
        self.breakers.pending_done()
        return self.pending.popleft()

    # ---------------------------------------------------------------- connecting (the I/O)
    async def _connect(self, connection: PooledConnection) -> None:
        # every PooledConnection is also the asyncio.Protocol that owns its socket
        owner = cast(asyncio.Protocol, connection)
        failure = await connect_host(self.connector, owner, self.host, self.stats, self.connect_timeout)
        self.connecting -= 1
        if failure is not None:
            self.breakers.connection_closed()
            log.debug("%r: connect failed: %s", self, failure)
            self._fail_unservable()
            return
        self.connections.append(connection)
        if self.state is PoolState.CLOSED:
            connection.close()
            return
        connection.connected()

    def _fail_unservable(self) -> None:
        """After a failed connect: the queued requests that the connections still being opened cannot take
        fail now (at least the one this connection was opened for), so they can be retried elsewhere."""
        excess = max(1, len(self.pending) - self.connecting * self.streams_per_connection)
        for _ in range(min(excess, len(self.pending))):
            self._next_waiter().on_pool_failure(AttemptFailure.CONNECT_FAILURE)

    # ---------------------------------------------------------------- ConnectionOwner
    def on_capacity(self, connection: PooledConnection) -> None:
        ready = self.ready
        if connection in ready:
            ready.remove(connection)  # to the end: most recently used, so reused first (LIFO)
        if self.pending:
            # Serve the queue on the next turn of the loop, not inside the callback that freed the slot (the
            # request that released it may still be finishing).
            if not self.serve_scheduled:
                self.serve_scheduled = True
                self.clock.call_soon(self._serve_pending)
            ready.append(connection)
            return
        if self.state is PoolState.CLOSED and connection.active == 0:
            connection.close()
            return
        ready.append(connection)

    def _serve_pending(self) -> None:
        self.serve_scheduled = False
        ready = self.ready
        while self.pending and ready:
            connection = ready[-1]
            if not connection.has_capacity():
                ready.pop()
                continue
            upstream = connection.new_stream()
            self._next_waiter().on_pool_ready(upstream)
        if self.pending:
            self._connect_for_pending()

    def on_connection_closed(self, connection: PooledConnection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            self.breakers.connection_closed()
            stats = self.stats
            stats.upstream_cx_active -= 1
            stats.upstream_cx_destroy += 1
            self.host.cx_active -= 1
        if connection in self.ready:
            self.ready.remove(connection)
        if self.pending and self.state is PoolState.OPEN:
            self._connect_for_pending()  # a connection slot is free: a request queued behind it may go now

    # ---------------------------------------------------------------- housekeeping
    def close_idle(self, older_than: float | None = None) -> None:
        now = self.clock.now()
        for connection in list(self.connections):
            if connection.active == 0 and (older_than is None or now - connection.idle_since >= older_than):
                connection.close()

    def shutdown(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their streams are done."""
        self.state = PoolState.CLOSED
        for connection in list(self.connections):
            connection.drain()
        while self.pending:
            self._next_waiter().on_pool_failure(AttemptFailure.CONNECT_FAILURE)
