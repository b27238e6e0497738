"""The HTTP/2 codec seam: one interface (`H2Codec`) over two codecs, the proxy's HTTP/2 settings, and the
codec choice. No I/O, no asyncio.

Two codecs sit behind `new_connection`: the lean frame layer (`h2_lean`, the hot path) and the h2 library
(`h2_library`, the reference). Both check every received header block against the same message rules
(`h2_rules`, RFC 9113 §8) and must give the same verdict on every input. Flow-controlled bodies are in
`h2_flow.py`; converting header blocks to and from the router's heads is in `h2_messages.py`.
"""

from __future__ import annotations

from typing import Any, Protocol

from h2.errors import ErrorCodes
from h2.events import Event
from hyperframe.frame import GoAwayFrame

from meshproxy.codec import h2_rules
from meshproxy.codec.h2_lean import LeanH2Connection
from meshproxy.codec.h2_library import library_connection

# RFC 9113 §6.5.2 / §6.9.2. The stream window bounds what one stalled stream can make the proxy hold; the
# connection window bounds a whole connection (a slow reader slows the writer: acks are withheld).
STREAM_WINDOW = 1 << 20  # 1 MiB
CONNECTION_WINDOW = 16 << 20  # 16 MiB
MAX_FRAME_SIZE = 1 << 20  # what we accept; what we send is bounded by the peer's SETTINGS_MAX_FRAME_SIZE
SERVER_MAX_CONCURRENT_STREAMS = 1024  # per downstream connection (Envoy: 2^31-1; h2's default: 100)
# Received header blocks: bytes of names and values, and fields (Envoy's max_request_headers_kb 60 and
# max_headers_count 100); Settings can change both (`select`).
MAX_HEADER_LIST_SIZE = h2_rules.DEFAULT_MAX_HEADER_LIST_SIZE
MAX_HEADER_COUNT = h2_rules.DEFAULT_MAX_HEADER_COUNT
# Before the server's SETTINGS arrive, a client may not know its stream limit; RFC 9113 §6.5.2 recommends
# servers allow at least 100, so that is what an upstream connection assumes until told.
ASSUMED_PEER_MAX_STREAMS = 100


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

    def reading_frame(self) -> bool:
        """A frame, a header block or the connection preface is only partly received (the request-headers
        timeout watches connections that stay so)."""
        ...

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
    return library_connection(
        client_side,
        stream_window=STREAM_WINDOW,
        max_frame_size=MAX_FRAME_SIZE,
        max_concurrent_streams=SERVER_MAX_CONCURRENT_STREAMS,
        max_header_list_size=max_header_list_size,
        max_header_count=max_header_count,
    )


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
