"""The HTTP/1.1 connection manager: one codec per downstream connection, one `UpstreamRequest` per request.

Requests on a connection are answered in order. A pipelined request that arrives while a response is still
being sent is held (with reading paused) until that response is complete. Output to the client is one
`transport.write` per batch of events (hot-path notes: each extra write is an extra syscall).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from meshproxy.config.snapshot import Snapshot
from meshproxy.http import local_reply
from meshproxy.http.codec import (
    BodyKind,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
    ServerCodec,
    Upgraded,
)
from meshproxy.http.h1_httptools import reason_phrase
from meshproxy.http.h2_connection import h2c_upgrade_settings, upgrade_to_h2c
from meshproxy.http.headers import HOP_BY_HOP, HTTP_DATE
from meshproxy.http.local_reply import LocalReply
from meshproxy.net.original_dst import Redirect
from meshproxy.router.forwarder import StreamState, UpstreamRequest

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.http")


class DownstreamState(enum.Enum):
    OPEN = "open"
    TUNNEL = "tunnel"
    CLOSING = "closing"
    CLOSED = "closed"


_SERVER = (b"server", b"envoy")
_CONNECTION_CLOSE = (b"connection", b"close")


class DownstreamConnection(asyncio.Protocol):
    __slots__ = (
        "close_after_response",
        "codec",
        "held",
        "last_activity",
        "listener",
        "opened",
        "paused",
        "peer",
        "peer_ip",
        "receiving",
        "redirect",
        "requests",
        "responding",
        "snapshot",
        "state",
        "transport",
        "tunnel_bytes",
    )  # fmt: skip

    def __init__(self, listener: HttpListener, redirect: Redirect | None = None) -> None:
        self.listener = listener
        self.codec: ServerCodec = listener.server_codec_factory()
        self.transport: asyncio.Transport | None = None
        self.state = DownstreamState.OPEN
        self.receiving: UpstreamRequest | None = None  # request whose body is still arriving
        self.responding: UpstreamRequest | None = None  # request whose response is not complete
        self.held: deque[Event] = deque()  # pipelined events waiting for the current response
        self.paused = False
        self.peer_ip = b"-"
        self.peer = "-"
        self.redirect = redirect  # the dispatcher's: SO_ORIGINAL_DST, read only if a request needs it
        self.snapshot: Snapshot = listener.dataplane.snapshot
        self.last_activity = time.monotonic()
        self.opened = self.last_activity
        self.close_after_response = False
        self.tunnel_bytes = b""
        self.requests = 0

    @property
    def original_destination(self) -> tuple[str, int] | None:
        return self.redirect.destination if self.redirect is not None else None

    @property
    def original_port(self) -> int | None:
        return self.redirect.port if self.redirect is not None else None

    def __repr__(self) -> str:
        return f"<DownstreamConnection {self.peer} {self.state.value} requests={self.requests}>"

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        listener = self.listener
        listener.on_connection_open(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0]).encode()
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.listener.http_stats.downstream_cx_rx_bytes_total += len(data)
        if self.state is DownstreamState.TUNNEL:
            stream = self.responding
            if stream is not None:
                stream.tunnel_send(data)
            return
        if self.held:
            self.held.append(Data(data))  # cannot happen while paused; kept for safety
            return
        try:
            events = self.codec.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if events:
            self._dispatch(events)

    def eof_received(self) -> bool | None:
        if self.state is DownstreamState.TUNNEL and self.responding is not None:
            self.responding.tunnel_downstream_eof()
            return True  # half-close: the other direction may still flow
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.state
        self.state = DownstreamState.CLOSED
        stream = self.responding or self.receiving
        self.responding = self.receiving = None
        if stream is not None and stream.state is not StreamState.DONE:
            self.listener.http_stats.downstream_cx_destroy_remote_active_rq += 1
            stream.on_downstream_lost()
            self.listener.on_request_done(self, stream)
        elif stream is not None and previous is DownstreamState.TUNNEL:
            stream.on_downstream_lost()
        self.listener.on_connection_closed(self)

    def pause_writing(self) -> None:
        stream = self.responding
        if stream is not None:
            stream.on_downstream_write_paused()

    def resume_writing(self) -> None:
        stream = self.responding
        if stream is not None:
            stream.on_downstream_write_resumed()

    # ---------------------------------------------------------------- request events
    def _dispatch(self, events: list[Event]) -> None:
        for index, event in enumerate(events):
            if self.state is not DownstreamState.OPEN:
                return
            if isinstance(event, RequestHead):
                if self.responding is not None or self.receiving is not None:
                    self.held.extend(events[index:])  # pipelined: answer in order
                    self.pause_reading()
                    return
                # HTTP/2 hook: `Upgrade: h2c` hands this connection to http/h2_connection.py
                if event.upgrade:
                    settings = h2c_upgrade_settings(event)
                    if settings is not None and upgrade_to_h2c(self, event, settings, events[index + 1 :]):
                        self.state = DownstreamState.CLOSED
                        return
                self._start_request(event)
            elif isinstance(event, Data):
                stream = self.receiving
                if stream is not None:
                    stream.on_request_data(event.data)
            elif isinstance(event, EndOfMessage):
                stream = self.receiving
                self.receiving = None
                if stream is not None:
                    stream.on_request_end()
            elif isinstance(event, Upgraded):
                self.tunnel_bytes += event.trailing
                self.pause_reading()  # nothing more is read until the upstream accepts or refuses

    def _start_request(self, head: RequestHead) -> None:
        listener = self.listener
        self.requests += 1
        self.snapshot = listener.dataplane.snapshot  # a request sees one snapshot from start to end
        stats = listener.http_stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_http1_total += 1
        stats.downstream_rq_active += 1
        listener.requests_active += 1
        stream = UpstreamRequest(self, head)
        self.receiving = self.responding = stream
        stream.begin()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Malformed input: 400, close. The connection's in-flight request (if any) is abandoned."""
        log.debug("downstream %s: protocol error: %s", self.peer, exc)
        self.listener.http_stats.downstream_cx_protocol_error += 1
        stream = self.responding
        if stream is not None and stream.response_started:
            self.abort(stream)
            return
        if stream is not None:
            stream.on_downstream_lost()
        self._write_local_reply(local_reply.protocol_error_reply(exc.status), close=True)
        self._close()

    # ---------------------------------------------------------------- response side (called by the stream)
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and self.state is not DownstreamState.CLOSED:
            self.listener.http_stats.downstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    def encode_response_head(self, head: ResponseHead, service_time_ms: int) -> bytes:
        stream = self.responding
        request = stream.head if stream is not None else None
        if head.status == 101:
            headers = [(n, v) for n, v in head.headers if n != b"server"]
            headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
            headers.append(_SERVER)
            return self.codec.encode_informational(101, headers)
        headers = []
        for name, value in head.headers:
            if name in HOP_BY_HOP or name == b"server":
                continue
            headers.append((name, value))
        if service_time_ms >= 0:
            headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
        headers.append(_SERVER)
        kind = head.body
        close = self._must_close(request)
        if kind is BodyKind.CHUNKED or kind is BodyKind.UNTIL_CLOSE:
            if request is not None and request.http_version == "1.0":
                kind = BodyKind.UNTIL_CLOSE
                close = True
            else:
                kind = BodyKind.CHUNKED
                headers.append((b"transfer-encoding", b"chunked"))
        if close:
            self.close_after_response = True
            headers.append(_CONNECTION_CLOSE)
        return self.codec.encode_response_head(
            ResponseHead(
                head.status, reason_phrase(head.status), headers, "1.1", not close, kind, head.content_length
            )
        )

    def encode_trailers(self, trailers: Headers) -> bytes:
        # HTTP/2 hook: trailers from an HTTP/2 upstream are not carried on HTTP/1.1 (as Envoy without
        # enable_trailers); the body just ends
        return self.codec.encode_end()

    def _must_close(self, request: RequestHead | None) -> bool:
        if request is None or not request.keep_alive or request.upgrade:
            return True
        return self.close_after_response or self.listener.dataplane.draining

    def send_local_reply(self, stream: UpstreamRequest, reply: LocalReply) -> None:
        if self.receiving is stream and stream.head.body is not BodyKind.NONE:
            self.close_after_response = True  # the rest of the request body is not read
        self._write_local_reply(
            reply, close=self._must_close(stream.head), head_only=stream.head.method == "HEAD"
        )
        self.stream_done(stream)

    def _write_local_reply(self, reply: LocalReply, close: bool, head_only: bool = False) -> None:
        body = reply.body
        headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"text/plain"),
            (b"date", HTTP_DATE.now()),
            _SERVER,
        ]
        if close:
            self.close_after_response = True
            headers.append(_CONNECTION_CLOSE)
        codec = self.codec
        try:
            out = (
                codec.encode_response_head(
                    ResponseHead(
                        reply.status,
                        reason_phrase(reply.status),
                        headers,
                        "1.1",
                        not close,
                        BodyKind.LENGTH,
                        len(body),
                    )
                )
                + (b"" if head_only else codec.encode_data(body))
                + codec.encode_end()
            )
        except ProtocolError:
            self._close()
            return
        self.write(out)

    def stream_done(self, stream: UpstreamRequest) -> None:
        """The response to `stream` is complete (or abandoned): next request, or close."""
        if self.responding is not stream:
            return
        self.responding = None
        if self.receiving is stream and stream.request_complete:
            self.receiving = None
        self.listener.on_request_done(self, stream)
        if self.close_after_response or self.state is not DownstreamState.OPEN:
            self._close()
            return
        if self.receiving is not None:
            return  # the upstream answered early; the rest of the request body is still being consumed
        if self.held:
            # Requests parsed with the one just answered go first; the codec's own (and an error it found
            # after them: garbage after a valid request gets its 400 only now) come once they are answered.
            held = list(self.held)
            self.held.clear()
            asyncio.get_running_loop().call_soon(self._resume_held, held)
            return
        try:
            events = self.codec.next_cycle()
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if events:
            asyncio.get_running_loop().call_soon(self._resume_held, events)
        else:
            self.resume_reading()

    def _resume_held(self, events: list[Event]) -> None:
        if self.state is not DownstreamState.OPEN:
            return
        self._dispatch(events)
        if self.responding is None and not self.held:
            self.resume_reading()

    def abort(self, stream: UpstreamRequest) -> None:
        """Reset the connection mid-response (the response cannot be completed)."""
        if self.responding is stream:
            self.responding = None
            self.listener.on_request_done(self, stream)
        self.receiving = None
        if self.transport is not None:
            self.transport.abort()

    def start_tunnel(self, stream: UpstreamRequest) -> None:
        self.state = DownstreamState.TUNNEL
        self.listener.http_stats.downstream_cx_upgrades_total += 1
        self.receiving = None
        pending = self.tunnel_bytes + self.codec.upgrade_trailing()
        self.tunnel_bytes = b""
        if pending:
            stream.tunnel_send(pending)
        self.resume_reading()

    def tunnel_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def end_tunnel(self) -> None:
        stream = self.responding
        self.responding = None
        if stream is not None:
            self.listener.on_request_done(self, stream)
        self._close()

    # ---------------------------------------------------------------- flow control and lifecycle
    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None and self.state is not DownstreamState.CLOSED:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and self.state is not DownstreamState.CLOSED:
            self.paused = False
            self.transport.resume_reading()

    def active_requests(self) -> list[UpstreamRequest]:
        return [self.responding] if self.responding is not None else []

    def idle(self) -> bool:
        return self.responding is None and self.receiving is None and self.state is DownstreamState.OPEN

    def _close(self) -> None:
        if self.state is DownstreamState.OPEN or self.state is DownstreamState.TUNNEL:
            self.state = DownstreamState.CLOSING
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> bool:
        if self.idle():
            self._close()
            return True
        return False
