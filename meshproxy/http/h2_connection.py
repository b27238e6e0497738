"""The HTTP/2 connection manager (downstream, server side): h2c with prior knowledge or `Upgrade: h2c`.

One `H2DownstreamConnection` (an asyncio Protocol over h2's sans-I/O `H2Connection`) per client connection;
one `H2DownstreamStream` per request, which is the router's `Downstream` for that request, so the router's
`UpstreamRequest` (routing, retries, timeouts, stats) runs unchanged whatever the upstream protocol is.

The hot path follows the hot-path notes: no coroutine per request, one `transport.write` per batch (the
stream's encode_* methods queue into h2 and return b""; the connection writes h2's output once per read, or
once per loop iteration for responses that arrive from upstream connections).

Flow control (RFC 9113 §5.2) is end to end: request DATA is acknowledged (its window reopened) only while the
router is not pausing this stream, and response DATA waits in the stream for WINDOW_UPDATEs while the router
pauses the upstream, so a slow reader slows the writer and memory stays bounded by the windows.

Drain: while the proxy drains, the first response completed on a connection is followed by a GOAWAY naming
the last stream it will serve (after the response, so clients that stop reading at a GOAWAY still get it);
the connection closes when those streams are done. WebSocket over HTTP/2 (RFC 8441
extended CONNECT) is not offered (SETTINGS_ENABLE_CONNECT_PROTOCOL is never sent) and a CONNECT is answered
501 with a message saying so (App Mesh's Envoy failed such requests with 503 UC, user-expectations #465).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

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
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from meshproxy.config.snapshot import Snapshot
from meshproxy.http import h2_codec
from meshproxy.http.codec import BodyKind, Event, Headers, RequestHead, ResponseHead, Upgraded
from meshproxy.http.grpc import is_grpc, trailers_only_headers
from meshproxy.http.h2_codec import OutboundBody
from meshproxy.http.headers import HTTP_DATE
from meshproxy.http.local_reply import LocalReply, ResponseFlag
from meshproxy.net.original_dst import Redirect
from meshproxy.router.forwarder import UpstreamRequest

if TYPE_CHECKING:
    from meshproxy.http.connection import DownstreamConnection
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.http2")

EXTENDED_CONNECT_UNSUPPORTED = LocalReply(
    501,
    b"meshproxy: CONNECT and WebSocket over HTTP/2 (RFC 8441 extended CONNECT) are not supported on this "
    b"listener; use an http listener (HTTP/1.1 Upgrade: websocket)",
    ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
    12,  # UNIMPLEMENTED
)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
_UPGRADE_ONLY = frozenset({b"upgrade", b"http2-settings", b"connection"})


class H2ConnectionState(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"  # GOAWAY sent or received: the streams already started finish, no new ones
    CLOSED = "closed"


class H2StreamState(enum.Enum):
    ACTIVE = "active"  # the router is working on the request
    DONE = "done"  # the router is done; queued response bytes may still wait for flow control
    CLOSED = "closed"  # ended or reset, forgotten by the connection


class H2DownstreamStream(h2_codec.StreamReadPause):
    """One request on an HTTP/2 connection: the router's `Downstream` and its own `ResponseEncoder`."""

    connection: H2DownstreamConnection

    __slots__ = (
        "body",
        "codec",
        "connection",
        "grpc",
        "head_out",
        "listener",
        "peer_ip",
        "producer_paused",
        "request",
        "request_ended",
        "snapshot",
        "state",
        "stream_id",
        "write_blocked",
    )  # fmt: skip

    def __init__(self, connection: H2DownstreamConnection, stream_id: int, grpc: bool) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.listener: HttpListener = connection.listener
        self.snapshot: Snapshot = connection.listener.dataplane.snapshot  # one snapshot per request
        self.peer_ip = connection.peer_ip
        self.codec = self
        self.grpc = grpc
        self.request: UpstreamRequest | None = None
        self.state = H2StreamState.ACTIVE
        self.head_out: list[tuple[bytes, bytes]] | None = None
        self.body = OutboundBody()
        self.request_ended = False
        self.read_paused = False  # the router asked us to stop reading: request DATA is not acknowledged
        self.unacked = 0  # flow-controlled bytes received while paused
        self.write_blocked = False  # response DATA waits for a WINDOW_UPDATE
        self.producer_paused = False  # we asked the router to pause the upstream

    @property
    def original_destination(self) -> tuple[str, int] | None:
        return self.connection.original_destination

    @property
    def original_port(self) -> int | None:
        return self.connection.original_port

    def __repr__(self) -> str:
        return (
            f"<H2DownstreamStream {self.stream_id} {self.state.value} queued={self.body.size} "
            f"blocked={self.write_blocked} paused={self.read_paused}>"
        )

    # ---------------------------------------------------------------- ResponseEncoder (queue; write() sends)
    def encode_data(self, data: bytes) -> bytes:
        self.body.push(data)
        return b""

    def encode_end(self) -> bytes:
        self.body.finish()
        return b""

    def encode_trailers(self, trailers: Headers) -> bytes:
        """End the response with trailers (gRPC's grpc-status / grpc-message)."""
        self.body.finish(h2_codec.h2_trailers(trailers))
        return b""

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        return b""  # `Expect: 100-continue` is not signalled on HTTP/2 streams (the head says expect=False)

    # ---------------------------------------------------------------- Downstream
    def encode_response_head(self, head: ResponseHead, service_time_ms: int) -> bytes:
        self.head_out = h2_codec.h2_response_headers(head, service_time_ms)
        return b""

    def write(self, data: bytes) -> None:
        # `data` is what our encode_* methods returned (b""): the queued frames go out now.
        if self.state is not H2StreamState.CLOSED:
            self._send()
            self.connection.schedule_flush()

    def send_local_reply(self, stream: UpstreamRequest, reply: LocalReply) -> None:
        if self.state is not H2StreamState.ACTIVE:
            return
        server = h2_codec.SERVER_HEADER
        if self.grpc:
            # gRPC clients get a trailers-only response carrying the status (Envoy's gRPC local replies)
            headers = [(b":status", b"200")]
            headers += trailers_only_headers(reply.grpc_status, reply.body)
            headers += [(b"date", HTTP_DATE.now()), server]
        else:
            body = reply.body
            headers = [
                (b":status", b"%d" % reply.status),
                (b"content-length", b"%d" % len(body)),
                (b"content-type", b"text/plain"),
                (b"date", HTTP_DATE.now()),
                server,
            ]
            self.body.push(body)
        self.body.finish()
        self.head_out = headers
        self._send()
        self.connection.schedule_flush()
        self.stream_done(stream)

    def stream_done(self, stream: UpstreamRequest) -> None:
        if self.state is not H2StreamState.ACTIVE:
            return
        self.state = H2StreamState.DONE
        self.connection.on_request_done(self, stream)
        if self.body.ended:
            self._close()

    def abort(self, stream: UpstreamRequest) -> None:
        """The response cannot be completed: reset the stream (the connection and other streams live on)."""
        if self.state is H2StreamState.ACTIVE:
            self.state = H2StreamState.DONE
            self.connection.on_request_done(self, stream)
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def start_tunnel(self, stream: UpstreamRequest) -> None:
        self.abort(stream)  # requests from HTTP/2 clients never ask for an Upgrade; nothing to tunnel

    def tunnel_eof(self) -> None:
        pass  # no tunnels on HTTP/2 streams (start_tunnel aborts)

    def end_tunnel(self) -> None:
        pass

    # ---------------------------------------------------------------- sending, flow control, endings
    def _send(self) -> None:
        conn = self.connection.h2
        sid = self.stream_id
        body = self.body
        try:
            head = self.head_out
            if head is not None:
                self.head_out = None
                if body.finished and not body.chunks and body.trailers is None:
                    conn.send_headers(sid, head, end_stream=True)
                    body.ended = True
                else:
                    conn.send_headers(sid, head)
            blocked = body.drain(conn, sid)
        except H2Error as exc:  # the stream was reset or closed under us: nothing more can go out
            log.debug("stream %s: cannot send: %s", sid, exc)
            self.reset(ErrorCodes.INTERNAL_ERROR)
            return
        if blocked is not self.write_blocked:
            self.write_blocked = blocked
            self.update_producer()
        if body.ended and self.state is H2StreamState.DONE:
            self._close()

    def update_producer(self) -> None:
        """Pause the upstream while this stream's window or the client socket is full; resume after."""
        paused = self.write_blocked or self.connection.write_paused
        if paused is not self.producer_paused:
            self.producer_paused = paused
            request = self.request
            if request is not None and self.state is H2StreamState.ACTIVE:
                if paused:
                    request.on_downstream_write_paused()
                else:
                    request.on_downstream_write_resumed()

    def _close(self) -> None:
        """Response sent and router done. If the client is still sending, stop it politely (RFC 9113 §8.1:
        RST_STREAM NO_ERROR after a complete response)."""
        if not self.request_ended:
            self.reset(ErrorCodes.NO_ERROR)
            return
        self.state = H2StreamState.CLOSED
        self.connection.forget(self)

    def reset(self, code: ErrorCodes) -> None:
        if self.state is H2StreamState.CLOSED:
            return
        self.state = H2StreamState.CLOSED
        with contextlib.suppress(H2Error):  # already closed on the h2 side
            self.connection.h2.reset_stream(self.stream_id, code)
        self.connection.forget(self)
        self.connection.schedule_flush()

    def on_peer_reset(self) -> None:
        """The client reset the stream (RST_STREAM): the router stops; nothing more is sent."""
        self.request_ended = True  # nothing more arrives, and there is nothing left to reset
        request = self.request
        if self.state is H2StreamState.ACTIVE and request is not None:
            self.listener.http_stats.downstream_rq_rx_reset += 1
            request.on_downstream_lost()  # the router calls stream_done, which counts the request
            if self.state is H2StreamState.ACTIVE:
                self.stream_done(request)
        self.state = H2StreamState.CLOSED

    def on_connection_lost(self) -> None:
        self.request_ended = True
        request = self.request
        if self.state is H2StreamState.ACTIVE and request is not None:
            request.on_downstream_lost()
            if self.state is H2StreamState.ACTIVE:
                self.stream_done(request)
        self.state = H2StreamState.CLOSED


class H2DownstreamConnection(asyncio.Protocol):
    """One HTTP/2 client connection (prior knowledge, or after `Upgrade: h2c`)."""

    __slots__ = (
        "flush_scheduled",
        "goaway_sent",
        "h2",
        "in_batch",
        "last_activity",
        "last_stream_id",
        "listener",
        "loop",
        "opened",
        "peer",
        "peer_ip",
        "redirect",
        "requests",
        "state",
        "streams",
        "transport",
        "write_paused",
    )  # fmt: skip

    def __init__(self, listener: HttpListener, redirect: Redirect | None = None) -> None:
        self.listener = listener
        self.h2 = h2_codec.new_connection(client_side=False)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = H2ConnectionState.OPEN
        self.streams: dict[int, H2DownstreamStream] = {}
        self.redirect = redirect  # the dispatcher's: SO_ORIGINAL_DST, read only if a request needs it
        self.peer_ip = b"-"
        self.peer = "-"
        self.last_activity = time.monotonic()
        self.opened = self.last_activity
        self.requests = 0
        self.last_stream_id = 0
        self.goaway_sent = False
        self.in_batch = False  # inside data_received: one write at its end
        self.flush_scheduled = False
        self.write_paused = False  # the client socket's buffer is full (asyncio pause_writing)

    @property
    def original_destination(self) -> tuple[str, int] | None:
        return self.redirect.destination if self.redirect is not None else None

    @property
    def original_port(self) -> int | None:
        return self.redirect.port if self.redirect is not None else None

    def __repr__(self) -> str:
        return (
            f"<H2DownstreamConnection {self.peer} {self.state.value} streams={len(self.streams)} "
            f"requests={self.requests}>"
        )

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._adopt(transport)
        self.listener.on_connection_open(self, http2=True)
        self.h2.initiate_connection()
        h2_codec.open_connection_window(self.h2)
        self.flush()

    def _adopt(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0]).encode()
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.listener.http_stats.downstream_cx_rx_bytes_total += len(data)
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self._protocol_error(exc)
            return
        self.in_batch = True
        try:
            for event in events:
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
                        self.listener.http_stats.downstream_cx_protocol_error += 1
                    stream = self.streams.pop(event.stream_id, None)
                    if stream is not None:
                        stream.on_peer_reset()
                elif isinstance(event, RemoteSettingsChanged):
                    if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                        self._on_window_update(0)
                elif isinstance(event, ConnectionTerminated):
                    self.state = H2ConnectionState.DRAINING  # the client sent GOAWAY: it opens no new streams
        finally:
            self.in_batch = False
        self.flush()
        if self.state is H2ConnectionState.DRAINING and not self.streams:
            self._close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = H2ConnectionState.CLOSED
        streams = list(self.streams.values())
        self.streams.clear()
        if any(s.state is H2StreamState.ACTIVE for s in streams):
            self.listener.http_stats.downstream_cx_destroy_remote_active_rq += 1
        for stream in streams:
            stream.on_connection_lost()
        self.transport = None
        self.listener.on_connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.update_producer()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.update_producer()

    # ---------------------------------------------------------------- request events
    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        if sid > self.last_stream_id:
            if self.goaway_sent:
                # above the last stream our GOAWAY promised to serve: the client may retry it elsewhere
                self._refuse(sid, ErrorCodes.REFUSED_STREAM)
                return
            self.last_stream_id = sid
        head = h2_codec.request_head_from_h2(event.headers, event.stream_ended is not None)
        if head is None:
            self.listener.http_stats.downstream_cx_protocol_error += 1
            self._refuse(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        self.start_stream(sid, head)

    def start_stream(self, sid: int, head: RequestHead) -> H2DownstreamStream:
        listener = self.listener
        stats = listener.http_stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_http2_total += 1
        stats.downstream_rq_active += 1
        self.listener.requests_active += 1
        self.requests += 1
        stream = H2DownstreamStream(self, sid, is_grpc(head.headers))
        self.streams[sid] = stream
        request = stream.request = UpstreamRequest(stream, head)
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
                stream.write(b"")
            return
        for stream in list(self.streams.values()):
            if stream.write_blocked:
                stream.write(b"")

    def _refuse(self, sid: int, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error):
            self.h2.reset_stream(sid, code)

    # ---------------------------------------------------------------- called by the streams
    def acknowledge(self, sid: int, length: int) -> None:
        """Reopen the flow-control windows for `length` bytes of `sid` the proxy has passed on."""
        try:
            self.h2.acknowledge_received_data(length, sid)
        except H2Error:
            return
        self.schedule_flush()

    def on_request_done(self, stream: H2DownstreamStream, request: UpstreamRequest) -> None:
        self.listener.on_request_done(self, request)
        if self.listener.dataplane.draining:
            self._send_goaway()

    def forget(self, stream: H2DownstreamStream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if self.state is H2ConnectionState.DRAINING and not self.streams and not self.in_batch:
            self.loop_call_soon(self._close_if_drained)

    def loop_call_soon(self, callback: Callable[[], None]) -> None:
        if self.loop is not None:
            self.loop.call_soon(callback)

    def _close_if_drained(self) -> None:
        if self.state is H2ConnectionState.DRAINING and not self.streams:
            self._close()

    def schedule_flush(self) -> None:
        """Write h2's output at the end of this read, or once this loop iteration (responses from several
        upstream connections share one write)."""
        if self.in_batch or self.flush_scheduled or self.loop is None:
            return
        self.flush_scheduled = True
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.listener.http_stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    # ---------------------------------------------------------------- drain and close
    def _send_goaway(self) -> None:
        """Graceful GOAWAY (RFC 9113 §6.8): streams up to the last one received still complete."""
        if self.goaway_sent or self.transport is None:
            return
        self.goaway_sent = True
        self.state = H2ConnectionState.DRAINING
        self.flush()
        assert self.transport is not None
        self.transport.write(h2_codec.goaway_frame(self.last_stream_id))

    def _close(self) -> None:
        if self.state is H2ConnectionState.CLOSED:
            return
        self.state = H2ConnectionState.CLOSED
        with contextlib.suppress(H2Error):
            self.h2.close_connection(last_stream_id=self.last_stream_id)
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def _protocol_error(self, exc: Exception) -> None:
        log.debug("downstream %s: HTTP/2 protocol error: %s", self.peer, exc)
        self.listener.http_stats.downstream_cx_protocol_error += 1
        self.flush()  # h2 queued a GOAWAY with the error code
        self.state = H2ConnectionState.CLOSED
        if self.transport is not None:
            self.transport.close()

    def idle(self) -> bool:
        return not self.streams and self.state is not H2ConnectionState.CLOSED

    def active_requests(self) -> list[UpstreamRequest]:
        return [s.request for s in self.streams.values() if s.request is not None]

    def close_if_idle(self) -> bool:
        if self.idle():
            self._close()
            return True
        if self.listener.dataplane.draining:
            self._send_goaway()
        return False


class PrefaceState(enum.Enum):
    SNIFFING = "sniffing"
    HANDED_OVER = "handed-over"
    CLOSED = "closed"


class PrefaceSniffer(asyncio.Protocol):
    """An http2/grpc listener that nothing redirects to (a virtual gateway's port): h2c with prior knowledge
    goes to the HTTP/2 manager, anything else to the HTTP/1.1 one (which may then ask `Upgrade: h2c`)."""

    __slots__ = ("buffer", "listener", "state", "transport")

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.state = PrefaceState.SNIFFING

    def __repr__(self) -> str:
        return f"<PrefaceSniffer {self.listener.name} {self.state.value}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer = self.buffer + data
        if len(buffer) < len(H2_PREFACE) and H2_PREFACE.startswith(buffer):
            return
        from meshproxy.http.connection import DownstreamConnection  # imports this module

        transport = self.transport
        assert transport is not None
        protocol: asyncio.Protocol
        if buffer.startswith(H2_PREFACE):
            protocol = H2DownstreamConnection(self.listener)
        else:
            protocol = DownstreamConnection(self.listener)
        self.state = PrefaceState.HANDED_OVER
        self.buffer = b""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = PrefaceState.CLOSED


# ---------------------------------------------------------------------------------------------------------
# `Upgrade: h2c` (RFC 7540 §3.2; removed from RFC 9113 but still sent by curl --http2 and some clients)


def h2c_upgrade_settings(head: RequestHead) -> bytes | None:
    """The `HTTP2-Settings` value of an `Upgrade: h2c` request the proxy will accept, else None. Only
    requests without a body are upgraded; others are served over HTTP/1.1 (a server may ignore Upgrade)."""
    if not head.upgrade or head.body is not BodyKind.NONE:
        return None
    upgrade = settings = None
    for name, value in head.headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"http2-settings":
            settings = value
    if upgrade is None or settings is None or upgrade.strip().lower() != b"h2c":
        return None
    return settings


def upgrade_to_h2c(h1: DownstreamConnection, head: RequestHead, settings: bytes, rest: list[Event]) -> bool:
    """Take over `h1`'s transport: answer 101, then serve `head` as stream 1 and the rest as HTTP/2.
    `rest` holds the events the HTTP/1.1 codec parsed after the head. False (nothing done) if the
    HTTP2-Settings value is malformed; the request is then served over HTTP/1.1."""
    transport = h1.transport
    if transport is None:
        return False
    listener = h1.listener
    manager = H2DownstreamConnection(listener, h1.redirect)
    try:
        manager.h2.initiate_upgrade_connection(settings)
    except (H2Error, ValueError, binascii.Error) as exc:
        log.debug("downstream %s: bad HTTP2-Settings: %s", h1.peer, exc)
        return False
    h2_codec.open_connection_window(manager.h2)
    listener.on_connection_upgraded(h1, manager)
    manager._adopt(transport)
    manager.opened = h1.opened
    transport.set_protocol(manager)
    transport.write(_SWITCHING_PROTOCOLS + manager.h2.data_to_send())
    manager.last_stream_id = 1
    headers = [(n, v) for n, v in head.headers if n not in _UPGRADE_ONLY]
    stream1 = dataclasses.replace(head, headers=headers, upgrade=False, http_version="2")
    manager.in_batch = True
    try:
        stream = manager.start_stream(1, stream1)
        stream.request_ended = True
        if stream.request is not None and stream.state is H2StreamState.ACTIVE:
            stream.request.on_request_end()
    finally:
        manager.in_batch = False
    manager.flush()
    trailing = b"".join(e.trailing for e in rest if isinstance(e, Upgraded)) + h1.codec.upgrade_trailing()
    if trailing:
        manager.data_received(trailing)
    return True
