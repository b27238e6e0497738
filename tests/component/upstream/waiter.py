"""A request as a pool sees it, for driving `HostPool` directly: a `PoolWaiter` that becomes the
`UpstreamStream` of the connection (or HTTP/2 stream) it is handed, as the router's attempt does."""

from __future__ import annotations

from collections.abc import Callable

from meshproxy.codec.h1 import ClientCodec
from meshproxy.config.snapshot import Cluster, ConnectionPoolLimits, ListenerProtocol, StaticDiscovery
from meshproxy.core.events import BodyKind, Data, EndOfMessage, Event, RequestHead, ResponseHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.pool import Acquire, HostPool
from meshproxy.upstream.ports import Upstream

from ..memory import MemoryNetwork
from ..proxy import CLUSTER, HOST, UNLIMITED


class Waiter:
    """Implements `PoolWaiter` and `UpstreamStream`."""

    def __init__(self, path: str = "/") -> None:
        self.path = path
        self.upstream: Upstream | None = None
        self.failure: AttemptFailure | None = None
        self.events: list[Event] = []
        self.lost: AttemptFailure | None = None

    def __repr__(self) -> str:
        return f"<Waiter {self.path} ready={self.upstream is not None} failure={self.failure}>"

    # ---------------------------------------------------------------- PoolWaiter
    def on_pool_ready(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.attach(self)
        head = RequestHead("GET", self.path, [(b"host", b"backend.apps.local")], "1.1", True, BodyKind.NONE)
        upstream.send_head(head)
        upstream.send_end()
        upstream.flush()

    def on_pool_failure(self, failure: AttemptFailure) -> None:
        self.failure = failure

    # ---------------------------------------------------------------- UpstreamStream
    def on_response_events(self, events: list[Event]) -> None:
        self.events += events

    def on_upstream_lost(self, failure: AttemptFailure) -> None:
        self.lost = failure

    def on_upstream_write_paused(self) -> None:
        pass

    def on_upstream_write_resumed(self) -> None:
        pass

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_tunnel_eof(self) -> None:
        pass

    # ---------------------------------------------------------------- test side
    @property
    def complete(self) -> bool:
        return any(isinstance(e, EndOfMessage) for e in self.events)

    @property
    def status(self) -> int:
        return next((e.status for e in self.events if isinstance(e, ResponseHead)), 0)

    @property
    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, Data))

    def release(self) -> None:
        """The exchange is over: hand the connection (or stream) back."""
        assert self.upstream is not None and self.complete, self
        self.upstream.release()
        self.upstream = None


def acquire(pool: HostPool, waiter: Waiter) -> Acquire:
    """What the router's attempt does: take a stream now, or wait for the pool's callback."""
    result, upstream = pool.acquire(waiter)
    if upstream is not None:
        waiter.on_pool_ready(upstream)
    return result


def cluster_runtime(
    net: MemoryNetwork,
    codec: Callable[[], ClientCodec],
    *,
    hosts: tuple[tuple[str, int], ...] = (HOST,),
    protocol: ListenerProtocol = ListenerProtocol.HTTP,
    limits: ConnectionPoolLimits = UNLIMITED,
) -> ClusterRuntime:
    config = Cluster(CLUSTER, StaticDiscovery(hosts), protocol, "backend", connect_timeout=1.0, limits=limits)
    runtime = ClusterRuntime(config, ClusterStats(), codec, net.connector, net.clock)
    runtime.start()
    return runtime
