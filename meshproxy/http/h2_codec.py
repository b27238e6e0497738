"""HTTP/2 pieces shared by the downstream connection manager and the upstream pool. No I/O, no asyncio.

Two codecs sit behind `new_connection`: the lean frame layer (`h2_lean`, the hot path) and the h2 library's
sans-I/O state machine (the reference), with a large initial window and frame size (fewer WINDOW_UPDATE /
DATA frames per byte) and HPACK without Huffman coding on output (the pure-Python Huffman encoder costs more
than the bytes it saves on loopback and in a pod). Both check every received header block against the same
message rules (`h2_rules`, RFC 9113 §8): the h2 library's own `validate_inbound_headers` is a per-character
Python loop (~9.5 µs for a 10-field request, against ~1.7 µs for `h2_rules`), so it stays off and
`CheckedH2Connection` applies `h2_rules` to the events h2 reports instead; h2 still counts DATA against
`content-length` itself, and treats a mismatch as a connection error where the lean codec resets the stream
(both are allowed, RFC 9113 §5.4.1; neither forwards the message).

Converting between HTTP/2 header blocks and the router's `RequestHead` / `ResponseHead` lives here too, so a
request can cross from one protocol to the other in either direction (RFC 9113 §8.2.2 connection-specific
fields dropped, §8.2.3 cookies joined for HTTP/1.1, `:authority` <-> `Host`).
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    Event,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy
from hpack import HPACKError, OversizedHeaderListError
from hyperframe.frame import GoAwayFrame

from meshproxy.http import h2_rules
from meshproxy.http.codec import BodyKind, Headers, RequestHead, ResponseHead
from meshproxy.http.h2_hpack import SILENT_LOGGER, Decoder, Encoder
from meshproxy.http.h2_lean import LeanH2Connection
from meshproxy.http.headers import HOP_BY_HOP

# RFC 9113 §6.5.2 / §6.9.2. The stream window bounds what one stalled stream can make the proxy hold; the
# connection window bounds a whole connection (a slow reader slows the writer: acks are withheld).
STREAM_WINDOW = 1 << 20  # 1 MiB
CONNECTION_WINDOW = 16 << 20  # 16 MiB
MAX_FRAME_SIZE = 1 << 20  # what we accept; what we send is bounded by the peer's SETTINGS_MAX_FRAME_SIZE
SERVER_MAX_CONCURRENT_STREAMS = 1024  # per downstream connection (Envoy: 2^31-1; h2's default: 100)
# Received header blocks: bytes of names and values, and fields (Envoy's max_request_headers_kb 60 and
# max_headers_count 100); the connection manager and the pool may pass others to new_connection.
MAX_HEADER_LIST_SIZE = h2_rules.DEFAULT_MAX_HEADER_LIST_SIZE
MAX_HEADER_COUNT = h2_rules.DEFAULT_MAX_HEADER_COUNT
# RFC 7541 §4.1 size of a list within both limits: past it, HPACK decoding stops (a connection error)
_FIELD_OVERHEAD = 32
# CheckedH2Connection's scan of frame headers (RFC 9113 §4.1)
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SCAN_HEADER = struct.Struct(">LBBL")  # a zero byte, then the 24-bit length, type, flags, stream id
_DATA, _HEADERS, _SETTINGS, _CONTINUATION = 0x0, 0x1, 0x4, 0x9
_ACK = 0x1
_END_HEADERS = 0x4
_ENDED_BY = (StreamClosedBy.SEND_END_STREAM, StreamClosedBy.RECV_END_STREAM)
# Before the server's SETTINGS arrive, a client may not know its stream limit; RFC 9113 §6.5.2 recommends
# servers allow at least 100, so that is what an upstream connection assumes until told.
ASSUMED_PEER_MAX_STREAMS = 100

# Header fields that never cross into an HTTP/2 message (RFC 9113 §8.2.2) or are rewritten by the proxy.
_NOT_FORWARDED_TO_H2: frozenset[bytes] = HOP_BY_HOP | {b"host", b"http2-settings", b"server"}
_PSEUDO = 0x3A  # ord(":")

GRPC_TE = (b"te", b"trailers")
SERVER_HEADER = (b"server", b"envoy")


class _Acknowledger(Protocol):
    def acknowledge(self, sid: int, length: int) -> None: ...


class StreamReadPause:
    """Backpressure for one HTTP/2 stream, shared by the downstream and upstream stream classes: while the
    router has reading paused, received DATA is not acknowledged (`unacked` counts it), so the peer's
    flow-control window closes; resuming acknowledges it and the peer may send again."""

    __slots__ = ("read_paused", "unacked")
    connection: _Acknowledger
    stream_id: int
    read_paused: bool
    unacked: int

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if self.unacked:
                unacked, self.unacked = self.unacked, 0
                self.connection.acknowledge(self.stream_id, unacked)


class _PlainEncoder(Encoder):
    """HPACK encoding with the dynamic table but without Huffman coding (see module docstring)."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


def _configuration(client_side: bool) -> H2Configuration:
    config = H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    config.logger = SILENT_LOGGER  # h2 logs every frame at debug level: ~25 calls per request even when off
    return config


_SERVER_CONFIG = _configuration(False)
_CLIENT_CONFIG = _configuration(True)


class H2Codec(Protocol):
    """What the connection manager and the pool use of an HTTP/2 connection object: the h2 library's
    `H2Connection` (the reference) or `h2_lean.LeanH2Connection` (the hot path)."""

    @property
    def remote_settings(self) -> _PeerLimits: ...

    @property
    def max_outbound_frame_size(self) -> int: ...

    def initiate_connection(self) -> None: ...

    def initiate_upgrade_connection(self, settings_header: bytes | None = None) -> bytes | None: ...

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None: ...

    def receive_data(self, data: bytes) -> list[Event]: ...

    def data_to_send(self, amount: int | None = None) -> bytes: ...

    def get_next_available_stream_id(self) -> int: ...

    def local_flow_control_window(self, stream_id: int) -> int: ...

    def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False) -> None: ...

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None: ...

    def end_stream(self, stream_id: int) -> None: ...

    def reset_stream(self, stream_id: int, error_code: ErrorCodes | int = 0) -> None: ...

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None: ...

    def close_connection(
        self,
        error_code: ErrorCodes | int = 0,
        additional_data: bytes | None = None,
        last_stream_id: int | None = None,
    ) -> None: ...


class _PeerLimits(Protocol):
    @property
    def max_concurrent_streams(self) -> int: ...


# The HTTP/2 codec of this process: "lean" (default, the hot path) or "h2" (the h2 library, the reference).
# Settings.http2_codec (MESHPROXY_HTTP2_CODEC) picks it once, at start-up, through `select`.
HTTP2_CODECS = ("lean", "h2")
HTTP2_CODEC = "lean"
# The header-block limits every connection of this process gets (Settings.max_request_headers_kb / _count,
# MESHPROXY_MAX_REQUEST_HEADERS_KB / _COUNT), set with the codec by `select`.
HEADER_LIMITS = (MAX_HEADER_LIST_SIZE, MAX_HEADER_COUNT)


def select(
    codec: str, max_header_list_size: int = MAX_HEADER_LIST_SIZE, max_header_count: int = MAX_HEADER_COUNT
) -> None:
    """Choose the process's HTTP/2 codec and header limits (called once by the data plane from Settings)."""
    global HTTP2_CODEC, HEADER_LIMITS
    if codec not in HTTP2_CODECS:
        raise ValueError(f"unknown HTTP/2 codec {codec!r}")
    HTTP2_CODEC = codec
    HEADER_LIMITS = (max_header_list_size, max_header_count)


class _CompressionError(ProtocolError):
    error_code = ErrorCodes.COMPRESSION_ERROR


class _CheckedDecoder(Decoder):
    """h2 reports an HPACK decoding error as PROTOCOL_ERROR; RFC 9113 §4.3 and RFC 7541 §2.3.3 / §4.2 /
    §5.2 / §6.1 / §6.3 demand COMPRESSION_ERROR (and the lean codec sends it). An oversized list stays h2's
    DenialOfServiceError (ENHANCE_YOUR_CALM)."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        try:
            return super().decode(data, raw)
        except OversizedHeaderListError:
            raise
        except HPACKError as exc:
            raise _CompressionError(f"HPACK: {exc}") from exc


class CheckedH2Connection(H2Connection):
    """The h2 library's connection with meshproxy's message rules (`h2_rules`) applied to every header block
    it reports: a block that fails resets its stream (RFC 9113 §8.1.1) and is replaced by a StreamReset
    with `remote_reset=False`, as the lean codec reports it; later events of that stream in the same read
    are dropped (their DATA acknowledged, so the connection window reopens).

    Before h2 sees the bytes, a light scan of the frame headers applies the frame rules h2 answers
    differently from RFC 9113 and the lean codec: a SETTINGS ACK with a payload (FRAME_SIZE_ERROR, §6.5),
    DATA or HEADERS on a stream closed by END_STREAM (a connection error STREAM_CLOSED, §5.1; h2 resets the
    stream), and a header block growing past the lean codec's bound across CONTINUATION frames
    (ENHANCE_YOUR_CALM; h2 buffers up to 64 frames of any size)."""

    def __init__(self, config: H2Configuration, max_header_list_size: int, max_header_count: int) -> None:
        super().__init__(config=config)
        self.max_header_list_size = max_header_list_size
        self.max_header_count = max_header_count
        self.max_header_block = 2 * (max_header_list_size + _FIELD_OVERHEAD * max_header_count)
        self.head_requests: set[int] = set()  # client side: streams whose request is HEAD
        self.scan_skip = 0 if config.client_side else len(_PREFACE)  # bytes to pass before a frame header
        self.scan_header = b""  # a frame header split across reads
        self.scan_block = -1  # compressed bytes of the header block being received (-1: none)

    def send_headers(
        self,
        stream_id: int,
        headers: Iterable[Any],
        end_stream: bool = False,
        priority_weight: int | None = None,
        priority_depends_on: int | None = None,
        priority_exclusive: bool | None = None,
    ) -> None:
        if self.config.client_side and (b":method", b"HEAD") in headers:
            self.head_requests.add(stream_id)
        super().send_headers(
            stream_id, headers, end_stream, priority_weight, priority_depends_on, priority_exclusive
        )

    def receive_data(self, data: Any) -> list[Event]:
        self._scan(bytes(data))
        events = super().receive_data(data)
        rejected: set[int] | None = None
        out: list[Event] = []
        for event in events:
            sid = getattr(event, "stream_id", 0)
            if rejected is not None and sid in rejected:
                if isinstance(event, DataReceived) and event.flow_controlled_length:
                    self.acknowledge_received_data(event.flow_controlled_length, sid)
                continue
            if isinstance(event, (RequestReceived, ResponseReceived, InformationalResponseReceived)):
                try:
                    self._check_head(event)
                except h2_rules.StreamRejected as exc:
                    rejected = self._reject(sid, exc, rejected, out)
                    continue
            elif isinstance(event, TrailersReceived):
                try:
                    h2_rules.check_trailers(event.headers, self.max_header_list_size, self.max_header_count)
                except h2_rules.StreamRejected as exc:
                    rejected = self._reject(sid, exc, rejected, out)
                    continue
            out.append(event)
        return out

    def _scan(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        while pos < end:
            if self.scan_skip:
                step = min(self.scan_skip, end - pos)
                self.scan_skip -= step
                pos += step
                continue
            need = 9 - len(self.scan_header)
            self.scan_header += data[pos : pos + need]
            pos += need
            if len(self.scan_header) < 9:
                return
            length, kind, flags, stream_id = _SCAN_HEADER.unpack(b"\0" + self.scan_header)
            self.scan_header = b""
            self.scan_skip = length
            stream_id &= 0x7FFFFFFF
            if kind == _SETTINGS and flags & _ACK and length:
                self._scan_error(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            elif kind in (_DATA, _HEADERS):
                stream = self.streams.get(stream_id)
                if stream is not None and stream.closed and stream.closed_by in _ENDED_BY:
                    self._scan_error(ErrorCodes.STREAM_CLOSED, f"frame on closed stream {stream_id}")
            if kind == _HEADERS:
                self.scan_block = -1 if flags & _END_HEADERS else length
            elif kind == _CONTINUATION and self.scan_block >= 0:
                self.scan_block = -1 if flags & _END_HEADERS else self.scan_block + length
                if self.scan_block > self.max_header_block:
                    self._scan_error(ErrorCodes.ENHANCE_YOUR_CALM, "header block too large")

    def _scan_error(self, code: ErrorCodes, message: str) -> None:
        self.close_connection(code)
        error = ProtocolError(message)
        error.error_code = code
        raise error

    def _check_head(self, event: RequestReceived | ResponseReceived | InformationalResponseReceived) -> None:
        headers = event.headers
        limits = (self.max_header_list_size, self.max_header_count)
        if isinstance(event, RequestReceived):
            length = h2_rules.check_request(headers, *limits)
        else:
            status, length = h2_rules.check_response(headers, *limits)
            if isinstance(event, InformationalResponseReceived) or status in (204, 304):
                return
            if event.stream_id in self.head_requests:
                self.head_requests.discard(event.stream_id)
                return
        if event.stream_ended is not None and length > 0:  # RFC 9113 §8.1.1: no DATA to match it
            raise h2_rules.StreamRejected(ErrorCodes.PROTOCOL_ERROR, "content-length without DATA")

    def _reject(
        self, sid: int, exc: h2_rules.StreamRejected, rejected: set[int] | None, out: list[Event]
    ) -> set[int]:
        with contextlib.suppress(H2Error):  # already closed by the END_STREAM of that block
            self.reset_stream(sid, exc.code)
        self.head_requests.discard(sid)
        out.append(StreamReset(stream_id=sid, error_code=exc.code, remote_reset=False))
        return {sid} if rejected is None else rejected | {sid}


def new_connection(
    client_side: bool,
    codec: str | None = None,
    *,
    max_header_list_size: int | None = None,
    max_header_count: int | None = None,
) -> H2Codec:
    """An HTTP/2 connection object with the proxy's settings; its preface and SETTINGS are not yet queued
    (`initiate_connection`, or `initiate_upgrade_connection` for servers answering `Upgrade: h2c`).
    `max_header_list_size` (bytes of names and values) and `max_header_count` bound received header blocks:
    over them the stream is reset (see h2_rules). Unset, they are the process's (`select`)."""
    if max_header_list_size is None:
        max_header_list_size = HEADER_LIMITS[0]
    if max_header_count is None:
        max_header_count = HEADER_LIMITS[1]
    if (codec or HTTP2_CODEC) == "lean":
        return LeanH2Connection(
            client_side,
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_frame_size=MAX_FRAME_SIZE,
            max_concurrent_streams=SERVER_MAX_CONCURRENT_STREAMS,
            max_header_list_size=max_header_list_size,
            max_header_count=max_header_count,
        )
    conn = CheckedH2Connection(
        _CLIENT_CONFIG if client_side else _SERVER_CONFIG, max_header_list_size, max_header_count
    )
    conn.encoder = _PlainEncoder()
    conn.decoder = _CheckedDecoder()
    settings: dict[SettingCodes | int, int] = {
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
        SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
    }
    if client_side:
        settings[SettingCodes.ENABLE_PUSH] = 0
    else:
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = SERVER_MAX_CONCURRENT_STREAMS
    conn.local_settings.update(settings)
    # Our local settings are in force once acknowledged; the preface SETTINGS frame carries them.
    conn.local_settings.acknowledge()
    conn.max_inbound_frame_size = MAX_FRAME_SIZE
    # HPACK decoding stops past this (h2: DenialOfServiceError, a connection error ENHANCE_YOUR_CALM)
    conn.decoder.max_header_list_size = max_header_list_size + _FIELD_OVERHEAD * max_header_count
    return conn


def open_connection_window(conn: H2Codec) -> None:
    """Raise the connection-level receive window (only WINDOW_UPDATE on stream 0 can, RFC 9113 §6.9.2)."""
    conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)


def goaway_frame(last_stream_id: int, error_code: int = 0) -> bytes:
    """A GOAWAY that h2 does not see: the graceful first GOAWAY of a drain, after which streams up to
    `last_stream_id` still complete (h2's own close_connection ends the connection at once)."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    return bytes(frame.serialize())


class OutboundBody:
    """A message body waiting to go out on one stream as flow control allows (RFC 9113 §5.2).

    `push` queues data, `finish` marks the end (with optional trailers); `drain` sends what the stream and
    connection windows allow and says whether data is left waiting for a WINDOW_UPDATE.
    """

    __slots__ = ("chunks", "ended", "finished", "offset", "size", "trailers")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # bytes of chunks[0] already sent
        self.size = 0
        self.finished = False  # the end (and trailers) were requested
        self.ended = False  # END_STREAM was sent
        self.trailers: Headers | None = None

    def __repr__(self) -> str:
        return f"<OutboundBody queued={self.size} finished={self.finished} ended={self.ended}>"

    def push(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def finish(self, trailers: Headers | None = None) -> None:
        self.finished = True
        self.trailers = trailers

    def drain(self, conn: H2Codec, stream_id: int) -> bool:
        """Send queued DATA (END_STREAM on the last frame), then trailers. True if blocked by flow control."""
        chunks = self.chunks
        while chunks:
            window = conn.local_flow_control_window(stream_id)
            if window <= 0:
                return True
            limit = conn.max_outbound_frame_size
            if window > limit:
                window = limit
            chunk = chunks[0]
            offset = self.offset
            remaining = len(chunk) - offset
            if remaining > window:
                # a memoryview slice: a large chunk is cut into frames without copying its tail each time
                conn.send_data(stream_id, memoryview(chunk)[offset : offset + window])
                self.offset = offset + window
                self.size -= window
                continue
            chunks.popleft()
            self.offset = 0
            self.size -= remaining
            last = not chunks and self.finished and self.trailers is None
            conn.send_data(stream_id, chunk if offset == 0 else memoryview(chunk)[offset:], end_stream=last)
            if last:
                self.ended = True
                return False
        if self.finished and not self.ended:
            self.ended = True
            if self.trailers is not None:
                conn.send_headers(stream_id, self.trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)
        return False


def request_head_from_h2(raw: list[Any], stream_ended: bool) -> RequestHead | None:
    """An HTTP/2 request header block as the router's RequestHead (`:authority` becomes `Host`, cookies are
    joined); None if it is malformed (no :method or :path), a stream error (RFC 9113 §8.1.1)."""
    method = path = authority = None
    headers: Headers = []
    cookies: list[bytes] | None = None
    length = -1
    host: bytes | None = None
    for name, value in raw:
        if name[0] == _PSEUDO:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            if not value:
                continue  # an empty crumb would leave "; " dangling in the joined field (RFC 9113 §8.2.3)
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
            continue
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"host":
            host = value
            continue
        headers.append((name, value))
    if method is None or (path is None and method != b"CONNECT"):
        return None
    authority = authority or host
    if authority is not None:
        headers.insert(0, (b"host", authority))
    if cookies is not None:
        headers.append((b"cookie", b"; ".join(cookies)))
    if stream_ended:
        body = BodyKind.NONE
    elif length >= 0:
        body = BodyKind.LENGTH
    else:
        body = BodyKind.CHUNKED
    return RequestHead(
        method.decode("ascii", "replace"),
        (path or b"").decode("latin-1"),
        headers,
        "2",
        True,
        body,
        length,
    )


def h2_request_headers(head: RequestHead, authority: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """The router's upstream RequestHead as an HTTP/2 header block (`Host` becomes `:authority`)."""
    host = authority
    rest: list[tuple[bytes, bytes]] = []
    grpc = False
    for name, value in head.headers:
        if name in _NOT_FORWARDED_TO_H2:
            if name == b"host":
                host = value
            continue
        if name == b"content-type" and value.startswith(b"application/grpc"):
            grpc = True
        rest.append((name, value))
    headers = [
        (b":method", head.method.encode("ascii")),
        (b":scheme", b"http"),
        (b":authority", host or b"localhost"),
        (b":path", head.target.encode("latin-1")),
    ]
    headers += rest
    if grpc:
        headers.append(GRPC_TE)  # gRPC servers require `te: trailers` (the router drops TE as hop-by-hop)
    return headers


def response_head_from_h2(raw: list[Any], stream_ended: bool, head_request: bool) -> ResponseHead | None:
    """An HTTP/2 response header block as a ResponseHead; a body that ends with the headers gets
    `content-length: 0` so an HTTP/1.1 client sees it framed. None if `:status` is missing or invalid."""
    status = 0
    headers: Headers = []
    length = -1
    for name, value in raw:
        if name[0] == _PSEUDO:
            if name == b":status":
                try:
                    status = int(value)
                except ValueError:
                    return None
            continue
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        headers.append((name, value))
    if status < 100:
        return None
    if head_request or status in (204, 304):
        body = BodyKind.NONE
    elif length >= 0:
        body = BodyKind.LENGTH
    elif stream_ended:
        body = BodyKind.LENGTH
        length = 0
        headers.append((b"content-length", b"0"))
    else:
        body = BodyKind.CHUNKED
    return ResponseHead(status, b"", headers, "2", True, body, length)


def h2_response_headers(head: ResponseHead, service_time_ms: int) -> list[tuple[bytes, bytes]]:
    """A ResponseHead as an HTTP/2 header block, with Envoy's `x-envoy-upstream-service-time` and `server`."""
    headers = [(b":status", b"%d" % head.status)]
    for name, value in head.headers:
        if name in _NOT_FORWARDED_TO_H2:
            continue
        headers.append((name, value))
    if service_time_ms >= 0:
        headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
    headers.append(SERVER_HEADER)
    return headers


def h2_trailers(trailers: Headers) -> list[tuple[bytes, bytes]]:
    """Trailers as relayed: pseudo-headers and connection-specific fields never appear in them."""
    return [(n, v) for n, v in trailers if n[0] != _PSEUDO and n not in _NOT_FORWARDED_TO_H2]
