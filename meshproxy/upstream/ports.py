"""The interfaces between the upstream layer and the layers above it (typing Protocols; `Upstream`,
`PooledConnection` and `ConnectionOwner`, called several times per request, are mypyc traits their
implementations subclass: ARCHITECTURE.md).

The router's per-attempt object is a `PoolWaiter` while it waits and an `UpstreamStream` once attached;
what it is handed is an `Upstream` (a pooled HTTP/1.1 connection, or one stream of an HTTP/2
connection). Inside the layer, a `HostPool` manages `PooledConnection`s and is their `ConnectionOwner`.
The lower layer defines the callbacks, the higher one implements them, so nothing here names a router
class (DESIGN.md: layers import only downward).
"""

from __future__ import annotations

from typing import Protocol

from mypy_extensions import trait

from meshproxy.core.events import Event, RequestHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats


class UpstreamStream(Protocol):
    """What an upstream connection (or HTTP/2 stream) reports to the attempt using it."""

    def on_response_events(self, events: list[Event]) -> None: ...

    def on_upstream_lost(self, failure: AttemptFailure) -> None:
        """The connection or stream ended before the response was complete (REFUSED_STREAM: unprocessed)."""
        ...

    def on_upstream_write_paused(self) -> None: ...

    def on_upstream_write_resumed(self) -> None: ...

    def on_tunnel_data(self, data: bytes) -> None:
        """Upstream bytes after an accepted Upgrade; b"" when the upstream connection is gone."""
        ...

    def on_tunnel_eof(self) -> None: ...


@trait
class Upstream:
    """The server side of one attempt. `send_*` queue; `flush` hands what is queued to the socket in one
    write (hot-path notes: every extra write is an extra syscall)."""

    __slots__ = ()

    def attach(self, stream: UpstreamStream) -> None:
        raise NotImplementedError

    def send_head(self, head: RequestHead) -> None:
        raise NotImplementedError

    def send_data(self, data: bytes) -> None:
        """Request body bytes; after `start_tunnel`, raw tunnel bytes."""
        raise NotImplementedError

    def send_end(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def start_tunnel(self) -> None:
        raise NotImplementedError

    def write_eof(self) -> None:
        """Tunnel half-close toward the upstream."""
        raise NotImplementedError

    def release(self) -> None:
        """The exchange completed: reuse the connection if both sides allow it."""
        raise NotImplementedError

    def close(self) -> None:
        """Abandon the exchange (reset the stream / close the connection)."""
        raise NotImplementedError


class PoolWaiter(Protocol):
    """A request waiting for an `Upstream` from a pool."""

    def on_pool_ready(self, upstream: Upstream) -> None: ...

    def on_pool_failure(self, failure: AttemptFailure) -> None: ...


@trait
class PooledConnection:
    """One upstream connection as its pool manages it (HTTP/1.1: one stream at a time; HTTP/2: up to the
    peer's SETTINGS_MAX_CONCURRENT_STREAMS). A trait, as `Upstream`."""

    __slots__ = ()

    idle_since: float

    @property
    def active(self) -> int:
        """Streams handed out and not yet finished."""
        raise NotImplementedError

    def connected(self) -> None:
        """The connector has opened the connection: start serving."""
        raise NotImplementedError

    def has_capacity(self) -> bool:
        raise NotImplementedError

    def new_stream(self) -> Upstream:
        """Take one stream slot (only when `has_capacity()`)."""
        raise NotImplementedError

    def drain(self) -> None:
        """No new streams; close once the current ones are done."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@trait
class ConnectionOwner:
    """The pool, as its connections see it (a trait, as `Upstream`)."""

    __slots__ = ()

    stats: ClusterStats

    @property
    def label(self) -> str:
        """The host, for logs and reprs."""
        raise NotImplementedError

    def on_capacity(self, connection: PooledConnection) -> None:
        """`connection` can take a stream again (an HTTP/1.1 exchange ended, an HTTP/2 stream ended or the
        peer raised its stream limit)."""
        raise NotImplementedError

    def on_connection_closed(self, connection: PooledConnection) -> None:
        raise NotImplementedError
