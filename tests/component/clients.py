"""Downstream clients for the component tier: what an application sends the proxy, over a `MemoryTransport`.

`H1Client` writes raw bytes (so the proxy's own parsers see exactly what a test wrote) and reads responses
back with h11, the reference parser. `H2Client` is the h2 library's client side (prior knowledge h2c).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import h11
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import Frame, RstStreamFrame

from .memory import Peer


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    informational: tuple[int, ...] = ()  # 1xx statuses before it

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def parse_responses(data: bytes, methods: Sequence[str] = ()) -> list[Response]:
    """The complete HTTP/1.1 responses in `data`, in order (`methods`: of the requests, default GET)."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    responses: list[Response] = []
    for index in range(1000):
        method = methods[index] if index < len(methods) else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("host", "proxy")]))
        conn.send(h11.EndOfMessage())
        informational: list[int] = []
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    headers.setdefault(name.decode(), value.decode("latin-1"))
                responses.append(Response(head.status_code, headers, bytes(body), tuple(informational)))
                break
            else:
                return responses  # NEED_DATA, PAUSED or closed: no more complete responses
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return responses
        conn.start_next_cycle()
    return responses


class H1Client(Peer):
    """Raw bytes out, responses parsed with h11 on the way in."""

    def get(self, path: str = "/", host: str = "backend.apps.local", headers: str = "") -> None:
        self.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())

    def responses(self, methods: Sequence[str] = ()) -> list[Response]:
        return parse_responses(bytes(self.received), methods)

    def response(self) -> Response:
        """The one complete response received (fails if there is not exactly one)."""
        responses = self.responses()
        assert len(responses) == 1, (responses, bytes(self.received[:300]))
        return responses[0]


@dataclass(slots=True)
class H2Stream:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code


class H2Client(asyncio.Protocol):
    """h2c with prior knowledge. `window`: the stream window it grants; `auto_ack`: reopen windows as DATA
    is read (off: the test plays a slow reader and calls `ack`)."""

    def __init__(self, window: int | None = None) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            self.h2.local_settings.update({SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.h2.local_settings.acknowledge()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.auto_ack = True
        self.unacked: dict[int, int] = {}
        self.goaway: int | None = None  # last stream id of a GOAWAY received
        self.protocol_errors: list[ProtocolError] = []
        self.raw_resets: dict[int, int] = {}  # RST_STREAM frames received: stream id -> error code
        self.inbound = bytearray()
        self.lost = False

    def __repr__(self) -> str:
        return f"<H2Client streams={len(self.streams)} goaway={self.goaway} lost={self.lost}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        # Frame by frame: the h2 library rejects every frame after a GOAWAY it received (it closes its state
        # machine, python-hyper/h2#1181), and an error in a batch would lose the events before it. RST_STREAMs
        # are also noted from the raw frames, so they are seen even after a GOAWAY.
        self.inbound += data
        while len(self.inbound) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.inbound[:9]))
            if len(self.inbound) < 9 + length:
                return
            raw = bytes(self.inbound[: 9 + length])
            del self.inbound[: 9 + length]
            if isinstance(frame, RstStreamFrame):
                frame.parse_body(memoryview(raw[9:]))
                self.raw_resets[frame.stream_id] = frame.error_code
            try:
                events = self.h2.receive_data(raw)
            except ProtocolError as exc:
                self.protocol_errors.append(exc)
                continue
            self._on_events(events)
        self.flush()

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                stream = self.streams[event.stream_id]
                for name, value in event.headers:
                    if name == b":status":
                        stream.status = int(value)
                    else:
                        stream.headers.setdefault(name.decode(), value.decode("latin-1"))
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id].body += event.data
                if self.auto_ack:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    sid = event.stream_id
                    self.unacked[sid] = self.unacked.get(sid, 0) + event.flow_controlled_length
            elif isinstance(event, TrailersReceived):
                self.streams[event.stream_id].trailers = {
                    n.decode(): v.decode("latin-1") for n, v in event.headers
                }
            elif isinstance(event, StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, StreamReset):
                reset = self.streams.get(event.stream_id)
                if reset is not None:
                    reset.reset = int(event.error_code or 0)
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event.last_stream_id

    def request(
        self,
        path: str = "/",
        authority: str = "backend.apps.local",
        method: str = "GET",
        body: bytes | None = None,
        end: bool = True,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *extra,
        ]
        self.streams[sid] = H2Stream()
        self.h2.send_headers(sid, headers, end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def send_data(self, sid: int, data: bytes, end: bool = False) -> None:
        self.h2.send_data(sid, data, end_stream=end)
        self.flush()

    def ack(self, sid: int) -> None:
        """Reopen the window for what was read of `sid` (a slow reader catching up)."""
        length = self.unacked.pop(sid, 0)
        if length:
            self.h2.acknowledge_received_data(length, sid)
            self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
