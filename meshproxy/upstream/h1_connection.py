"""One HTTP/1.1 connection to an upstream host, as an asyncio Protocol.

It is a `PooledConnection` with room for one stream, and that stream is the connection itself: while an
attempt uses it, the attempt (an `UpstreamStream`) receives its events. `send_*` encode into an output list
and `flush` writes it with one `transport.write`. Reads and writes are plain callbacks: no coroutine per
request.
"""

from __future__ import annotations

import asyncio
import enum
from typing import cast

from meshproxy.codec.h1 import ClientCodec, ProtocolError
from meshproxy.core.clock import Clock
from meshproxy.core.events import RequestHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.upstream.ports import ConnectionOwner, PooledConnection, Upstream, UpstreamStream


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"
    BUSY = "busy"
    TUNNEL = "tunnel"  # after an accepted Upgrade: raw bytes both ways
    CLOSED = "closed"


class Http1UpstreamConnection(asyncio.Protocol, Upstream, PooledConnection):
    __slots__ = (
        "clock",
        "codec",
        "draining",
        "idle_since",
        "out",
        "owner",
        "paused",
        "requests",
        "state",
        "stream",
        "transport",
    )

    def __init__(self, owner: ConnectionOwner, codec: ClientCodec, clock: Clock) -> None:
        self.owner = owner
        self.codec = codec
        self.clock = clock
        self.state = ConnectionState.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.stream: UpstreamStream | None = None
        self.out: list[bytes] = []  # parts of the next write (`flush`)
        self.paused = False  # reading paused (the client cannot take more)
        self.requests = 0
        self.idle_since = 0.0
        self.draining = False

    def __repr__(self) -> str:
        return f"<Http1UpstreamConnection {self.owner.label} {self.state.value} requests={self.requests}>"

    # ---------------------------------------------------------------- PooledConnection
    @property
    def active(self) -> int:
        return 1 if self.state is ConnectionState.BUSY or self.state is ConnectionState.TUNNEL else 0

    def connected(self) -> None:
        self._idle()

    def has_capacity(self) -> bool:
        return self.state is ConnectionState.IDLE

    def new_stream(self) -> Upstream:
        self.state = ConnectionState.BUSY
        self.requests += 1
        return self

    def drain(self) -> None:
        self.draining = True
        if self.state is ConnectionState.IDLE or self.state is ConnectionState.CONNECTING:
            self.close()

    def _idle(self) -> None:
        if self.draining:
            self.close()
            return
        self.state = ConnectionState.IDLE
        self.idle_since = self.clock.now()
        self.owner.on_capacity(self)

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.owner.stats.upstream_cx_rx_bytes_total += len(data)
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
            stream.on_upstream_lost(AttemptFailure.RESET)
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
        self.transport = None
        stream = self.stream
        self.stream = None
        self.owner.on_connection_closed(self)
        if stream is not None:
            if previous is ConnectionState.TUNNEL:
                stream.on_tunnel_data(b"")
            else:
                stream.on_upstream_lost(AttemptFailure.RESET)

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.on_upstream_write_paused()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.on_upstream_write_resumed()

    # ---------------------------------------------------------------- Upstream (the attempt's side)
    def attach(self, stream: UpstreamStream) -> None:
        self.stream = stream

    def send_head(self, head: RequestHead) -> None:
        """Raises ProtocolError if the head cannot be written as HTTP/1.1 (the attempt answers locally)."""
        self.out.append(self.codec.encode_request_head(head))

    def send_data(self, data: bytes) -> None:
        if self.state is ConnectionState.TUNNEL:
            self.out.append(data)
        elif data:
            self.out.append(self.codec.encode_data(data))

    def send_end(self) -> None:
        end = self.codec.encode_end()
        if end:  # b"" for a Content-Length body: nothing to write
            self.out.append(end)

    def flush(self) -> None:
        """What `send_*` queued, in one `transport.write` (one syscall per event)."""
        out = self.out
        if out:
            data = b"".join(out)  # a single part is returned as it is, not copied
            out.clear()
            transport = self.transport
            if transport is not None:
                transport.write(data)
                self.owner.stats.upstream_cx_tx_bytes_total += len(data)

    def pause_reading(self) -> None:
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.state is not ConnectionState.CLOSED:
            self.paused = False
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
        self.out.clear()
        if self.state is ConnectionState.BUSY and self.codec.reusable():
            if self.paused:
                self.resume_reading()
            self._idle()
        else:
            self.close()

    def close(self) -> None:
        """Close and forget the current stream (it has already been told, or does not care)."""
        self.stream = None
        self.out.clear()
        if self.state is not ConnectionState.CLOSED:
            if self.transport is not None:
                self.transport.close()
            # closed now, not at connection_lost a loop turn later: the pool must not hand it out meanwhile
            self.state = ConnectionState.CLOSED
