"""HTTP/1.1 codec interface: bytes in, events out; events in, bytes out. No I/O, no asyncio.

Two implementations sit behind it: `h1_httptools` (llhttp, the fast path) and `h1_h11` (the reference). The
connection manager and the upstream connections only ever see these events, so one component suite runs both.

Header lists are ``[(name, value), ...]`` of bytes with lower-case names, in arrival order.
"""

from __future__ import annotations

from typing import Protocol

from meshproxy.core.events import BodyKind, Event, Headers, RequestHead, ResponseHead


class ProtocolError(Exception):
    """The peer sent bytes that are not valid HTTP/1.x. Downstream: 400 and close; upstream: a reset."""


class ServerCodec(Protocol):
    """The downstream side of a connection: parses requests, serialises responses."""

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes; returns complete events in order. Raises ProtocolError on malformed input."""
        ...

    def next_cycle(self) -> list[Event]:
        """The current response is complete: returns events of a pipelined request already received."""
        ...

    def encode_response_head(self, head: ResponseHead) -> bytes: ...

    def encode_data(self, data: bytes) -> bytes: ...

    def encode_end(self) -> bytes: ...

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        """A 1xx response (100 Continue, 101 Switching Protocols)."""
        ...

    def upgrade_trailing(self) -> bytes:
        """Bytes the codec holds that arrived after an Upgrade request (they belong to the tunnel)."""
        ...


class ClientCodec(Protocol):
    """The upstream side of a connection: serialises requests, parses responses."""

    def encode_request_head(self, head: RequestHead) -> bytes: ...

    def encode_data(self, data: bytes) -> bytes: ...

    def encode_end(self) -> bytes: ...

    def feed(self, data: bytes) -> list[Event]:
        """Parse response bytes. 1xx responses other than 101 are consumed silently."""
        ...

    def feed_eof(self) -> list[Event]:
        """The peer closed. Ends an UNTIL_CLOSE body; raises ProtocolError if a message was cut short."""
        ...

    def reusable(self) -> bool:
        """After a complete exchange: may this connection carry another request?"""
        ...


def body_kind_of(headers: Headers) -> tuple[BodyKind, int]:
    """Framing of a message from its headers (RFC 9112 §6.3): chunked wins over Content-Length."""
    length = -1
    for name, value in headers:
        if name == b"transfer-encoding":
            if value.lower().rstrip().endswith(b"chunked"):
                return BodyKind.CHUNKED, -1
        elif name == b"content-length":
            length = int(value)
    if length >= 0:
        return BodyKind.LENGTH, length
    return BodyKind.NONE, -1
