"""The HTTP/2 wire vocabulary of the lean codec (RFC 9113 §4, §6): frame types and flags, frame headers,
the peer's settings and one stream's state. No I/O.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

FRAME_HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id (with R bit)
U32 = struct.Struct(">L")
SETTING = struct.Struct(">HL")
GOAWAY_PAYLOAD = struct.Struct(">LL")
MAX_WINDOW = 2**31 - 1
DECODE_CACHE_LIMIT = 512
# RFC 7541 §4.1 counts 32 bytes per field on top of name and value: a list within both limits is at most
# this large, and HPACK decoding stops (a connection error) past it, so a compressed block cannot inflate
# without bound (an "HPACK bomb").
FIELD_OVERHEAD = 32
# A header block arriving in HEADERS + CONTINUATION frames is bounded in frames (as the h2 library bounds
# it) and in compressed bytes (twice the inflated bound) before it is decoded: a CONTINUATION flood ends
# the connection (CVE-2024-27316 and kin).
MAX_CONTINUATIONS = 64
# How streams ended, remembered for the last CLOSED_STREAMS_KEPT closed streams (RFC 9113 §5.1 "closed")
ENDED = 1  # END_STREAM both ways: more frames are a connection error (STREAM_CLOSED)
PEER_RESET = 2  # the peer sent RST_STREAM: more frames are a stream error (STREAM_CLOSED)
LOCAL_RESET = 3  # we sent RST_STREAM: frames in flight are ignored
CLOSED_STREAMS_KEPT = 4096


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


class PeerSettings:
    """The peer's SETTINGS as far as the proxy acts on them."""

    __slots__ = ("header_table_size", "initial_window_size", "max_concurrent_streams", "max_frame_size")

    def __init__(self) -> None:
        self.header_table_size = 4096
        self.initial_window_size = 65535
        self.max_frame_size = 16384
        self.max_concurrent_streams = 2**32 + 1  # unlimited until said (h2's convention)


class LeanStream:
    __slots__ = (
        "content_length",
        "head_request",
        "local_closed",
        "received",
        "recv_window",
        "remote_closed",
        "response_started",
        "send_window",
        "unacked",
    )  # fmt: skip

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.local_closed = False
        self.remote_closed = False
        self.response_started = False  # client side: a final (non-1xx) response head arrived
        self.head_request = False  # client side: the request was HEAD (its response has no content)
        self.content_length = -1  # what the received message's content-length says (-1: none)
        self.received = 0  # DATA octets received (padding excluded), checked against content_length
