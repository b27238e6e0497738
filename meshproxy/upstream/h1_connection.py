"""One HTTP/1.1 connection to an upstream host, as an asyncio Protocol.

The connection belongs to its host's pool; while a request uses it, the request's stream (the router's
`UpstreamRequest`) receives its events. Reads and writes are plain callbacks: no coroutine per request.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Protocol, cast

from meshproxy.codec.h1 import ClientCodec, ProtocolError
from meshproxy.core.events import Event

if TYPE_CHECKING:
    from meshproxy.upstream.pool import HostPool


class UpstreamStream(Protocol):
    """What a connection reports to the request using it."""

    def on_response_events(self, events: list[Event]) -> None: ...

    def on_upstream_lost(self, protocol_error: bool) -> None: ...

    def on_upstream_write_paused(self) -> None: ...

    def on_upstream_write_resumed(self) -> None: ...

    def on_tunnel_data(self, data: bytes) -> None: ...

    def on_tunnel_eof(self) -> None: ...


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"
    BUSY = "busy"
    TUNNEL = "tunnel"  # after an accepted Upgrade: raw bytes both ways
    CLOSED = "closed"


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "codec",
        "idle_since",
        "pool",
        "requests",
        "rx_bytes",
        "state",
        "stream",
        "transport",
        "tx_bytes",
    )

    def __init__(self, pool: HostPool, codec: ClientCodec) -> None:
        self.pool = pool
        self.codec = codec
        self.state = ConnectionState.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.stream: UpstreamStream | None = None
        self.requests = 0
        self.idle_since = 0.0

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.pool.host.label} {self.state.value} requests={self.requests}>"

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        stats = self.pool.cluster_stats
        stats.upstream_cx_rx_bytes_total += len(data)
        stream = self.stream
        if self.state is ConnectionState.TUNNEL:
            if stream is not None:
                stream.on_tunnel_data(data)
            return
        if stream is None:
            # Bytes on an idle connection: the peer is not speaking HTTP/1.1 as we do. Drop the connection.
            self.close()
            return
        try:
            events = self.codec.feed(data)
        except ProtocolError:
            self.stream = None
            self.close()
            stream.on_upstream_lost(True)
            return
        if events:
            stream.on_response_events(events)

    def eof_received(self) -> bool | None:
        stream = self.stream
        if self.state is ConnectionState.TUNNEL:
            if stream is not None:
                stream.on_tunnel_eof()
            return True  # half-close: the other direction may still flow
        if stream is not None and self.state is ConnectionState.BUSY:
            try:
                events = self.codec.feed_eof()
            except ProtocolError:
                return None  # connection_lost reports the reset
            if events:
                stream.on_response_events(events)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.state
        self.state = ConnectionState.CLOSED
        stream = self.stream
        self.stream = None
        self.pool.on_connection_closed(self, previous)
        if stream is not None:
            if previous is ConnectionState.TUNNEL:
                stream.on_tunnel_data(b"")
            else:
                stream.on_upstream_lost(False)

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.on_upstream_write_paused()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.on_upstream_write_resumed()

    # used by the request
    def attach(self, stream: UpstreamStream) -> None:
        self.stream = stream
        self.state = ConnectionState.BUSY
        self.requests += 1

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and data:
            self.pool.cluster_stats.upstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.transport.resume_reading()

    def start_tunnel(self) -> None:
        self.state = ConnectionState.TUNNEL

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def release(self) -> None:
        """The exchange is complete: back to the pool if both sides allow reuse, closed otherwise."""
        self.stream = None
        if self.state is ConnectionState.BUSY and self.codec.reusable():
            self.resume_reading()
            self.pool.on_connection_idle(self)
        else:
            self.close()

    def close(self) -> None:
        """Close and forget the current stream (it has already been told, or does not care)."""
        self.stream = None
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.transport.close()
