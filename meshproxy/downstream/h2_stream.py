"""One request on an HTTP/2 client connection: the router's `Downstream` for that request.

The router's sends queue (the response head, DATA in an `OutboundBody`, trailers) and `flush` puts them into
the connection's codec as far as flow control allows; the connection writes once per read, or once per loop
iteration for responses that arrive from upstream connections (downstream/h2.py). Request DATA is
acknowledged only while the router is not pausing this stream, so a slow upstream slows the client.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from typing import Protocol

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from meshproxy.codec.grpc import trailers_only_headers
from meshproxy.codec.h2 import H2Codec
from meshproxy.codec.h2_flow import OutboundBody, StreamFlow
from meshproxy.codec.h2_messages import SERVER_HEADER, h2_response_headers, h2_trailers
from meshproxy.codec.headers import HTTP_DATE
from meshproxy.core.events import Headers, ResponseHead
from meshproxy.core.outcomes import LocalReply
from meshproxy.router.context import Downstream, TunnelEnd
from meshproxy.router.request import RouterRequest

log = logging.getLogger("meshproxy.http2")


class StreamHost(Protocol):
    """What a stream needs from its connection (H2ConnectionManager)."""

    h2: H2Codec
    peer: str
    secure: bool
    write_paused: bool

    @property
    def original_destination(self) -> tuple[str, int] | None: ...

    @property
    def original_port(self) -> int | None: ...

    def acknowledge(self, sid: int, length: int) -> None: ...

    def schedule_flush(self) -> None: ...

    def stream_finished(self, stream: H2DownstreamStream) -> None:
        """The router is done with the stream (counted once)."""
        ...

    def forget(self, stream: H2DownstreamStream) -> None: ...


class H2StreamState(enum.Enum):
    ACTIVE = "active"  # the router is working on the request
    DONE = "done"  # the router is done; queued response bytes may still wait for flow control
    CLOSED = "closed"  # ended or reset, forgotten by the connection


class H2DownstreamStream(StreamFlow[StreamHost], Downstream):
    __slots__ = (
        "_secure",
        "body",
        "connection",
        "grpc",
        "head_out",
        "request",
        "request_ended",
        "started",
        "state",
        "status_sent",
        "stream_id",
    )  # fmt: skip

    def __init__(self, connection: StreamHost, stream_id: int, grpc: bool, started: float) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.grpc = grpc
        self.started = started
        self._secure = connection.secure  # copied: reading the connection's would cost a lookup per request
        self.request: RouterRequest | None = None
        self.state = H2StreamState.ACTIVE
        self.head_out: list[tuple[bytes, bytes]] | None = None
        self.body = OutboundBody()
        self.request_ended = False
        self.read_paused = False  # the router asked us to stop reading: request DATA is not acknowledged
        self.unacked = 0  # flow-controlled bytes received while paused
        self.write_blocked = False  # response DATA waits for a WINDOW_UPDATE
        self.producer_paused = False  # we asked the router to pause the upstream
        self.status_sent = 0

    def __repr__(self) -> str:
        return (
            f"<H2DownstreamStream {self.stream_id} {self.state.value} queued={self.body.size} "
            f"blocked={self.write_blocked} paused={self.read_paused}>"
        )

    @property
    def original_destination(self) -> tuple[str, int] | None:
        return self.connection.original_destination

    @property
    def original_port(self) -> int | None:
        return self.connection.original_port

    @property
    def peer(self) -> str:
        return self.connection.peer

    @property
    def secure(self) -> bool:
        return self._secure

    # ---------------------------------------------------------------- Downstream (called by the router)
    def send_informational(self, status: int, headers: Headers) -> None:
        pass  # `Expect: 100-continue` is not signalled on HTTP/2 streams

    def send_head(self, head: ResponseHead, service_time_ms: int) -> None:
        self.status_sent = head.status
        self.head_out = h2_response_headers(head, service_time_ms)

    def send_data(self, data: bytes) -> None:
        self.body.push(data)

    def send_end(self, trailers: Headers | None) -> None:
        self.body.finish(h2_trailers(trailers) if trailers is not None else None)

    def flush(self) -> None:
        if self.state is not H2StreamState.CLOSED:
            self._send()
            self.connection.schedule_flush()

    def send_local_reply(self, reply: LocalReply) -> None:
        if self.state is not H2StreamState.ACTIVE:
            return
        self.status_sent = reply.status
        if self.grpc:
            # gRPC clients get a trailers-only response carrying the status (Envoy's gRPC local replies)
            headers = [(b":status", b"200")]
            headers += trailers_only_headers(reply.grpc_status, reply.body)
            headers += [(b"date", HTTP_DATE.now()), SERVER_HEADER]
        else:
            body = reply.body
            headers = [
                (b":status", b"%d" % reply.status),
                (b"content-length", b"%d" % len(body)),
                (b"content-type", b"text/plain"),
                (b"date", HTTP_DATE.now()),
                SERVER_HEADER,
            ]
            self.body.push(body)
        self.body.finish()
        self.head_out = headers
        self.flush()
        self.request_done()

    def request_done(self) -> None:
        if self.state is not H2StreamState.ACTIVE:
            return
        self.state = H2StreamState.DONE
        self.connection.stream_finished(self)
        if self.body.ended:
            self._close()

    def abort(self) -> None:
        """The response cannot be completed: reset the stream (the connection and other streams live on)."""
        if self.state is H2StreamState.ACTIVE:
            self.state = H2StreamState.DONE
            self.connection.stream_finished(self)
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def start_tunnel(self, tunnel: TunnelEnd) -> None:
        self.abort()  # requests from HTTP/2 clients never ask for an Upgrade; nothing to tunnel

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

    def producer_changed(self, paused: bool) -> None:
        """Pause the upstream while this stream's window or the client socket is full; resume after."""
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
        with contextlib.suppress(H2Error):  # already closed on the codec's side
            self.connection.h2.reset_stream(self.stream_id, code)
        self.connection.forget(self)
        self.connection.schedule_flush()

    def on_peer_reset(self) -> None:
        """The client reset the stream (RST_STREAM): the router stops; nothing more is sent."""
        self.request_ended = True  # nothing more arrives, and there is nothing left to reset
        request = self.request
        if self.state is H2StreamState.ACTIVE and request is not None:
            request.on_downstream_lost()  # the router calls request_done, which counts the request
            if self.state is H2StreamState.ACTIVE:
                self.request_done()
        self.state = H2StreamState.CLOSED

    def on_connection_lost(self) -> None:
        self.request_ended = True
        request = self.request
        if self.state is H2StreamState.ACTIVE and request is not None:
            request.on_downstream_lost()
            if self.state is H2StreamState.ACTIVE:
                self.request_done()
        self.state = H2StreamState.CLOSED
