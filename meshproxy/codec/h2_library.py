"""The h2 library as meshproxy's reference HTTP/2 codec (`MESHPROXY_HTTP2_CODEC=h2`). No I/O, no asyncio.

The h2 library's sans-I/O state machine, configured as the proxy needs it: a large initial window and frame
size (fewer WINDOW_UPDATE / DATA frames per byte), HPACK without Huffman coding on output (the pure-Python
Huffman encoder costs more than the bytes it saves on loopback and in a pod), and meshproxy's own message
rules (`h2_rules`, RFC 9113 §8) applied to every header block it reports: the library's own
`validate_inbound_headers` is a per-character Python loop (~9.5 µs for a 10-field request, against ~1.7 µs
for `h2_rules`), so it stays off. h2 still counts DATA against `content-length` itself, and treats a mismatch
as a connection error where the lean codec resets the stream (both are allowed, RFC 9113 §5.4.1; neither
forwards the message).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable
from typing import Any

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

from meshproxy.codec import h2_rules
from meshproxy.codec.h2_hpack import SILENT_LOGGER, Decoder, Encoder

# RFC 7541 §4.1 size of a list within both limits: past it, HPACK decoding stops (a connection error)
_FIELD_OVERHEAD = 32
# CheckedH2Connection's scan of frame headers (RFC 9113 §4.1)
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SCAN_HEADER = struct.Struct(">LBBL")  # a zero byte, then the 24-bit length, type, flags, stream id
_DATA, _HEADERS, _SETTINGS, _CONTINUATION = 0x0, 0x1, 0x4, 0x9
_ACK = 0x1
_END_HEADERS = 0x4
_ENDED_BY = (StreamClosedBy.SEND_END_STREAM, StreamClosedBy.RECV_END_STREAM)


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
            error = ProtocolError(f"HPACK: {exc}")
            # on the instance: compiled with mypyc, a class attribute of a subclass would not be seen
            error.error_code = ErrorCodes.COMPRESSION_ERROR
            raise error from exc


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
        self.scanned = False  # any byte received yet

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

    def reading_frame(self) -> bool:
        return bool(self.scan_header) or self.scan_block >= 0 or (self.scanned and self.scan_skip > 0)

    def _scan(self, data: bytes) -> None:
        self.scanned = True
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


def library_connection(
    client_side: bool,
    *,
    stream_window: int,
    max_frame_size: int,
    max_concurrent_streams: int,
    max_header_list_size: int,
    max_header_count: int,
) -> CheckedH2Connection:
    """An h2 connection with the proxy's settings (codec/h2.py `new_connection` passes them)."""
    conn = CheckedH2Connection(
        _CLIENT_CONFIG if client_side else _SERVER_CONFIG, max_header_list_size, max_header_count
    )
    conn.encoder = _PlainEncoder()
    conn.decoder = _CheckedDecoder()
    settings: dict[SettingCodes | int, int] = {
        SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
        SettingCodes.MAX_FRAME_SIZE: max_frame_size,
        SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
    }
    if client_side:
        settings[SettingCodes.ENABLE_PUSH] = 0
    else:
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
    conn.local_settings.update(settings)
    # Our local settings are in force once acknowledged; the preface SETTINGS frame carries them.
    conn.local_settings.acknowledge()
    conn.max_inbound_frame_size = max_frame_size
    # HPACK decoding stops past this (h2: DenialOfServiceError, a connection error ENHANCE_YOUR_CALM)
    conn.decoder.max_header_list_size = max_header_list_size + _FIELD_OVERHEAD * max_header_count
    return conn
