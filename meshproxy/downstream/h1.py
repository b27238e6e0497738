"""The HTTP/1.1 connection manager: one codec per client connection, one `RouterRequest` per request.

Requests on a connection are answered in order. A pipelined request that arrives while a response is still
being sent is held (with reading paused) until that response is complete. The router's sends queue encoded
bytes and `flush` writes them with one `transport.write` (hot-path notes: each extra write is a syscall).
An `Upgrade: h2c` request is handed to the listener layer (`ConnectionContext.h2c_upgrade`), which switches
the connection to the HTTP/2 manager; this module never imports that one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import cast

from meshproxy.codec.h1 import ProtocolError, ServerCodec
from meshproxy.codec.h1_wire import reason_phrase
from meshproxy.codec.h2_messages import h2c_upgrade_settings
from meshproxy.codec.headers import HOP_BY_HOP, HTTP_DATE
from meshproxy.core import outcomes
from meshproxy.core.events import (
    BodyKind,
    Data,
    EndOfMessage,
    Event,
    Headers,
    RequestHead,
    ResponseHead,
    Upgraded,
)
from meshproxy.core.outcomes import LocalReply
from meshproxy.downstream.context import ConnectionContext
from meshproxy.net.accepted import AcceptedConnection
from meshproxy.net.delayed_close import DelayedClose
from meshproxy.net.original_dst import Redirect
from meshproxy.router.context import Downstream, TunnelEnd
from meshproxy.router.request import RequestState, RouterRequest

log = logging.getLogger("meshproxy.http")


class DownstreamState(enum.Enum):
    OPEN = "open"
    TUNNEL = "tunnel"
    CLOSING = "closing"  # the last reply is written, the connection half-closed: what arrives is dropped
    CLOSED = "closed"


_SERVER = (b"server", b"envoy")
_CONNECTION_CLOSE = (b"connection", b"close")


class Http1ConnectionManager(AcceptedConnection, asyncio.Protocol, Downstream):
    """Implements the router's `Downstream` for the request being answered, and `ClientConnection`."""

    __slots__ = (
        "client_eof",
        "close_after_response",
        "codec",
        "ctx",
        "head_started",
        "held",
        "last_activity",
        "opened",
        "out",
        "paused",
        "receiving",
        "request_start",
        "requests",
        "responding",
        "state",
        "status_sent",
        "transport",
        "tunnel",
        "tunnel_bytes",
    )  # fmt: skip

    def __init__(self, ctx: ConnectionContext, redirect: Redirect | None = None) -> None:
        super().__init__(redirect)  # SO_ORIGINAL_DST, read only if a request needs it
        self.ctx = ctx
        self.codec: ServerCodec = ctx.new_server_codec()
        self.transport: asyncio.Transport | None = None
        self.state = DownstreamState.OPEN
        self.receiving: RouterRequest | None = None  # request whose body is still arriving
        self.responding: RouterRequest | None = None  # request whose response is not complete
        # pipelined events waiting for the current response (a list: an empty deque costs 600 bytes, and an
        # idle keep-alive connection holds one of these managers)
        self.held: list[Event] = []
        self.out: list[bytes] = []  # parts of the next write (`flush`)
        self.paused = False
        self.last_activity = self.opened = ctx.clock.now()
        self.head_started = 0.0  # when the first byte of a request head still incomplete came (0: none)
        self.close_after_response = False
        self.client_eof = False  # the client half-closed a tunnel: it sends nothing more
        self.tunnel: TunnelEnd | None = None
        self.tunnel_bytes = b""
        self.requests = 0
        self.request_start = 0.0
        self.status_sent = 0

    def __repr__(self) -> str:
        return f"<Http1ConnectionManager {self.peer} {self.state.value} requests={self.requests}>"

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.ctx.connection_opened(self, http2=False)
        self.note_peer(transport)

    def data_received(self, data: bytes) -> None:
        self.ctx.http_stats.downstream_cx_rx_bytes_total += len(data)
        if self.closing is not None:
            self.closing.discard(len(data))
            return
        self.last_activity = now = self.ctx.clock.now()
        if self.receiving is None and not self.head_started:
            self.head_started = now  # the request-headers timeout runs until its head is parsed
        if self.state is DownstreamState.TUNNEL:
            if self.tunnel is not None:
                self.tunnel.from_client(data)
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
            self._dispatch(events, now)

    def eof_received(self) -> bool | None:
        if self.state is DownstreamState.TUNNEL and self.tunnel is not None:
            self.client_eof = True
            self.tunnel.client_eof()
            return True  # half-close: the other direction may still flow
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self.state
        self.state = DownstreamState.CLOSED
        self.transport = None
        if self.closing is not None:
            self.closing.cancel()
        request = self.responding or self.receiving
        if request is not None and request.state is not RequestState.DONE:
            self.ctx.http_stats.downstream_cx_destroy_remote_active_rq += 1
            request.on_downstream_lost()
        elif request is not None and previous is DownstreamState.TUNNEL:
            request.on_downstream_lost()
        self.ctx.connection_closed(self)

    def pause_writing(self) -> None:
        if self.responding is not None:
            self.responding.on_downstream_write_paused()

    def resume_writing(self) -> None:
        if self.responding is not None:
            self.responding.on_downstream_write_resumed()

    # ---------------------------------------------------------------- request events
    def _dispatch(self, events: list[Event], now: float) -> None:
        """`now`: when the bytes that made `events` were read (the time of a request that starts here)."""
        for index, event in enumerate(events):
            if self.state is not DownstreamState.OPEN:
                return
            if isinstance(event, RequestHead):
                self.head_started = 0.0
                if self.responding is not None or self.receiving is not None:
                    self.held.extend(events[index:])  # pipelined: answer in order
                    self.pause_reading()
                    return
                if event.upgrade:
                    settings = h2c_upgrade_settings(event)
                    if settings is not None and self.ctx.h2c_upgrade(
                        self, event, settings, events[index + 1 :]
                    ):
                        self.state = DownstreamState.CLOSED  # the HTTP/2 manager owns the transport now
                        return
                self._start_request(event, now)
            elif isinstance(event, Data):
                if self.receiving is not None:
                    self.receiving.on_request_data(event.data)
            elif isinstance(event, EndOfMessage):
                request, self.receiving = self.receiving, None
                if request is not None:
                    request.on_request_end()
                    if self.responding is None and index == len(events) - 1:
                        # answered before the request ended (a local reply at the head, an early response):
                        # the exchange ends here, so the next request may be parsed (h11 needs a new cycle)
                        self._next_exchange()
            elif isinstance(event, Upgraded):
                self.tunnel_bytes += event.trailing
                self.pause_reading()  # nothing more is read until the upstream accepts or refuses

    def _start_request(self, head: RequestHead, now: float) -> None:
        ctx = self.ctx
        self.requests += 1
        self.status_sent = 0
        self.request_start = now
        ctx.request_started(http2=False)
        request = RouterRequest(ctx, self, head, now)
        self.receiving = self.responding = request
        request.begin()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Malformed input: 400 and close; a response already under way is cut off instead. The in-flight
        request, if any, is abandoned."""
        log.debug("downstream %s: protocol error: %s", self.peer, exc)
        self.ctx.http_stats.downstream_cx_protocol_error += 1
        request = self.responding or self.receiving
        if request is not None and request.response_started:
            self.state = DownstreamState.CLOSING
            request.on_downstream_lost()
            self._abort_transport()
            return
        self._write_local_reply(outcomes.protocol_error_reply(exc.status), close=True)
        self.state = DownstreamState.CLOSING
        if request is not None:
            request.on_downstream_lost()
        self._close()

    # ---------------------------------------------------------------- Downstream (called by the router)
    def send_informational(self, status: int, headers: Headers) -> None:
        self.out.append(self.codec.encode_informational(status, headers))

    def send_head(self, head: ResponseHead, service_time_ms: int) -> None:
        self.status_sent = head.status
        request = self.responding
        codec = self.codec
        if head.status == 101:
            headers = [(n, v) for n, v in head.headers if n != b"server"]
            headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
            headers.append(_SERVER)
            self.out.append(codec.encode_informational(101, headers))
            return
        headers = []
        for name, value in head.headers:
            if name not in HOP_BY_HOP and name != b"server":
                headers.append((name, value))
        if service_time_ms >= 0:
            headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
        headers.append(_SERVER)
        kind = head.body
        close = self._must_close(request.head if request is not None else None)
        if kind is BodyKind.CHUNKED or kind is BodyKind.UNTIL_CLOSE:
            if request is not None and request.head.http_version == "1.0":
                kind = BodyKind.UNTIL_CLOSE
                close = True
            else:
                kind = BodyKind.CHUNKED
                headers.append((b"transfer-encoding", b"chunked"))
        if close:
            self.close_after_response = True
            headers.append(_CONNECTION_CLOSE)
        response = ResponseHead(
            head.status,
            head.reason or reason_phrase(head.status),
            headers,
            "1.1",
            not close,
            kind,
            head.content_length,
        )
        self.out.append(codec.encode_response_head(response))

    def send_data(self, data: bytes) -> None:
        if self.state is DownstreamState.TUNNEL:
            self.out.append(data)
        elif data:
            self.out.append(self.codec.encode_data(data))

    def send_end(self, trailers: Headers | None) -> None:
        # trailers from an HTTP/2 upstream are not carried on HTTP/1.1 (as Envoy without enable_trailers)
        end = self.codec.encode_end()
        if end:  # b"" for a Content-Length body: nothing to write
            self.out.append(end)

    def flush(self) -> None:
        """Everything queued for the client in one `transport.write` (hot-path notes: uvloop sends at once
        and does not merge successive writes, so each extra write is an extra syscall)."""
        out = self.out
        if out:
            data = b"".join(out)  # a single part is returned as it is, not copied
            out.clear()
            transport = self.transport
            if transport is not None and self.closing is None and self.state is not DownstreamState.CLOSED:
                transport.write(data)
                self.ctx.http_stats.downstream_cx_tx_bytes_total += len(data)

    def send_local_reply(self, reply: LocalReply) -> None:
        request = self.responding
        head = request.head if request is not None else None
        if (
            request is not None
            and self.receiving is request
            and head is not None
            and head.body is not BodyKind.NONE
        ):
            self.close_after_response = True  # the rest of the request body is not read
        self.status_sent = reply.status
        self._write_local_reply(
            reply, close=self._must_close(head), head_only=head is not None and head.method == "HEAD"
        )
        self.request_done()

    def request_done(self) -> None:
        """The response is complete (or abandoned): next request, or close."""
        request = self.responding
        if request is None:
            return
        if self.out:
            self.flush()
        self.responding = None
        if self.receiving is request and request.request_complete:
            self.receiving = None
        self.ctx.request_finished(self.status_sent, self.request_start)
        if self.close_after_response or self.state is not DownstreamState.OPEN:
            # A request read whole with nothing behind it (the usual `Connection: close`) closes at once: no
            # byte is left unread to turn the close into a reset, and a client told to close sends nothing
            # more (nginx lingers only otherwise too). The delayed close costs a timer, a shutdown and a
            # wake-up per connection: +10% CPU per request on new-conn-64k.
            whole = self.state is DownstreamState.OPEN and self.receiving is None and not self.held
            self._close(linger=not whole)
            return
        if self.receiving is not None:
            return  # the upstream answered early; the rest of the request body is still being consumed
        self._next_exchange()

    def _next_exchange(self) -> None:
        """Both directions of the exchange are over: go on with the next request, held or still to come."""
        if self.held:
            # Requests parsed with the one just answered go first; the codec's own (and an error it found
            # after them: garbage after a valid request gets its 400 only now) come once they are answered.
            held, self.held = self.held, []
            self.ctx.clock.call_soon(lambda: self._resume_held(held))
            return
        try:
            events = self.codec.next_cycle()
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if events:
            self.ctx.clock.call_soon(lambda: self._resume_held(events))
        elif self.paused:
            self.resume_reading()

    def abort(self) -> None:
        """Reset the connection mid-response (the response cannot be completed)."""
        if self.responding is not None:
            self.responding = None
            self.ctx.request_finished(self.status_sent, self.request_start)
        self.receiving = None
        self._abort_transport()

    def start_tunnel(self, tunnel: TunnelEnd) -> None:
        self.tunnel = tunnel
        self.state = DownstreamState.TUNNEL
        self.ctx.http_stats.downstream_cx_upgrades_total += 1
        self.receiving = None
        pending = self.tunnel_bytes + self.codec.upgrade_trailing()
        self.tunnel_bytes = b""
        if pending:
            tunnel.from_client(pending)
        self.resume_reading()

    def tunnel_eof(self) -> None:
        transport = self.transport
        if (
            transport is not None
            and self.closing is None
            and not transport.is_closing()
            and transport.can_write_eof()
        ):
            transport.write_eof()

    def end_tunnel(self) -> None:
        self.flush()
        if self.responding is not None:
            self.responding = None
            self.ctx.request_finished(self.status_sent, self.request_start)
        self._close()

    def pause_reading(self) -> None:
        if (
            not self.paused
            and self.transport is not None
            and self.closing is None
            and self.state is not DownstreamState.CLOSED
        ):
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and self.state is not DownstreamState.CLOSED:
            self.paused = False
            self.transport.resume_reading()

    def upgrade_trailing(self) -> bytes:
        """Bytes the codec holds that arrived after an Upgrade request (they belong to the new protocol)."""
        return self.codec.upgrade_trailing()

    # ---------------------------------------------------------------- internals
    def _must_close(self, request: RequestHead | None) -> bool:
        if request is None or not request.keep_alive or request.upgrade:
            return True
        return self.close_after_response or self.ctx.draining

    def _resume_held(self, events: list[Event]) -> None:
        if self.state is not DownstreamState.OPEN:
            return
        self._dispatch(events, self.ctx.clock.now())
        if self.responding is None and not self.held:
            self.resume_reading()

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
        response = ResponseHead(
            reply.status, reason_phrase(reply.status), headers, "1.1", not close, BodyKind.LENGTH, len(body)
        )
        try:
            self.out.append(codec.encode_response_head(response))
            if not head_only:
                self.out.append(codec.encode_data(body))
            self.out.append(codec.encode_end())
        except ProtocolError:
            self.out.clear()
            self._close()
            return
        self.flush()

    # ---------------------------------------------------------------- ClientConnection and lifecycle
    def active_requests(self) -> list[RouterRequest]:
        return [self.responding] if self.responding is not None else []

    def idle(self) -> bool:
        return self.responding is None and self.receiving is None and self.state is DownstreamState.OPEN

    def close_if_idle(self) -> bool:
        if self.idle():
            self._close()
            return True
        return False

    def on_headers_timeout(self) -> bool:
        """Envoy's request_headers_timeout: a head still incomplete gets 408 and the connection closes. The
        head's size is bounded meanwhile by the codec's limits (431 past them). A head pipelined behind a
        response still being sent waits for it."""
        if not self.head_started or self.state is not DownstreamState.OPEN or self.responding is not None:
            return False
        self.head_started = 0.0
        self.ctx.http_stats.downstream_rq_header_timeout += 1
        self._write_local_reply(outcomes.REQUEST_HEADER_TIMEOUT, close=True)
        self.state = DownstreamState.CLOSING
        self._close()
        return True

    def _close(self, linger: bool = True) -> None:
        """Close after what is written (net/delayed_close.py: the client reads it, then a FIN); at once when
        nothing is left to read (`linger` False, or the client's EOF)."""
        if self.state is DownstreamState.OPEN or self.state is DownstreamState.TUNNEL:
            self.state = DownstreamState.CLOSING
        transport = self.transport
        if transport is None or self.closing is not None or self.state is DownstreamState.CLOSED:
            return
        if self.client_eof or not linger:
            transport.close()  # nothing more can arrive: no bytes left unread to turn the close into a reset
        else:
            self.closing = DelayedClose(transport, self.ctx.clock)

    def _abort_transport(self) -> None:
        self.out.clear()
        if self.transport is not None:
            self.transport.abort()
