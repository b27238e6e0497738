"""HTTP/1.1 connection pool for one host, with the cluster's circuit breakers (spec §4.2 connectionPool).

The pool decides synchronously (an idle connection now, a new connection, wait, or overflow) and performs
the one piece of I/O, connecting, in a task of its own. Requests waiting for a connection are served in
arrival order as connections become idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from meshproxy.codec.h1 import ClientCodec
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.h1_connection import ConnectionState, UpstreamConnection
from meshproxy.upstream.host import Host

if TYPE_CHECKING:
    from meshproxy.router.ports import Upstream
    from meshproxy.upstream.cluster import ClusterRuntime


class PoolWaiter(Protocol):
    def on_pool_ready(self, connection: Upstream) -> None: ...

    def on_pool_failure(self, failure: AttemptFailure) -> None: ...


class PendingRequests:
    """Requests waiting for a connection (or a stream) of one host, in arrival order, under the cluster's
    pending-requests circuit breaker (connectionPool maxPendingRequests). Both pools use it."""

    __slots__ = ("cluster", "stats", "waiters")

    def __init__(self, cluster: ClusterRuntime, stats: ClusterStats) -> None:
        self.cluster = cluster
        self.stats = stats
        self.waiters: deque[PoolWaiter] = deque()

    def __len__(self) -> int:
        return len(self.waiters)

    def __bool__(self) -> bool:
        return bool(self.waiters)

    def __repr__(self) -> str:
        return f"<PendingRequests {len(self.waiters)}>"

    def admit(self, waiter: PoolWaiter) -> bool:
        """Queue `waiter`; False (and counted as upstream_rq_pending_overflow) when the breaker is open."""
        if self.cluster.pending_requests >= self.cluster.config.limits.max_pending_requests:
            self.stats.upstream_rq_pending_overflow += 1
            return False
        self.waiters.append(waiter)
        self.cluster.pending_requests += 1
        self.stats.upstream_rq_pending_total += 1
        self.stats.upstream_rq_pending_active += 1
        return True

    def next(self) -> PoolWaiter:
        """The longest-waiting request, no longer pending."""
        waiter = self.waiters.popleft()
        self._left()
        return waiter

    def cancel(self, waiter: PoolWaiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return
        self._left()

    def fail_all(self, failure: AttemptFailure) -> None:
        while self.waiters:
            self.next().on_pool_failure(failure)

    def _left(self) -> None:
        self.cluster.pending_requests -= 1
        self.stats.upstream_rq_pending_active -= 1


class Acquire(enum.Enum):
    READY = "ready"  # an idle connection was handed over synchronously
    PENDING = "pending"  # the waiter will be called back
    OVERFLOW = "overflow"  # circuit breaker open: max pending requests reached


class HostPool:
    __slots__ = (
        "closed",
        "cluster",
        "cluster_stats",
        "codec_factory",
        "connecting",
        "connections",
        "host",
        "idle",
        "pending",
    )  # fmt: skip

    def __init__(self, host: Host, cluster: ClusterRuntime, codec_factory: Callable[[], ClientCodec]) -> None:
        self.host = host
        self.cluster = cluster
        self.cluster_stats: ClusterStats = cluster.stats
        self.codec_factory = codec_factory
        self.idle: list[UpstreamConnection] = []
        self.pending = PendingRequests(cluster, cluster.stats)
        self.connecting = 0
        self.connections: set[UpstreamConnection] = set()
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<HostPool {self.host.label} connections={len(self.connections)} idle={len(self.idle)} "
            f"connecting={self.connecting} pending={len(self.pending)}>"
        )

    def acquire(self, waiter: PoolWaiter) -> tuple[Acquire, UpstreamConnection | None]:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.state is ConnectionState.IDLE:
                return Acquire.READY, connection
        cluster = self.cluster
        limits = cluster.config.limits
        if self.connecting < len(self.pending) + 1:
            if cluster.connections_open < limits.max_connections:
                self._connect()
            else:
                self.cluster_stats.upstream_cx_overflow += 1
        if not self.pending.admit(waiter):
            return Acquire.OVERFLOW, None
        return Acquire.PENDING, None

    def cancel(self, waiter: PoolWaiter) -> None:
        self.pending.cancel(waiter)

    def _connect(self) -> None:
        self.connecting += 1
        self.cluster.connections_open += 1
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.host
        stats = self.cluster_stats
        stats.upstream_cx_total += 1
        host.cx_total += 1
        connection = UpstreamConnection(self, self.codec_factory())
        try:
            async with asyncio.timeout(self.cluster.config.connect_timeout):
                await loop.create_connection(lambda: connection, host.address, host.port)
        except (OSError, TimeoutError) as exc:
            self.connecting -= 1
            self.cluster.connections_open -= 1
            stats.upstream_cx_connect_fail += 1
            if isinstance(exc, TimeoutError):
                stats.upstream_cx_connect_timeout += 1
            host.cx_connect_fail += 1
            if self.pending:
                self.pending.next().on_pool_failure(AttemptFailure.CONNECT_FAILURE)
            return
        self.connecting -= 1
        stats.upstream_cx_active += 1
        host.cx_active += 1
        self.connections.add(connection)
        if self.closed:
            connection.state = ConnectionState.IDLE
            connection.close()
            return
        self.on_connection_idle(connection)

    def on_connection_idle(self, connection: UpstreamConnection) -> None:
        connection.state = ConnectionState.IDLE
        if self.pending:
            self.pending.next().on_pool_ready(connection)
            return
        if self.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self.idle.append(connection)

    def on_connection_closed(self, connection: UpstreamConnection, previous: ConnectionState) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.cluster.connections_open -= 1
            self.cluster_stats.upstream_cx_active -= 1
            self.cluster_stats.upstream_cx_destroy += 1
            self.host.cx_active -= 1
        if previous is ConnectionState.IDLE:
            with contextlib.suppress(ValueError):
                self.idle.remove(connection)
        # A waiter may be stuck behind max_connections: a slot is free now.
        if (
            self.pending
            and not self.closed
            and self.connecting < len(self.pending)
            and self.cluster.connections_open < self.cluster.config.limits.max_connections
        ):
            self._connect()

    def close_idle(self, older_than: float | None = None) -> None:
        now = time.monotonic()
        keep: list[UpstreamConnection] = []
        for connection in self.idle:
            if older_than is None or now - connection.idle_since >= older_than:
                connection.close()
            else:
                keep.append(connection)
        self.idle = keep

    def shutdown(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their request ends."""
        self.closed = True
        self.close_idle()
        self.pending.fail_all(AttemptFailure.CONNECT_FAILURE)
