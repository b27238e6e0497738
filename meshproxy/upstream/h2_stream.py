"""One attempt's stream on a pooled HTTP/2 connection: the `Upstream` the router's attempt talks to.

`send_*` queue the request (HEADERS, DATA, END_STREAM) and `flush` marks the stream for its connection's next
flush (upstream/h2_connection.py), which puts every marked stream's frames into the codec and writes once.
Response events of one read are collected here and delivered together (`deliver`); DATA is acknowledged (its
window reopened) only while the router is not pausing this stream, so a slow client slows the upstream.
"""

from __future__ import annotations

import enum
import logging
from typing import Protocol

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from meshproxy.codec.h2 import H2Codec
from meshproxy.codec.h2_flow import OutboundBody, StreamFlow
from meshproxy.codec.h2_messages import h2_request_headers
from meshproxy.core.events import END, BodyKind, Data, Event, RequestHead, ResponseHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.ports import Upstream, UpstreamStream

log = logging.getLogger("meshproxy.upstream")

UPGRADE_UNSUPPORTED_BODY = (
    b"meshproxy: this upstream speaks HTTP/2 (listener protocol http2/grpc); an HTTP/1.1 Upgrade "
    b"(WebSocket) cannot be forwarded to it. Use an http listener for WebSocket traffic."
)


class StreamCarrier(Protocol):
    """What a stream needs from its connection (H2UpstreamConnection)."""

    h2: H2Codec
    streams: dict[int, H2UpstreamStream]
    write_paused: bool

    @property
    def stats(self) -> ClusterStats: ...

    @property
    def label(self) -> str: ...

    def mark_dirty(self, stream: H2UpstreamStream) -> None: ...

    def acknowledge(self, sid: int, length: int) -> None: ...

    def schedule_flush(self) -> None: ...

    def call_soon_refusal(self, stream: H2UpstreamStream) -> None: ...

    def stream_finished(self, stream: H2UpstreamStream) -> None: ...


class H2StreamState(enum.Enum):
    RESERVED = "reserved"  # handed to a request; no HEADERS sent yet (no stream id)
    OPEN = "open"  # HEADERS sent
    CLOSED = "closed"  # released, reset or lost: no longer counted against the connection


class H2UpstreamStream(StreamFlow[StreamCarrier], Upstream):
    __slots__ = (
        "body",
        "connection",
        "dirty",
        "head_out",
        "head_request",
        "response_ended",
        "rx",
        "rx_length",
        "state",
        "stream",
        "stream_id",
        "upgrade",
    )  # fmt: skip

    def __init__(self, connection: StreamCarrier) -> None:
        self.connection = connection
        self.stream: UpstreamStream | None = None
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
            f"<H2UpstreamStream {self.connection.label} #{self.stream_id} {self.state.value} "
            f"queued={self.body.size}>"
        )

    # ---------------------------------------------------------------- Upstream
    def attach(self, stream: UpstreamStream) -> None:
        self.stream = stream

    def send_head(self, head: RequestHead) -> None:
        self.head_request = head.method == "HEAD"
        self.upgrade = head.upgrade
        self.head_out = h2_request_headers(head)

    def send_data(self, data: bytes) -> None:
        self.body.push(data)

    def send_end(self) -> None:
        self.body.finish()

    def flush(self) -> None:
        if self.state is H2StreamState.CLOSED:
            return
        if self.upgrade:
            self.upgrade = False
            self.connection.call_soon_refusal(self)
            return
        self.connection.mark_dirty(self)

    def start_tunnel(self) -> None:
        self.close()  # never reached: Upgrade requests are answered 501 (see refuse_upgrade)

    def write_eof(self) -> None:
        pass  # no tunnels on HTTP/2 streams

    def release(self) -> None:
        """The response is complete. A request body still queued (the server answered early) is cancelled."""
        self.stream = None
        if self.state is H2StreamState.OPEN and not self.body.ended:
            self.reset(ErrorCodes.CANCEL)
        self._finish()

    def close(self) -> None:
        """Abandon the attempt: reset the stream if either direction is still open."""
        self.stream = None
        if self.state is H2StreamState.OPEN and not (self.body.ended and self.response_ended):
            self.reset(ErrorCodes.CANCEL)
        self._finish()

    # ---------------------------------------------------------------- called by the connection
    def send(self) -> None:
        """Put the queued HEADERS / DATA / END_STREAM into the codec, as far as flow control allows."""
        if self.state is H2StreamState.CLOSED:
            return
        connection = self.connection
        conn = connection.h2
        body = self.body
        try:
            head = self.head_out
            if head is not None:
                self.head_out = None
                sid = self.stream_id = conn.get_next_available_stream_id()
                self.state = H2StreamState.OPEN
                connection.streams[sid] = self
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

    def producer_changed(self, paused: bool) -> None:
        """Pause the downstream while this stream's window or the upstream socket is full; resume after."""
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
        self._finish()
        if stream is not None:
            stream.on_upstream_lost(failure)

    def reset(self, code: ErrorCodes) -> None:
        try:
            self.connection.h2.reset_stream(self.stream_id, code)
        except H2Error:
            return
        self.connection.stats.upstream_rq_tx_reset += 1
        self.connection.schedule_flush()

    def refuse_upgrade(self) -> None:
        """Answer an HTTP/1.1 Upgrade locally: it cannot travel over an HTTP/2 stream."""
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

    def _finish(self) -> None:
        if self.state is H2StreamState.CLOSED:
            return
        self.state = H2StreamState.CLOSED
        self.connection.stream_finished(self)
