"""Scripted upstream servers for the component tier, at the far end of `MemoryConnector` connections.

`H1App` serves HTTP/1.1 with h11 (the reference implementation, not the proxy's codecs), `H2App` serves h2c
with the h2 library. Each app answers the requests of all its connections from one script (one answer per
request, the last one repeating) and records what it received, so a test can say "503 twice, then 200",
"reset the first connection", "hold the response until I say so" and then check what reached the upstream.

Answers:
- `Respond`: a complete response (optionally chunked, or sent `early` as soon as the request head arrives).
- `Hold`: answer nothing yet; the test drives the connection (`send_head`, `send_data`, `end`, `reset`).
- `Reset`: abort the connection on the request (the proxy sees a reset before any response byte).
- `Close`: close the connection cleanly without a response.
- `ResetMidResponse`: send the head and part of the declared body, then abort.
- `Switch`: accept an Upgrade with 101; the connection is then a raw tunnel the test drives.
- HTTP/2 only: `RefuseStream` (RST_STREAM REFUSED_STREAM), `GoAway` (GOAWAY naming the stream before it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import h11
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, StreamEnded, StreamReset, WindowUpdated
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from .memory import Peer

HeaderPairs = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Respond:
    status: int = 200
    body: bytes = b""
    headers: HeaderPairs = ()
    chunked: bool = False
    early: bool = False  # answer when the request head arrives, before its body
    close: bool = False  # `Connection: close`, then close
    trailers: HeaderPairs = ()  # HTTP/2 only: sent after the body (gRPC's grpc-status)


@dataclass(frozen=True, slots=True)
class Hold:
    """No answer yet: the test drives this exchange."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Abort the connection when the request head arrives."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection cleanly when the request is complete, without a response."""


@dataclass(frozen=True, slots=True)
class ResetMidResponse:
    status: int = 200
    declared: int = 100
    sent: bytes = b"partial"


@dataclass(frozen=True, slots=True)
class Switch:
    """101 Switching Protocols; the connection becomes a raw tunnel."""


@dataclass(frozen=True, slots=True)
class RefuseStream:
    """HTTP/2: RST_STREAM REFUSED_STREAM (the request was not processed)."""


@dataclass(frozen=True, slots=True)
class GoAway:
    """HTTP/2: GOAWAY whose last stream id is the one before this stream (this one was not processed)."""


Answer = Respond | Hold | Reset | Close | ResetMidResponse | Switch | RefuseStream | GoAway


@dataclass(frozen=True, slots=True)
class Received:
    """A request as the upstream saw it; `connection` is the index of the upstream connection."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


class Script:
    """The answers in order (the last one repeating); a request for one of `paths` gets that path's answer
    instead, every time (a health-check path, say)."""

    __slots__ = ("answers", "paths")

    def __init__(self, answers: Sequence[Answer], paths: Mapping[str, Answer] | None = None) -> None:
        self.answers = list(answers) or [Respond()]
        self.paths = dict(paths or {})

    def next(self, target: str = "") -> Answer:
        fixed = self.paths.get(target)
        if fixed is not None:
            return fixed
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


# ---------------------------------------------------------------------------------------------- HTTP/1.1


class H1App:
    """One HTTP/1.1 upstream host: its script, its connections, what it received."""

    def __init__(
        self, *answers: Answer, name: str = "app", paths: Mapping[str, Answer] | None = None
    ) -> None:
        self.name = name
        self.script = Script(answers, paths)
        self.requests: list[Received] = []
        self.connections: list[H1Upstream] = []

    def __repr__(self) -> str:
        return f"<H1App {self.name} requests={len(self.requests)} connections={len(self.connections)}>"

    def server(self) -> H1Upstream:
        connection = H1Upstream(self, len(self.connections))
        self.connections.append(connection)
        return connection

    @property
    def paths(self) -> list[str]:
        return [r.target for r in self.requests]

    def held(self) -> list[H1Upstream]:
        """Connections whose current exchange waits for the test."""
        return [c for c in self.connections if c.holding]


class H1Upstream(Peer):
    def __init__(self, app: H1App, index: int) -> None:
        super().__init__()
        self.app = app
        self.index = index
        self.h11 = h11.Connection(h11.SERVER)
        self.head: h11.Request | None = None
        self.body = bytearray()
        self.answer: Answer | None = None
        self.answered = False
        self.holding = False
        self.tunnel = False
        self.tunnel_bytes = bytearray()

    def __repr__(self) -> str:
        return f"<H1Upstream {self.app.name}#{self.index} holding={self.holding} lost={self.lost}>"

    # ---------------------------------------------------------------- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.tunnel_bytes += data
            return
        self.h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.tunnel:
            return True  # half-close: this side may still send
        self.h11.receive_data(b"")
        return None

    # ---------------------------------------------------------------- requests
    def _pump(self) -> None:
        while not self.tunnel and self.transport is not None and not self.transport.is_closing():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                self.reset()
                return
            if event is h11.PAUSED:
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                    continue
                return
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                self._on_head(event)
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._on_end()

    def _on_head(self, head: h11.Request) -> None:
        self.head = head
        self.body = bytearray()
        self.answered = False
        answer = self.answer = self.app.script.next(head.target.decode())
        if isinstance(answer, Reset):
            self._record()
            self.reset()
        elif isinstance(answer, Respond) and answer.early:
            self.respond(answer)

    def _on_end(self) -> None:
        self._record()
        answer = self.answer
        if self.answered or answer is None:
            self._next_cycle()
            return
        if isinstance(answer, Respond):
            self.respond(answer)
        elif isinstance(answer, Hold):
            self.holding = True
        elif isinstance(answer, Close):
            self.close()
        elif isinstance(answer, ResetMidResponse):
            self.send_head(answer.status, content_length=answer.declared)
            self.send_data(answer.sent)
            self.reset()
        elif isinstance(answer, Switch):
            self.switch()

    def _record(self) -> None:
        head = self.head
        assert head is not None
        self.app.requests.append(
            Received(
                head.method.decode(),
                head.target.decode(),
                _headers(list(head.headers)),
                bytes(self.body),
                self.index,
            )
        )

    # ---------------------------------------------------------------- answering (also driven by tests)
    def respond(self, answer: Respond) -> None:
        headers = list(answer.headers)
        if answer.close:
            headers.append(("connection", "close"))
        if answer.chunked:
            self.send_head(answer.status, headers, chunked=True)
        else:
            self.send_head(answer.status, headers, content_length=len(answer.body))
        self.send_data(answer.body)
        self.end()
        if answer.close:
            self.close()

    def send_head(
        self,
        status: int,
        headers: HeaderPairs = (),
        *,
        content_length: int | None = None,
        chunked: bool = False,
    ) -> None:
        self.answered = True
        pairs = [(n.encode(), v.encode()) for n, v in headers]
        if chunked:
            pairs.append((b"transfer-encoding", b"chunked"))
        elif content_length is not None:
            pairs.append((b"content-length", b"%d" % content_length))
        self._write(self.h11.send(h11.Response(status_code=status, headers=pairs)))

    def send_data(self, data: bytes) -> None:
        if data:
            self._write(self.h11.send(h11.Data(data=data)))

    def end(self) -> None:
        self._write(self.h11.send(h11.EndOfMessage()))
        self.holding = False
        self._next_cycle()

    def switch(self) -> None:
        """Accept the Upgrade: 101, then raw bytes both ways."""
        self.answered = True
        self._write(
            self.h11.send(
                h11.InformationalResponse(
                    status_code=101, headers=[("upgrade", "websocket"), ("connection", "upgrade")]
                )
            )
        )
        self.tunnel = True
        trailing, _ = self.h11.trailing_data
        self.tunnel_bytes += trailing

    def reset(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _next_cycle(self) -> None:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.head = None
            self.answer = None
            self._pump()
        elif self.h11.our_state is h11.MUST_CLOSE:
            self.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and data:
            self.transport.write(data)


# ------------------------------------------------------------------------------------------------ HTTP/2


@dataclass(slots=True)
class _H2Incoming:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    answer: Answer | None = None


class H2App:
    """One h2c upstream host (prior knowledge), with SETTINGS_MAX_CONCURRENT_STREAMS = `max_streams`."""

    def __init__(
        self,
        *answers: Answer,
        max_streams: int = 100,
        name: str = "h2app",
        paths: Mapping[str, Answer] | None = None,
    ) -> None:
        self.name = name
        self.script = Script(answers, paths)
        self.max_streams = max_streams
        self.requests: list[Received] = []
        self.connections: list[H2Upstream] = []

    def __repr__(self) -> str:
        return f"<H2App {self.name} requests={len(self.requests)} connections={len(self.connections)}>"

    def server(self) -> H2Upstream:
        connection = H2Upstream(self, len(self.connections))
        self.connections.append(connection)
        return connection

    @property
    def paths(self) -> list[str]:
        return [r.target for r in self.requests]


class H2Upstream(asyncio.Protocol):
    def __init__(self, app: H2App, index: int) -> None:
        self.app = app
        self.index = index
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = Settings(
            client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: app.max_streams}
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _H2Incoming] = {}
        self.held: list[int] = []  # stream ids waiting for the test
        self.peak_streams = 0  # most streams open at once
        self.resets: list[tuple[int, int]] = []  # RST_STREAMs received (stream id, error code)
        self.lost = False

    def __repr__(self) -> str:
        return f"<H2Upstream {self.app.name}#{self.index} open={len(self.streams)} held={self.held}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, RequestReceived):
                self._on_request(event.stream_id, _headers(list(event.headers)))
            elif isinstance(event, DataReceived):
                incoming = self.streams.get(event.stream_id)
                if incoming is not None:
                    incoming.body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, StreamReset):
                self.resets.append((event.stream_id, int(event.error_code or 0)))
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                pass
        self.flush()

    def _on_request(self, sid: int, headers: dict[str, str]) -> None:
        incoming = self.streams[sid] = _H2Incoming(headers, answer=self.app.script.next(headers[":path"]))
        self.peak_streams = max(self.peak_streams, len(self.streams))
        if isinstance(incoming.answer, RefuseStream):
            del self.streams[sid]
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        elif isinstance(incoming.answer, GoAway):
            # A graceful GOAWAY (RFC 9113 §6.8): streams up to the last id still complete. Written as a raw
            # frame, since the h2 library's close_connection() would stop this side from answering them.
            del self.streams[sid]
            frame = GoAwayFrame(0)
            frame.last_stream_id = sid - 2 if sid > 2 else 0
            frame.error_code = ErrorCodes.NO_ERROR
            self.flush()
            self._write(frame.serialize())

    def _on_end(self, sid: int) -> None:
        incoming = self.streams.get(sid)
        if incoming is None:
            return
        headers = incoming.headers
        self.app.requests.append(
            Received(headers[":method"], headers[":path"], headers, bytes(incoming.body), self.index)
        )
        answer = incoming.answer
        if isinstance(answer, Respond):
            self.respond(sid, answer)
        elif isinstance(answer, Hold):
            self.held.append(sid)

    def respond(self, sid: int, answer: Respond) -> None:
        headers = [(b":status", b"%d" % answer.status)]
        headers += [(n.encode(), v.encode()) for n, v in answer.headers]
        if not answer.trailers:
            headers.append((b"content-length", b"%d" % len(answer.body)))
        last = not answer.trailers
        self.h2.send_headers(sid, headers, end_stream=last and not answer.body)
        if answer.body:
            self.h2.send_data(sid, answer.body, end_stream=last)
        if answer.trailers:
            self.h2.send_headers(sid, [(n.encode(), v.encode()) for n, v in answer.trailers], end_stream=True)
        self.streams.pop(sid, None)
        if sid in self.held:
            self.held.remove(sid)
        self.flush()

    def flush(self) -> None:
        self._write(self.h2.data_to_send())

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


# ---------------------------------------------------------------------------------------------------- TCP


class TcpApp:
    """An opaque TCP upstream: each connection is a `Peer` that records what it received; the test answers."""

    def __init__(self, name: str = "tcp") -> None:
        self.name = name
        self.connections: list[Peer] = []

    def __repr__(self) -> str:
        return f"<TcpApp {self.name} connections={len(self.connections)}>"

    def server(self) -> Peer:
        connection = Peer()
        self.connections.append(connection)
        return connection
