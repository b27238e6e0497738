"""A raw HTTP/2 client for conformance and hostile-input tests: frames go out byte-exact (built here with one
`struct.pack`, so malformed ones can be sent too), replies are parsed with hyperframe and checked with the
verdicts RFC 9113 sections demand (h2spec's `VerifyConnectionError` / `VerifyStreamError`, but stricter:
the error code must come in a GOAWAY or RST_STREAM frame; a bare close does not pass).

Every read is bounded by `timeout` (1 s by default), so a case that gets no answer fails fast.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings identifiers (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5
MAX_HEADER_LIST_SIZE = 6

Headers = Sequence[tuple[bytes, bytes]]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """One frame, byte-exact; `length` overrides the length field (to lie about it)."""
    size = len(payload) if length is None else length
    return struct.pack(">HBBBL", size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def priority(stream_id: int, depends_on: int = 0, weight: int = 255, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">LB", depends_on | (exclusive << 31), weight))


def ping(data: bytes = b"\0" * 8, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug)


def data(stream_id: int, payload: bytes, *, end_stream: bool = False, pad: int | None = None) -> bytes:
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, stream_id, bytes([pad]) + payload + b"\0" * pad)
    return frame(DATA, flags, stream_id, payload)


REQUEST: list[tuple[bytes, bytes]] = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]


def request(authority: bytes, method: bytes = b"GET", path: bytes = b"/") -> list[tuple[bytes, bytes]]:
    """h2spec's CommonHeaders: :method, :scheme, :path, :authority."""
    return [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", authority)]


@dataclass
class Response:
    stream_id: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])


class H2Wire:
    """One raw HTTP/2 (h2c, prior knowledge) connection to a proxy listener."""

    def __init__(self, port: int, *, timeout: float = 1.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.encoder = Encoder()  # the client's HPACK context (h2spec: conn.EncodeHeaders)
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.buffer = b""
        self.closed = False
        self.peer_settings: dict[int, int] = {}
        self.header_fragments: list[bytes] = []
        self.seen: list[Frame] = []  # every frame read, for failure messages

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sending
    def send(self, *chunks: bytes) -> None:
        try:
            self.sock.sendall(b"".join(chunks))
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def block(self, headers: Iterable[tuple[bytes, bytes]], *, huffman: bool = True) -> bytes:
        return self.encoder.encode(list(headers), huffman=huffman)

    def headers(
        self,
        stream_id: int,
        headers: Iterable[tuple[bytes, bytes]] | bytes,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        pad: int | None = None,
        depends_on: int | None = None,
    ) -> bytes:
        """A HEADERS frame (`headers` as a list to encode, or an already encoded block)."""
        block = headers if isinstance(headers, bytes) else self.block(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        if depends_on is not None:
            flags |= PRIORITY_FLAG
            block = struct.pack(">LB", depends_on, 255) + block
        if pad is not None:
            flags |= PADDED
            block = bytes([pad]) + block + b"\0" * pad
        return frame(HEADERS, flags, stream_id, block)

    def continuation(self, stream_id: int, block: bytes, *, end_headers: bool = True) -> bytes:
        return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)

    def handshake(self, *pairs: tuple[int, int]) -> None:
        """Preface and SETTINGS (h2spec: INITIAL_WINDOW_SIZE 65535), until both SETTINGS are acknowledged."""
        self.send(PREFACE, settings((INITIAL_WINDOW_SIZE, 65535), *pairs))
        acked = received = False
        while not (acked and received):
            got = self.read()
            assert got is not None, f"closed during the handshake: {self.seen}"
            if isinstance(got, SettingsFrame):
                if "ACK" in got.flags:
                    acked = True
                else:
                    received = True
                    self.peer_settings.update(got.settings)
                    self.send(settings(ack=True))

    # ------------------------------------------------------------------ receiving
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None once the peer has closed. TimeoutError if nothing comes in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, body = self.buffer[:9], self.buffer[9 : 9 + length]
                    self.buffer = self.buffer[9 + length :]
                    parsed, _ = Frame.parse_frame_header(memoryview(head))
                    parsed.parse_body(memoryview(body))
                    self.seen.append(parsed)
                    return parsed
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame within the timeout; seen {self.seen[-8:]}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                continue
            if not chunk:
                self.closed = True
            self.buffer += chunk

    def _decode(self, got: HeadersFrame | ContinuationFrame) -> list[tuple[bytes, bytes]] | None:
        self.header_fragments.append(bytes(got.data))
        if "END_HEADERS" not in got.flags:
            return None
        block = b"".join(self.header_fragments)
        self.header_fragments = []
        return [(bytes(n), bytes(v)) for n, v in self.decoder.decode(block, raw=True)]

    def next_frame(self, waiting_for: str) -> tuple[Frame, list[tuple[bytes, bytes]] | None]:
        """The next frame, and the header block it completes (decoded: the HPACK context stays in step);
        fails if the peer closed first."""
        got = self.read()
        if got is None:
            raise AssertionError(f"closed while waiting for {waiting_for}; seen {self.seen[-8:]}")
        block = self._decode(got) if isinstance(got, (HeadersFrame, ContinuationFrame)) else None
        return got, block

    def connection_error(self, *codes: ErrorCodes) -> GoAwayFrame:
        """RFC 9113 §5.4.1: a GOAWAY with one of `codes`, then the connection closes."""
        while True:
            got, _ = self.next_frame(f"GOAWAY {codes}")
            if isinstance(got, GoAwayFrame):
                assert got.error_code in codes, f"GOAWAY {ErrorCodes(got.error_code)!r}, expected {codes}"
                while (late := self.read()) is not None:
                    assert not isinstance(late, (HeadersFrame, DataFrame)), f"{late} after GOAWAY"
                return got

    def stream_error(self, stream_id: int, *codes: ErrorCodes, connection_ok: bool = False) -> Frame:
        """RFC 9113 §5.4.2: a RST_STREAM on `stream_id` with one of `codes` (the connection stays up); with
        `connection_ok`, a GOAWAY with one of them passes too (h2spec's VerifyStreamError: §5.4.1 lets an
        endpoint treat a stream error as a connection error)."""
        while True:
            got, _ = self.next_frame(f"RST_STREAM {codes}")
            if isinstance(got, GoAwayFrame) and not connection_ok:
                raise AssertionError(
                    f"GOAWAY {ErrorCodes(got.error_code)!r} instead of a stream error {codes}"
                )
            if isinstance(got, GoAwayFrame) or (
                isinstance(got, RstStreamFrame) and got.stream_id == stream_id
            ):
                assert got.error_code in codes, (
                    f"{got} carries {ErrorCodes(got.error_code)!r}, expected {codes}"
                )
                return got

    def stream_or_connection_error(self, stream_id: int, *codes: ErrorCodes) -> Frame:
        """Either verdict, for cases where the codecs differ in scope (see `stream_error`)."""
        return self.stream_error(stream_id, *codes, connection_ok=True)

    def response(self, stream_id: int) -> Response:
        """Read until the response on `stream_id` ends (END_STREAM), giving flow-control credit as DATA
        arrives; fails on a reset or GOAWAY with an error."""
        response = Response(stream_id)
        while not response.ended:
            got, block = self.next_frame(f"the response on stream {stream_id}")
            if got.stream_id != stream_id:
                if isinstance(got, GoAwayFrame) and got.error_code != 0:
                    raise AssertionError(f"GOAWAY {ErrorCodes(got.error_code)!r}")
                continue
            if block is not None:
                if response.headers and not block[0][0].startswith(b":"):
                    response.trailers = block
                elif not block or block[0] != (b":status", b"100"):
                    response.headers = block
            elif isinstance(got, DataFrame):
                response.body += bytes(got.data)
                if got.flow_controlled_length:
                    self.send(window_update(0, got.flow_controlled_length))
                    self.send(window_update(stream_id, got.flow_controlled_length))
            elif isinstance(got, RstStreamFrame):
                raise AssertionError(f"stream reset: {ErrorCodes(got.error_code)!r}")
            response.ended = "END_STREAM" in got.flags and isinstance(got, (HeadersFrame, DataFrame))
        return response

    def first(self, kind: type[Frame], *, stream_id: int | None = None) -> Frame:
        """The next frame of `kind` (on `stream_id` if given), skipping others; fails on a close."""
        while True:
            got, _ = self.next_frame(kind.__name__)
            if isinstance(got, kind) and (stream_id is None or got.stream_id == stream_id):
                return got

    def ping_answered(self, payload: bytes = b"meshping") -> None:
        """The connection is alive: a PING gets its ACK (h2spec's check that a frame was ignored)."""
        self.send(ping(payload))
        while True:
            got = self.first(PingFrame)
            if "ACK" in got.flags and got.opaque_data == payload:
                return
