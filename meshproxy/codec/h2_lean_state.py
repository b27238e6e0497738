"""The lean HTTP/2 codec's state and sending side: connection set-up, HEADERS / DATA / RST_STREAM / GOAWAY
out, flow-control windows, which streams are open or how they closed (RFC 9113 §5.1), and the connection-level
control frames received (PING, GOAWAY, PRIORITY). The receiving of streams' frames is
`h2_lean.LeanH2Connection`, which extends this class. No I/O.
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, Event, PingReceived, StreamReset
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError, TooManyStreamsError
from h2.settings import SettingCodes

from meshproxy.codec import h2_rules
from meshproxy.codec.h2_frames import (
    ACK,
    CLOSED_STREAMS_KEPT,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENDED,
    FIELD_OVERHEAD,
    GOAWAY,
    GOAWAY_PAYLOAD,
    HEADERS,
    LOCAL_RESET,
    PING,
    PREFACE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    U32,
    WINDOW_UPDATE,
    LeanStream,
    PeerSettings,
    frame,
)
from meshproxy.codec.h2_hpack import Decoder
from meshproxy.codec.hpack_static import StaticEncoder


class LeanConnectionState:
    """HTTP/2 for one connection, server or client side, sans I/O: the state and the sending side."""

    def __init__(
        self,
        client_side: bool,
        *,
        stream_window: int,
        connection_window: int,
        max_frame_size: int,
        max_concurrent_streams: int,
        max_header_list_size: int = h2_rules.DEFAULT_MAX_HEADER_LIST_SIZE,
        max_header_count: int = h2_rules.DEFAULT_MAX_HEADER_COUNT,
    ) -> None:
        """`max_header_list_size` (bytes of names and values) and `max_header_count` (fields) bound every
        received header block (Envoy's max_request_headers_kb and max_headers_count); over them the stream
        is reset (ENHANCE_YOUR_CALM), far over them (past RFC 7541's size of a list within both) the
        connection ends."""
        self.client_side = client_side
        self.encoder = StaticEncoder()
        self.decoder = Decoder()
        self.max_header_list_size = max_header_list_size
        self.max_header_count = max_header_count
        self.decoder.max_header_list_size = max_header_list_size + FIELD_OVERHEAD * max_header_count
        self.max_header_block = 2 * self.decoder.max_header_list_size  # compressed, across CONTINUATIONs
        if client_side:
            self.decoder.max_allowed_table_size = 0  # see _settings_payload
        self.remote_settings = PeerSettings()
        self.stream_window = stream_window  # what we advertise per stream
        self.connection_window = connection_window  # what we open the connection to
        self.max_inbound_frame_size = max_frame_size
        self.max_concurrent_streams = max_concurrent_streams  # inbound limit (server side)
        self.max_outbound_frame_size = 16384
        self.outbound_window = 65535  # connection-level: how much we may still send
        self.inbound_window = 65535  # connection-level: how much the peer may still send
        self.inbound_unacked = 0
        self.streams: dict[int, LeanStream] = {}
        self.highest_inbound_stream_id = 0
        self.highest_outbound_stream_id = 0
        self.out = bytearray()
        self.buffer = b""
        self.awaiting_preface = not client_side
        self.continuation: tuple[int, int, list[bytes]] | None = None  # (stream id, HEADERS flags, fragments)
        self.continuation_size = 0  # compressed bytes in self.continuation
        self.closed = False  # GOAWAY sent or received
        self.closed_streams: dict[int, int] = {}  # stream id -> ENDED | PEER_RESET | LOCAL_RESET
        self.decode_cache: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.checked: dict[bytes, Any] = {}  # cached blocks that passed h2_rules -> the check's result
        self.decode_table_size = 0  # the dynamic table as it was when the cache was filled: its length
        self.decode_table_newest: object = None  # and its newest entry (identity: every add is a new tuple)

    def __repr__(self) -> str:
        side = "client" if self.client_side else "server"
        return f"<LeanH2Connection {side} streams={len(self.streams)} closed={self.closed}>"

    # ---------------------------------------------------------------- connection set-up
    def _settings_payload(self) -> bytes:
        settings = [
            (SettingCodes.INITIAL_WINDOW_SIZE, self.stream_window),
            (SettingCodes.MAX_FRAME_SIZE, self.max_inbound_frame_size),
            (SettingCodes.MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        if self.client_side:
            # Upstream servers (nginx, grpc) index every response field, so the dynamic table churns on
            # every response and no decoded block can be reused. Without a table, a block decodes the same
            # way whatever came before, and the decode cache answers repeated responses.
            settings.append((SettingCodes.HEADER_TABLE_SIZE, 0))
            settings.append((SettingCodes.ENABLE_PUSH, 0))
        else:
            settings.append((SettingCodes.MAX_CONCURRENT_STREAMS, self.max_concurrent_streams))
        return b"".join(SETTING.pack(code, value) for code, value in settings)

    def initiate_connection(self) -> None:
        if self.client_side:
            self.out += PREFACE
        self.out += frame(SETTINGS, 0, 0, self._settings_payload())

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is None:
                raise StreamClosedError(stream_id)
            stream.recv_window += increment
        else:
            self.inbound_window += increment
        self.out += frame(WINDOW_UPDATE, 0, stream_id or 0, U32.pack(increment))

    def data_to_send(self, amount: int | None = None) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def get_next_available_stream_id(self) -> int:
        return self.highest_outbound_stream_id + 2 if self.highest_outbound_stream_id else 1

    def local_flow_control_window(self, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(stream_id)
        window = stream.send_window
        return window if window < self.outbound_window else self.outbound_window

    # ---------------------------------------------------------------- sending
    def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False) -> None:
        if self.closed and self.client_side:
            raise ProtocolError("connection is closed (GOAWAY)")
        stream = self.streams.get(stream_id)
        if stream is None:
            if not self.client_side or stream_id <= self.highest_outbound_stream_id:
                raise StreamClosedError(stream_id)
            limit = self.remote_settings.max_concurrent_streams
            if len(self.streams) >= limit:
                raise TooManyStreamsError(f"max outbound streams is {limit}")
            stream = self.streams[stream_id] = LeanStream(
                self.remote_settings.initial_window_size, self.stream_window
            )
            self.highest_outbound_stream_id = stream_id
            for name, value in headers:  # :method comes first: one step
                if name == b":method":
                    stream.head_request = value == b"HEAD"
                    break
        elif stream.local_closed:
            raise StreamClosedError(stream_id)
        block = self.encoder.encode(headers)
        flags = END_HEADERS | END_STREAM if end_stream else END_HEADERS
        limit = self.max_outbound_frame_size
        if len(block) <= limit:
            self.out += frame(HEADERS, flags, stream_id, block)
        else:
            self.out += frame(HEADERS, flags & ~END_HEADERS, stream_id, block[:limit])
            rest = block[limit:]
            while rest:
                piece, rest = rest[:limit], rest[limit:]
                self.out += frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece)
        if end_stream:
            self._end_local(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosedError(stream_id)
        size = len(data)
        if size > stream.send_window or size > self.outbound_window:
            raise FlowControlError(f"cannot send {size} bytes on stream {stream_id}")
        if size > self.max_outbound_frame_size:
            raise ProtocolError(f"frame of {size} bytes exceeds the peer's maximum")
        stream.send_window -= size
        self.outbound_window -= size
        payload = data if isinstance(data, bytes) else data.tobytes()
        self.out += frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)
        if end_stream:
            self._end_local(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: ErrorCodes | int = 0) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            raise StreamClosedError(stream_id)
        self._closed(stream_id, LOCAL_RESET)
        self.out += frame(RST_STREAM, 0, stream_id, U32.pack(int(error_code)))

    def close_connection(
        self,
        error_code: ErrorCodes | int = 0,
        additional_data: bytes | None = None,
        last_stream_id: int | None = None,
    ) -> None:
        if last_stream_id is None:
            last_stream_id = self.highest_inbound_stream_id
        self.out += frame(
            GOAWAY, 0, 0, GOAWAY_PAYLOAD.pack(last_stream_id, int(error_code)) + (additional_data or b"")
        )
        self.closed = True

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """Reopen windows for data the application has consumed; WINDOW_UPDATE once half a window is due."""
        unacked = self.inbound_unacked + acknowledged_size
        if unacked >= self.connection_window >> 1:
            self.inbound_window += unacked
            self.out += frame(WINDOW_UPDATE, 0, 0, U32.pack(unacked))
            unacked = 0
        self.inbound_unacked = unacked
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        unacked = stream.unacked + acknowledged_size
        if unacked >= self.stream_window >> 1:
            stream.recv_window += unacked
            self.out += frame(WINDOW_UPDATE, 0, stream_id, U32.pack(unacked))
            unacked = 0
        stream.unacked = unacked

    def _end_local(self, stream_id: int, stream: LeanStream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream_id]
            self._closed(stream_id, ENDED)

    def _end_remote(self, stream_id: int, stream: LeanStream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            del self.streams[stream_id]
            self._closed(stream_id, ENDED)

    def _closed(self, stream_id: int, how: int) -> None:
        closed = self.closed_streams
        closed[stream_id] = how
        if len(closed) > CLOSED_STREAMS_KEPT:
            for old in list(closed)[: CLOSED_STREAMS_KEPT // 2]:  # the oldest half (insertion order)
                del closed[old]

    def _idle(self, stream_id: int) -> bool:
        """RFC 9113 §5.1.1: a stream the peer could open but has not (or one of ours not yet opened). No
        even stream is ever opened: the proxy never pushes and refuses push (SETTINGS_ENABLE_PUSH 0)."""
        if not stream_id & 1:
            return True
        if self.client_side:
            return stream_id > self.highest_outbound_stream_id
        return stream_id > self.highest_inbound_stream_id

    def _connection_error(self, code: ErrorCodes, message: str) -> ProtocolError:
        self.close_connection(code)
        error = ProtocolError(message)
        error.error_code = code
        return error

    def _stream_error(self, stream_id: int, code: ErrorCodes, events: list[Event]) -> None:
        """Reset one stream (RFC 9113 §5.4.2) and tell the connection manager / pool with a StreamReset
        that is not remote (`remote_reset=False`): nothing more of that stream is passed on."""
        self.streams.pop(stream_id, None)
        self._closed(stream_id, LOCAL_RESET)
        self.out += frame(RST_STREAM, 0, stream_id, U32.pack(code))
        events.append(StreamReset(stream_id=stream_id, error_code=code, remote_reset=False))

    # ---------------------------------------------------------------- control frames received
    def _on_ping(self, stream_id: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise self._connection_error(ErrorCodes.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise self._connection_error(ErrorCodes.FRAME_SIZE_ERROR, "PING not of 8 bytes")
        if not flags & ACK:
            self.out += frame(PING, ACK, 0, payload)
            events.append(PingReceived(ping_data=payload))

    def _on_goaway(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise self._connection_error(ErrorCodes.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise self._connection_error(ErrorCodes.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        last, code = GOAWAY_PAYLOAD.unpack_from(payload)
        event = ConnectionTerminated()
        event.last_stream_id = last & 0x7FFFFFFF
        event.error_code = code
        event.additional_data = payload[8:]
        events.append(event)
        self.closed = True

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        """PRIORITY is advice the proxy does not take (RFC 9113 §5.3.2), but its form is checked."""
        if stream_id == 0:
            raise self._connection_error(ErrorCodes.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise self._connection_error(ErrorCodes.FRAME_SIZE_ERROR, "PRIORITY not of 5 bytes")
        self._check_dependency(stream_id, payload)

    def _check_dependency(self, stream_id: int, priority: bytes) -> None:
        """RFC 9113 §5.3.1: a stream cannot depend on itself. A stream error there; a connection error
        here, as the h2 library and nghttp2 treat a PRIORITY frame (§5.4.1 allows it)."""
        if U32.unpack_from(priority)[0] & 0x7FFFFFFF == stream_id:
            raise self._connection_error(ErrorCodes.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
