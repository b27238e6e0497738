"""The HTTP/2 connection manager (downstream, server side): h2c with prior knowledge or after `Upgrade: h2c`.

One `H2ConnectionManager` (an asyncio Protocol over an `H2Codec`: the lean frame layer or the h2 library) per
client connection; one `H2DownstreamStream` per request (downstream/h2_stream.py), which is the router's
`Downstream` for that request, so the router runs unchanged whatever the protocol on either side.

The hot path follows the hot-path notes: no coroutine per request, one `transport.write` per batch (the
streams queue into the codec; the connection writes the codec's output once per read, or once per loop
iteration for responses that arrive from upstream connections).

Flow control (RFC 9113 §5.2) is end to end: request DATA is acknowledged (its window reopened) only while the
router is not pausing the stream, and response DATA waits in the stream for WINDOW_UPDATEs while the router
pauses the upstream, so a slow reader slows the writer and memory stays bounded by the windows.

Drain: while the proxy drains, the first response completed on a connection is followed by a GOAWAY naming
the last stream it will serve (after the response, so clients that stop reading at a GOAWAY still get it);
the connection closes when those streams are done. WebSocket over HTTP/2 (RFC 8441 extended CONNECT) is not
offered (SETTINGS_ENABLE_CONNECT_PROTOCOL is never sent) and a CONNECT is answered 501 with a message saying
so (App Mesh's Envoy failed such requests with 503 UC, user-expectations #465).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import cast

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.events import Event as H2Event
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.grpc import is_grpc
from meshproxy.codec.h2_flow import update_producers
from meshproxy.codec.h2_messages import request_head_from_h2
from meshproxy.core.events import RequestHead
from meshproxy.core.outcomes import LocalReply, ResponseFlag
from meshproxy.downstream.context import ConnectionContext
from meshproxy.downstream.h2_stream import H2DownstreamStream, H2StreamState
from meshproxy.net.accepted import AcceptedConnection
from meshproxy.net.delayed_close import DelayedClose
from meshproxy.net.original_dst import Redirect
from meshproxy.router.request import RouterRequest

log = logging.getLogger("meshproxy.http2")

EXTENDED_CONNECT_UNSUPPORTED = LocalReply(
    501,
    b"meshproxy: CONNECT and WebSocket over HTTP/2 (RFC 8441 extended CONNECT) are not supported on this "
    b"listener; use an http listener (HTTP/1.1 Upgrade: websocket)",
    ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
    12,  # UNIMPLEMENTED
)


class H2ConnectionState(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"  # GOAWAY sent or received: the streams already started finish, no new ones
    CLOSING = "closing"  # the last GOAWAY is written, the connection half-closed: what arrives is dropped
    CLOSED = "closed"


class H2ConnectionManager(AcceptedConnection, asyncio.Protocol):
    """One HTTP/2 client connection. Implements `ClientConnection` and the streams' `StreamHost`."""

    __slots__ = (
        "ctx",
        "flush_scheduled",
        "goaway_sent",
        "h2",
        "head_started",
        "in_batch",
        "last_activity",
        "last_stream_id",
        "opened",
        "requests",
        "state",
        "streams",
        "transport",
        "write_paused",
    )  # fmt: skip

    def __init__(self, ctx: ConnectionContext, redirect: Redirect | None = None) -> None:
        super().__init__(redirect)  # SO_ORIGINAL_DST, read only if a request needs it
        self.ctx = ctx
        self.h2 = h2_codec.new_connection(client_side=False)
        self.transport: asyncio.Transport | None = None
        self.state = H2ConnectionState.OPEN
        self.streams: dict[int, H2DownstreamStream] = {}
        self.last_activity = self.opened = ctx.clock.now()
        self.head_started = 0.0  # since when, with no stream open, a frame is only partly received (0: not)
        self.requests = 0
        self.last_stream_id = 0
        self.goaway_sent = False
        self.in_batch = False  # inside data_received: one write at its end
        self.flush_scheduled = False
        self.write_paused = False  # the client socket's buffer is full (asyncio pause_writing)

    def __repr__(self) -> str:
        return (
            f"<H2ConnectionManager {self.peer} {self.state.value} streams={len(self.streams)} "
            f"requests={self.requests}>"
        )

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.adopt(transport)
        self.ctx.connection_opened(self, http2=True)
        self.h2.initiate_connection()
        h2_codec.open_connection_window(self.h2)
        self.flush()

    def adopt(self, transport: asyncio.BaseTransport) -> None:
        """Take over `transport` (a new connection, or one switched from HTTP/1.1)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.note_peer(transport)

    def data_received(self, data: bytes) -> None:
        self.ctx.http_stats.downstream_cx_rx_bytes_total += len(data)
        if self.closing is not None:
            self.closing.discard(len(data))
            return
        self.last_activity = now = self.ctx.clock.now()
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self._protocol_error(exc)
            return
        self.in_batch = True
        try:
            for event in events:
                self._on_event(event)
        finally:
            self.in_batch = False
        self.flush()
        if self.streams:
            self.head_started = 0.0
        elif self.h2.reading_frame():  # a preface, a frame or a header block dribbling in
            self.head_started = self.head_started or now
        else:
            self.head_started = 0.0
        if self.state is H2ConnectionState.DRAINING and not self.streams:
            self._close()

    def _on_event(self, event: H2Event) -> None:
        if isinstance(event, DataReceived):
            self._on_data(event)
        elif isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, StreamEnded):
            self._on_request_end(event.stream_id)
        elif isinstance(event, WindowUpdated):
            self._on_window_update(event.stream_id or 0)
        elif isinstance(event, StreamReset):
            if not event.remote_reset:  # the codec reset a malformed stream (RFC 9113 §8.1.1)
                self.ctx.http_stats.downstream_cx_protocol_error += 1
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                if stream.state is H2StreamState.ACTIVE:
                    self.ctx.http_stats.downstream_rq_rx_reset += 1
                stream.on_peer_reset()
        elif isinstance(event, RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._on_window_update(0)
        elif isinstance(event, ConnectionTerminated):
            self.state = H2ConnectionState.DRAINING  # the client sent GOAWAY: it opens no new streams

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = H2ConnectionState.CLOSED
        if self.closing is not None:
            self.closing.cancel()
        self._lose_streams()
        self.transport = None
        self.ctx.connection_closed(self)

    def _lose_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        if any(s.state is H2StreamState.ACTIVE for s in streams):
            self.ctx.http_stats.downstream_cx_destroy_remote_active_rq += 1
        for stream in streams:
            stream.on_connection_lost()

    def pause_writing(self) -> None:
        self.write_paused = True
        update_producers(self.streams.values())

    def resume_writing(self) -> None:
        self.write_paused = False
        update_producers(self.streams.values())

    # ---------------------------------------------------------------- request events
    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        if sid > self.last_stream_id:
            if self.goaway_sent:
                # above the last stream our GOAWAY promised to serve: the client may retry it elsewhere
                self._refuse(sid, ErrorCodes.REFUSED_STREAM)
                return
            self.last_stream_id = sid
        head = request_head_from_h2(event.headers, event.stream_ended is not None)
        if head is None:
            self.ctx.http_stats.downstream_cx_protocol_error += 1
            self._refuse(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        self.start_stream(sid, head)

    def start_stream(self, sid: int, head: RequestHead) -> H2DownstreamStream:
        ctx = self.ctx
        ctx.request_started(http2=True)
        self.requests += 1
        now = ctx.clock.now()
        stream = H2DownstreamStream(self, sid, is_grpc(head.headers), now)
        self.streams[sid] = stream
        request = stream.request = RouterRequest(ctx, stream, head, now)
        if head.method == "CONNECT":
            request.local_reply(EXTENDED_CONNECT_UNSUPPORTED)
        else:
            request.begin()
        return stream

    def _on_data(self, event: DataReceived) -> None:
        sid = event.stream_id
        length = event.flow_controlled_length
        stream = self.streams.get(sid)
        request = stream.request if stream is not None else None
        if stream is None or request is None or stream.state is not H2StreamState.ACTIVE:
            if length:
                self.acknowledge(sid, length)  # discarded, but the connection window must reopen
            return
        data = event.data
        if data:
            request.on_request_data(data)
        if length:
            if stream.read_paused:
                stream.unacked += length
            else:
                self.h2.acknowledge_received_data(length, sid)

    def _on_request_end(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.request_ended = True
        request = stream.request
        if stream.state is H2StreamState.ACTIVE and request is not None:
            request.on_request_end()
        elif stream.state is H2StreamState.DONE and stream.body.ended:
            stream.state = H2StreamState.CLOSED
            self.forget(stream)

    def _on_window_update(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None and stream.write_blocked:
                stream.flush()
            return
        for stream in list(self.streams.values()):
            if stream.write_blocked:
                stream.flush()

    def _refuse(self, sid: int, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error):
            self.h2.reset_stream(sid, code)

    # ---------------------------------------------------------------- StreamHost (called by the streams)
    def acknowledge(self, sid: int, length: int) -> None:
        """Reopen the flow-control windows for `length` bytes of `sid` the proxy has passed on."""
        try:
            self.h2.acknowledge_received_data(length, sid)
        except H2Error:
            return
        self.schedule_flush()

    def stream_finished(self, stream: H2DownstreamStream) -> None:
        self.ctx.request_finished(stream.status_sent, stream.started)
        if self.ctx.draining:
            self._send_goaway()

    def forget(self, stream: H2DownstreamStream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if self.state is H2ConnectionState.DRAINING and not self.streams and not self.in_batch:
            self.ctx.clock.call_soon(self._close_if_drained)

    def _close_if_drained(self) -> None:
        if self.state is H2ConnectionState.DRAINING and not self.streams:
            self._close()

    def schedule_flush(self) -> None:
        """Write the codec's output at the end of this read, or once this loop iteration (responses from
        several upstream connections share one write)."""
        if self.in_batch or self.flush_scheduled or self.transport is None:
            return
        self.flush_scheduled = True
        self.ctx.clock.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or self.closing is not None:
            return
        data = self.h2.data_to_send()
        if data:
            self.ctx.http_stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    # ---------------------------------------------------------------- drain and close
    def _send_goaway(self) -> None:
        """Graceful GOAWAY (RFC 9113 §6.8): streams up to the last one received still complete."""
        if self.goaway_sent or self.transport is None or self.closing is not None:
            return
        self.goaway_sent = True
        self.state = H2ConnectionState.DRAINING
        self.flush()
        assert self.transport is not None
        self.transport.write(h2_codec.goaway_frame(self.last_stream_id))

    def _close(self) -> None:
        if self.state is H2ConnectionState.CLOSING or self.state is H2ConnectionState.CLOSED:
            return
        with contextlib.suppress(H2Error):
            self.h2.close_connection(last_stream_id=self.last_stream_id)
        self._close_after_goaway()

    def _protocol_error(self, exc: Exception) -> None:
        log.debug("downstream %s: HTTP/2 protocol error: %s", self.peer, exc)
        self.ctx.http_stats.downstream_cx_protocol_error += 1
        self._close_after_goaway()  # the codec queued a GOAWAY with the error code

    def _close_after_goaway(self) -> None:
        """Write what the codec holds (its last GOAWAY), then close so that the client reads it: a delayed
        close (net/delayed_close.py). Streams still open end now (nothing more is written for them)."""
        self.flush()
        self.state = H2ConnectionState.CLOSING
        transport = self.transport
        if transport is not None and self.closing is None:
            self.closing = DelayedClose(transport, self.ctx.clock)
        self._lose_streams()

    # ---------------------------------------------------------------- ClientConnection
    def idle(self) -> bool:
        return not self.streams and (
            self.state is H2ConnectionState.OPEN or self.state is H2ConnectionState.DRAINING
        )

    def active_requests(self) -> list[RouterRequest]:
        return [s.request for s in self.streams.values() if s.request is not None]

    def on_headers_timeout(self) -> bool:
        """No stream open and a frame (the preface, a HEADERS block) incomplete for the request-headers
        timeout: GOAWAY and close. Frames and header blocks are bounded meanwhile (SETTINGS_MAX_FRAME_SIZE,
        the header-list limits)."""
        if not self.head_started or not self.idle():
            return False
        self.head_started = 0.0
        self.ctx.http_stats.downstream_rq_header_timeout += 1
        self._close()
        return True

    def close_if_idle(self) -> bool:
        """Close now if no stream is open. While the proxy drains, the client is told first (a GOAWAY with
        the last stream id) and the connection closes on a later call, so a request crossing the GOAWAY is
        refused (REFUSED_STREAM: the client may retry it) instead of lost with the connection."""
        if self.ctx.draining and not self.goaway_sent:
            self._send_goaway()
            return False
        if self.idle():
            self._close()
            return True
        return False
