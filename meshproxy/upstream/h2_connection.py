"""HTTP/2 connection pool for one host: requests are streams multiplexed over as few connections as the
peer's SETTINGS_MAX_CONCURRENT_STREAMS allows (spec §4.2 connectionPool `http2`/`grpc`: `maxRequests`).

`H2HostPool` is the router's `ConnectionPool` for clusters whose protocol is http2 or grpc. It decides
synchronously, as `HostPool` does: a stream on a connection with room now, or wait for a connection being
opened, or overflow. Each acquired stream is an `H2UpstreamStream`, the router's `Upstream` for one attempt,
and its own `RequestEncoder`: the encode_* methods queue (and return b""), and `write` marks the stream for
the connection's next flush, which sends every marked stream's frames and then makes one `transport.write`.

A stream the server refuses (RST_STREAM REFUSED_STREAM, or above the last stream id of its GOAWAY) was not
processed: the router sees `AttemptFailure.REFUSED_STREAM` (App Mesh `stream-error`). Other resets and lost
connections are `AttemptFailure.RESET`. A WebSocket `Upgrade` cannot travel over an HTTP/2 stream here: it
is answered 501 with a message instead of App Mesh's 503 UC (user-expectations #465).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.h2 import OutboundBody
from meshproxy.core.events import END, BodyKind, Data, EndOfMessage, Event, RequestHead, ResponseHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.host import Host
from meshproxy.upstream.pool import Acquire, PendingRequests, PoolWaiter

if TYPE_CHECKING:
    from meshproxy.upstream.cluster import ClusterRuntime
    from meshproxy.upstream.h1_connection import UpstreamStream

log = logging.getLogger("meshproxy.upstream")

UPGRADE_UNSUPPORTED_BODY = (
    b"meshproxy: this upstream speaks HTTP/2 (listener protocol http2/grpc); an HTTP/1.1 Upgrade "
    b"(WebSocket) cannot be forwarded to it. Use an http listener for WebSocket traffic."
)


class _RouterStream(Protocol):
    """The router's view of an attempt (`UpstreamRequest`), with the failure kind HTTP/2 can tell apart."""

    def on_response_events(self, events: list[Event]) -> None: ...

    def on_upstream_lost(self, protocol_error: bool, failure: AttemptFailure = ...) -> None: ...

    def on_upstream_write_paused(self) -> None: ...

    def on_upstream_write_resumed(self) -> None: ...


class H2StreamState(enum.Enum):
    RESERVED = "reserved"  # handed to a request; no HEADERS sent yet (no stream id)
    OPEN = "open"  # HEADERS sent
    CLOSED = "closed"  # released, reset or lost: no longer counted against the connection


class H2UpstreamStream(h2_codec.StreamReadPause):
    """One attempt's stream on a pooled HTTP/2 connection."""

    connection: H2UpstreamConnection

    __slots__ = (
        "body",
        "codec",
        "connection",
        "dirty",
        "head_out",
        "head_request",
        "producer_paused",
        "response_ended",
        "rx",
        "rx_length",
        "state",
        "stream",
        "stream_id",
        "upgrade",
        "write_blocked",
    )  # fmt: skip

    def __init__(self, connection: H2UpstreamConnection) -> None:
        self.connection = connection
        self.codec = self
        self.stream: _RouterStream | None = None
        self.stream_id = 0
        self.state = H2StreamState.RESERVED
        self.head_out: list[tuple[bytes, bytes]] | None = None
        self.head_request = False
        self.upgrade = False
        self.body = OutboundBody()
        self.dirty = False  # queued for the connection's next flush
        self.rx: list[Event] = []  # response events of the current read, delivered together
        self.rx_length = 0  # their flow-controlled size
        self.response_ended = False
        self.read_paused = False
        self.unacked = 0
        self.write_blocked = False
        self.producer_paused = False

    def __repr__(self) -> str:
        return (
            f"<H2UpstreamStream {self.connection.pool.host.label} #{self.stream_id} {self.state.value} "
            f"queued={self.body.size}>"
        )

    # ---------------------------------------------------------------- RequestEncoder (queue; write() sends)
    def encode_request_head(self, head: RequestHead) -> bytes:
        self.head_request = head.method == "HEAD"
        self.upgrade = head.upgrade
        self.head_out = h2_codec.h2_request_headers(head)
        return b""

    def encode_data(self, data: bytes) -> bytes:
        self.body.push(data)
        return b""

    def encode_end(self) -> bytes:
        self.body.finish()
        return b""

    # ---------------------------------------------------------------- Upstream
    def attach(self, stream: UpstreamStream) -> None:
        # Only the router's UpstreamRequest attaches; it also takes the failure kind (see _RouterStream).
        self.stream = cast(_RouterStream, stream)

    def write(self, data: bytes) -> None:
        if self.state is H2StreamState.CLOSED:
            return
        if self.upgrade:
            self.upgrade = False
            self.connection.call_soon(self._refuse_upgrade)
            return
        self.connection.mark_dirty(self)

    def start_tunnel(self) -> None:
        self.close()  # never reached: Upgrade requests are answered 501 (see _refuse_upgrade)

    def write_eof(self) -> None:
        pass  # no tunnels on HTTP/2 streams

    def release(self) -> None:
        """The response is complete. A request body still queued (the server answered early) is cancelled."""
        self.stream = None
        if self.state is H2StreamState.OPEN and not self.body.ended:
            self._reset(ErrorCodes.CANCEL)
        self._finish()

    def close(self) -> None:
        """Abandon the attempt: reset the stream if either direction is still open."""
        self.stream = None
        if self.state is H2StreamState.OPEN and not (self.body.ended and self.response_ended):
            self._reset(ErrorCodes.CANCEL)
        self._finish()

    # ---------------------------------------------------------------- called by the connection
    def send(self) -> None:
        """Put this stream's queued HEADERS / DATA / END_STREAM into h2, as far as flow control allows."""
        if self.state is H2StreamState.CLOSED:
            return
        conn = self.connection.h2
        body = self.body
        try:
            head = self.head_out
            if head is not None:
                self.head_out = None
                sid = self.stream_id = conn.get_next_available_stream_id()
                self.state = H2StreamState.OPEN
                self.connection.streams[sid] = self
                if body.finished and not body.chunks:
                    conn.send_headers(sid, head, end_stream=True)
                    body.ended = True
                else:
                    conn.send_headers(sid, head)
            if self.stream_id == 0:
                return
            blocked = body.drain(conn, self.stream_id)
        except H2Error as exc:
            # TooManyStreams after the server lowered its limit, or the connection is closing: not processed
            log.debug("%r: cannot send: %s", self, exc)
            self.lost(AttemptFailure.REFUSED_STREAM)
            return
        if blocked is not self.write_blocked:
            self.write_blocked = blocked
            self.update_producer()

    def update_producer(self) -> None:
        """Pause the downstream while this stream's window or the upstream socket is full; resume after."""
        paused = self.write_blocked or self.connection.write_paused
        if paused is not self.producer_paused:
            self.producer_paused = paused
            stream = self.stream
            if stream is not None:
                if paused:
                    stream.on_upstream_write_paused()
                else:
                    stream.on_upstream_write_resumed()

    def deliver(self) -> None:
        """Hand this read's response events to the router, then reopen the window unless it paused us."""
        events, self.rx = self.rx, []
        length, self.rx_length = self.rx_length, 0
        stream = self.stream
        if stream is not None and events:
            stream.on_response_events(events)
        if length:
            if self.read_paused and self.state is not H2StreamState.CLOSED:
                self.unacked += length
            else:
                self.connection.acknowledge(self.stream_id, length)

    def lost(self, failure: AttemptFailure) -> None:
        """The stream ended without a complete response: tell the router (once) and stop counting it."""
        stream = self.stream
        self.stream = None
        self.state_closed()
        if stream is not None:
            stream.on_upstream_lost(False, failure)

    def state_closed(self) -> None:
        if self.state is not H2StreamState.CLOSED:
            self._finish()

    def _reset(self, code: ErrorCodes) -> None:
        try:
            self.connection.h2.reset_stream(self.stream_id, code)
        except H2Error:
            return
        self.connection.pool.cluster_stats.upstream_rq_tx_reset += 1
        self.connection.schedule_flush()

    def _finish(self) -> None:
        if self.state is H2StreamState.CLOSED:
            return
        self.state = H2StreamState.CLOSED
        self.connection.stream_finished(self)

    def _refuse_upgrade(self) -> None:
        stream = self.stream
        if stream is None or self.state is H2StreamState.CLOSED:
            return
        body = UPGRADE_UNSUPPORTED_BODY
        head = ResponseHead(
            501,
            b"Not Implemented",
            [(b"content-length", b"%d" % len(body)), (b"content-type", b"text/plain")],
            "2",
            True,
            BodyKind.LENGTH,
            len(body),
        )
        self.response_ended = self.body.ended = True
        stream.on_response_events([head, Data(body), END])


class H2ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    DRAINING = "draining"  # GOAWAY received or pool shut down: streams finish, no new ones
    CLOSED = "closed"


class H2UpstreamConnection(asyncio.Protocol):
    """One multiplexed HTTP/2 (h2c, prior knowledge) connection to an upstream host."""

    __slots__ = (
        "active",
        "dirty",
        "flush_scheduled",
        "h2",
        "idle_since",
        "in_batch",
        "loop",
        "pool",
        "requests",
        "settings_received",
        "state",
        "streams",
        "transport",
        "write_paused",
    )  # fmt: skip

    def __init__(self, pool: H2HostPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.h2 = h2_codec.new_connection(client_side=True)
        self.transport: asyncio.Transport | None = None
        self.state = H2ConnectionState.CONNECTING
        self.streams: dict[int, H2UpstreamStream] = {}
        self.active = 0  # streams handed out and not finished (reserved ones included)
        self.requests = 0
        self.idle_since = time.monotonic()
        self.settings_received = False
        self.dirty: list[H2UpstreamStream] = []
        self.flush_scheduled = False
        self.in_batch = False
        self.write_paused = False

    def __repr__(self) -> str:
        return (
            f"<H2UpstreamConnection {self.pool.host.label} {self.state.value} active={self.active} "
            f"requests={self.requests}>"
        )

    @property
    def max_streams(self) -> int:
        if not self.settings_received:
            return h2_codec.ASSUMED_PEER_MAX_STREAMS
        return int(self.h2.remote_settings.max_concurrent_streams)

    def has_capacity(self) -> bool:
        return self.state is H2ConnectionState.READY and self.active < self.max_streams

    def new_stream(self) -> H2UpstreamStream:
        self.active += 1
        self.requests += 1
        return H2UpstreamStream(self)

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.h2.initiate_connection()
        h2_codec.open_connection_window(self.h2)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.pool.cluster_stats.upstream_cx_rx_bytes_total += len(data)
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            log.debug("%r: HTTP/2 protocol error: %s", self, exc)
            self.flush()  # h2 queued a GOAWAY
            self._abandon(AttemptFailure.RESET)
            return
        streams = self.streams
        touched: list[H2UpstreamStream] = []
        self.in_batch = True
        try:
            for event in events:
                if isinstance(event, DataReceived):
                    stream = streams.get(event.stream_id)
                    if stream is None:
                        if event.flow_controlled_length:
                            self.acknowledge(event.stream_id, event.flow_controlled_length)
                        continue
                    if not stream.rx:
                        touched.append(stream)
                    stream.rx.append(Data(event.data))
                    stream.rx_length += event.flow_controlled_length
                elif isinstance(event, ResponseReceived):
                    stream = streams.get(event.stream_id)
                    if stream is None:
                        continue
                    head = h2_codec.response_head_from_h2(
                        event.headers, event.stream_ended is not None, stream.head_request
                    )
                    if head is None:
                        self._stream_error(stream, ErrorCodes.PROTOCOL_ERROR)
                        continue
                    if not stream.rx:
                        touched.append(stream)
                    stream.rx.append(head)
                elif isinstance(event, StreamEnded):
                    stream = streams.get(event.stream_id)
                    if stream is not None and not stream.response_ended:
                        stream.response_ended = True
                        if not stream.rx:
                            touched.append(stream)
                        stream.rx.append(END)
                elif isinstance(event, TrailersReceived):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.response_ended = True
                        if not stream.rx:
                            touched.append(stream)
                        stream.rx.append(EndOfMessage(h2_codec.h2_trailers(event.headers)))
                elif isinstance(event, WindowUpdated):
                    self._on_window_update(event.stream_id or 0)
                elif isinstance(event, StreamReset):
                    stream = streams.pop(event.stream_id, None)
                    if stream is not None:
                        if stream.rx:
                            stream.deliver()
                        if not stream.response_ended:
                            refused = event.error_code == ErrorCodes.REFUSED_STREAM
                            stream.lost(AttemptFailure.REFUSED_STREAM if refused else AttemptFailure.RESET)
                        else:
                            stream.body.ended = True  # the server needs no more of the request
                elif isinstance(event, RemoteSettingsChanged):
                    self._on_settings(event)
                elif isinstance(event, ConnectionTerminated):
                    self._on_goaway(event.last_stream_id or 0, event.error_code)
            for stream in touched:
                stream.deliver()
        finally:
            self.in_batch = False
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.state
        self.state = H2ConnectionState.CLOSED
        self.transport = None
        self._fail_streams(AttemptFailure.RESET)
        self.pool.on_connection_closed(self, previous)

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.update_producer()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.update_producer()

    # ---------------------------------------------------------------- events
    def _on_window_update(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None and stream.write_blocked:
                self.mark_dirty(stream)
            return
        for stream in self.streams.values():
            if stream.write_blocked:
                self.mark_dirty(stream)

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self.settings_received = True
        changed = event.changed_settings
        if SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self._on_window_update(0)
        self.loop.call_soon(self.pool.serve_pending)  # the stream limit may have grown

    def _on_goaway(self, last_stream_id: int, error_code: object) -> None:
        """The server is going away: streams above `last_stream_id` were not processed (retry-safe)."""
        log.debug("%r: GOAWAY last_stream_id=%s error=%s", self, last_stream_id, error_code)
        if self.state is H2ConnectionState.READY or self.state is H2ConnectionState.CONNECTING:
            self.state = H2ConnectionState.DRAINING
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id:
                del self.streams[sid]
                stream.lost(AttemptFailure.REFUSED_STREAM)
        for stream in self.dirty:
            if stream.stream_id == 0:
                stream.lost(AttemptFailure.REFUSED_STREAM)
        self.dirty = [s for s in self.dirty if s.state is not H2StreamState.CLOSED]
        if self.active == 0:
            self.close()  # nothing left to finish on it
        self.loop.call_soon(self.pool.serve_pending)

    def _stream_error(self, stream: H2UpstreamStream, code: ErrorCodes) -> None:
        self.streams.pop(stream.stream_id, None)
        stream._reset(code)
        target = stream.stream
        stream.stream = None
        stream.state_closed()
        if target is not None:
            target.on_upstream_lost(True)

    # ---------------------------------------------------------------- called by the streams
    def call_soon(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon(callback)

    def mark_dirty(self, stream: H2UpstreamStream) -> None:
        if not stream.dirty:
            stream.dirty = True
            self.dirty.append(stream)
        self.schedule_flush()

    def acknowledge(self, sid: int, length: int) -> None:
        try:
            self.h2.acknowledge_received_data(length, sid)
        except H2Error:
            return
        self.schedule_flush()

    def stream_finished(self, stream: H2UpstreamStream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self.active -= 1
        if self.active == 0:
            self.idle_since = time.monotonic()
            if self.state is H2ConnectionState.DRAINING:
                self.close()
                return
        if self.pool.pending:
            self.loop.call_soon(self.pool.serve_pending)

    def schedule_flush(self) -> None:
        if self.in_batch or self.flush_scheduled:
            return
        self.flush_scheduled = True
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for stream in dirty:
                stream.dirty = False
                stream.send()
        transport = self.transport
        if transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.pool.cluster_stats.upstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    # ---------------------------------------------------------------- endings
    def _fail_streams(self, failure: AttemptFailure) -> None:
        streams = list(self.streams.values())
        streams += [s for s in self.dirty if s.stream_id == 0]
        self.streams.clear()
        self.dirty = []
        for stream in streams:
            if stream.state is not H2StreamState.CLOSED:
                stream.lost(failure)

    def _abandon(self, failure: AttemptFailure) -> None:
        self.state = H2ConnectionState.CLOSED
        self._fail_streams(failure)
        if self.transport is not None:
            self.transport.close()

    def drain(self) -> None:
        """No new streams; close once the current ones are done."""
        if self.state is H2ConnectionState.CLOSED:
            return
        self.state = H2ConnectionState.DRAINING
        if self.active == 0:
            self.close()

    def close(self) -> None:
        if self.state is H2ConnectionState.CLOSED:
            return
        self.state = H2ConnectionState.CLOSED
        with contextlib.suppress(H2Error):
            self.h2.close_connection()
        self.flush()
        if self.transport is not None:
            self.transport.close()


class H2HostPool:
    """The HTTP/2 `ConnectionPool` of one host, with the cluster's circuit breakers (maxRequests for
    http2/grpc listeners; maxConnections / maxPendingRequests as for HTTP/1.1)."""

    __slots__ = ("closed", "cluster", "cluster_stats", "connecting", "connections", "host", "pending")

    def __init__(self, host: Host, cluster: ClusterRuntime) -> None:
        self.host = host
        self.cluster = cluster
        self.cluster_stats: ClusterStats = cluster.stats
        self.connections: list[H2UpstreamConnection] = []
        self.pending = PendingRequests(cluster, cluster.stats)
        self.connecting = 0
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<H2HostPool {self.host.label} connections={len(self.connections)} connecting={self.connecting} "
            f"pending={len(self.pending)}>"
        )

    def acquire(self, waiter: PoolWaiter) -> tuple[Acquire, H2UpstreamStream | None]:
        cluster = self.cluster
        limits = cluster.config.limits
        if cluster.requests_active >= limits.max_requests:
            # Envoy counts requests circuit breaking (HTTP/2's maxRequests) as pending overflow
            self.cluster_stats.upstream_rq_pending_overflow += 1
            return Acquire.OVERFLOW, None
        for connection in self.connections:
            if connection.has_capacity():
                return Acquire.READY, connection.new_stream()
        if not self.pending.admit(waiter):
            return Acquire.OVERFLOW, None
        self._connect_if_needed()
        return Acquire.PENDING, None

    def cancel(self, waiter: PoolWaiter) -> None:
        self.pending.cancel(waiter)

    def _connect_if_needed(self) -> None:
        # Each connection being opened will take (at least) the assumed stream limit of waiters.
        if self.closed or self.connecting * h2_codec.ASSUMED_PEER_MAX_STREAMS > len(self.pending):
            return
        if not self.pending:
            return
        if self.cluster.connections_open >= self.cluster.config.limits.max_connections:
            self.cluster_stats.upstream_cx_overflow += 1
            return
        self.connecting += 1
        self.cluster.connections_open += 1
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        host = self.host
        stats = self.cluster_stats
        stats.upstream_cx_total += 1
        host.cx_total += 1
        connection = H2UpstreamConnection(self, loop)
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
            if self.connecting == 0:
                self._fail_pending(AttemptFailure.CONNECT_FAILURE)
            return
        self.connecting -= 1
        stats.upstream_cx_active += 1
        host.cx_active += 1
        self.connections.append(connection)
        if self.closed:
            connection.close()
            return
        connection.state = H2ConnectionState.READY
        self.serve_pending()

    def serve_pending(self) -> None:
        """Hand streams to waiting requests while some connection has room; open another if none has."""
        pending = self.pending
        while pending:
            connection = next((c for c in self.connections if c.has_capacity()), None)
            if connection is None:
                self._connect_if_needed()
                return
            pending.next().on_pool_ready(connection.new_stream())

    def _fail_pending(self, failure: AttemptFailure) -> None:
        self.pending.fail_all(failure)

    def on_connection_closed(self, connection: H2UpstreamConnection, previous: H2ConnectionState) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            self.cluster.connections_open -= 1
            self.cluster_stats.upstream_cx_active -= 1
            self.cluster_stats.upstream_cx_destroy += 1
            self.host.cx_active -= 1
        if self.pending and not self.closed:
            self.serve_pending()

    def close_idle(self, older_than: float | None = None) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.active == 0 and (older_than is None or now - connection.idle_since >= older_than):
                connection.close()

    def shutdown(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their streams are done."""
        self.closed = True
        for connection in list(self.connections):
            connection.drain()
        self._fail_pending(AttemptFailure.CONNECT_FAILURE)
