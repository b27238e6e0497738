"""The HTTP/2 codec seam: one interface (`H2Codec`) over the lean frame layer and the h2 library, the
proxy's settings, and the codec choice. No I/O, no asyncio.

Both sides use the h2 library's sans-I/O state machine with its checks switched off where the proxy already
does the work (hot-path notes: h2's header validation and normalisation cost ~15% of a request), a large
initial window and frame size (fewer WINDOW_UPDATE / DATA frames per byte), and HPACK without Huffman coding
on output (the pure-Python Huffman encoder costs more than the bytes it saves on loopback and in a pod).

Flow-controlled bodies are in `h2_flow.py`; converting header blocks to and from the router's heads is in
`h2_messages.py`.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Protocol

import hpack.hpack
import hpack.huffman_table
import hpack.table
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import GoAwayFrame

from meshproxy.codec.h2_lean import LeanH2Connection

# RFC 9113 §6.5.2 / §6.9.2. The stream window bounds what one stalled stream can make the proxy hold; the
# connection window bounds a whole connection (a slow reader slows the writer: acks are withheld).
STREAM_WINDOW = 1 << 20  # 1 MiB
CONNECTION_WINDOW = 16 << 20  # 16 MiB
MAX_FRAME_SIZE = 1 << 20  # what we accept; what we send is bounded by the peer's SETTINGS_MAX_FRAME_SIZE
SERVER_MAX_CONCURRENT_STREAMS = 1024  # per downstream connection (Envoy: 2^31-1; h2's default: 100)
MAX_HEADER_LIST_SIZE = 64 * 1024  # Envoy's max_request_headers_kb default is 60
# Before the server's SETTINGS arrive, a client may not know its stream limit; RFC 9113 §6.5.2 recommends
# servers allow at least 100, so that is what an upstream connection assumes until told.
ASSUMED_PEER_MAX_STREAMS = 100


class _PlainEncoder(Encoder):
    """HPACK encoding with the dynamic table but without Huffman coding (see module docstring)."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


# h2 and hpack log every frame and header field at debug level (~25 calls per request even when disabled).
# `"".format` is a C function that takes any arguments and does no work: a logger that costs nothing.
_SILENT_LOGGER = types.SimpleNamespace(debug="".format, trace="".format)
hpack.hpack.log = _SILENT_LOGGER  # type: ignore[assignment]
hpack.table.log = _SILENT_LOGGER  # type: ignore[assignment]
# hpack decodes Huffman strings in pure Python, and servers (nginx, grpc) Huffman-code every literal of every
# response (date, server, content-type...). The decoding is a pure function of the bytes: memoise it.
_decode_huffman = functools.lru_cache(maxsize=4096)(hpack.huffman_table.decode_huffman)
hpack.hpack.decode_huffman = _decode_huffman  # type: ignore[attr-defined, assignment]


def _configuration(client_side: bool) -> H2Configuration:
    config = H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    config.logger = _SILENT_LOGGER  # type: ignore[assignment]
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


def select(codec: str) -> None:
    """Choose the process's HTTP/2 codec (called once by the data plane from Settings)."""
    global HTTP2_CODEC
    if codec not in HTTP2_CODECS:
        raise ValueError(f"unknown HTTP/2 codec {codec!r}")
    HTTP2_CODEC = codec


def new_connection(client_side: bool, codec: str | None = None) -> H2Codec:
    """An HTTP/2 connection object with the proxy's settings; its preface and SETTINGS are not yet queued
    (`initiate_connection`, or `initiate_upgrade_connection` for servers answering `Upgrade: h2c`)."""
    if (codec or HTTP2_CODEC) == "lean":
        return LeanH2Connection(
            client_side,
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_frame_size=MAX_FRAME_SIZE,
            max_concurrent_streams=SERVER_MAX_CONCURRENT_STREAMS,
            max_header_list_size=MAX_HEADER_LIST_SIZE,
        )
    conn = H2Connection(config=_CLIENT_CONFIG if client_side else _SERVER_CONFIG)
    conn.encoder = _PlainEncoder()
    settings: dict[SettingCodes | int, int] = {
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
        SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
    }
    if client_side:
        settings[SettingCodes.ENABLE_PUSH] = 0
    else:
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = SERVER_MAX_CONCURRENT_STREAMS
    conn.local_settings.update(settings)
    # Our local settings are in force once acknowledged; the preface SETTINGS frame carries them.
    conn.local_settings.acknowledge()
    conn.max_inbound_frame_size = MAX_FRAME_SIZE
    conn.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
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
