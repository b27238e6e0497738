"""HTTP/1.1 codec interface: bytes in, events out; events in, bytes out. No I/O, no asyncio.

Two implementations sit behind it: `h1_httptools` (llhttp, the fast path) and `h1_h11` (the reference). The
connection manager and the upstream connections only ever see these events, so one component suite runs both.

Header lists are ``[(name, value), ...]`` of bytes with lower-case names, in arrival order.
"""

from __future__ import annotations

from mypy_extensions import trait

from meshproxy.core.events import BodyKind, EndOfMessage, Event, Headers, RequestHead, ResponseHead


class ProtocolError(Exception):
    """The peer sent bytes that are not valid HTTP/1.x (or we were asked to write such bytes).

    Downstream: a local reply with `status` (400, or 431 for a head over the limits) and a close; upstream: a
    reset. Raised when encoding, it means nothing was written for that event.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# Envoy's defaults for the HTTP connection manager's `max_request_headers_kb` and the HTTP protocol option
# `max_headers_count`; meshproxy's are the Settings fields of the same names (README "Limits").
MAX_HEADERS_KB = 60
MAX_HEADERS_COUNT = 100
# A head still incomplete after this many bytes beyond the limit is refused without waiting for its end:
# the limit counts names, values and the target, the raw head also has separators and padding.
HEAD_SLACK_BYTES = 16 * 1024
# RFC 9112 §6.2 puts no bound on Content-Length; we refuse what does not fit 63 bits (a signed 64-bit length).
MAX_CONTENT_LENGTH = (1 << 63) - 1


@trait
class ServerCodec:
    """The downstream side of a connection: parses requests, serialises responses.

    A mypyc trait, not a `typing.Protocol`: the connection manager's calls through it are direct calls in
    the compiled form (bench/RESULTS.md, "HTTP/1.1 small: what a profile still shows").
    """

    __slots__ = ()

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes; returns complete events in order. Raises ProtocolError on malformed input."""
        raise NotImplementedError

    def next_cycle(self) -> list[Event]:
        """The current response is complete: returns events of a pipelined request already received."""
        raise NotImplementedError

    def encode_response_head(self, head: ResponseHead) -> bytes:
        raise NotImplementedError

    def encode_data(self, data: bytes) -> bytes:
        raise NotImplementedError

    def encode_end(self) -> bytes:
        raise NotImplementedError

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        """A 1xx response (100 Continue, 101 Switching Protocols)."""
        raise NotImplementedError

    def upgrade_trailing(self) -> bytes:
        """Bytes the codec holds that arrived after an Upgrade request (they belong to the tunnel)."""
        raise NotImplementedError


@trait
class ClientCodec:
    """The upstream side of a connection: serialises requests, parses responses (a mypyc trait, as
    `ServerCodec`)."""

    __slots__ = ()

    def encode_request_head(self, head: RequestHead) -> bytes:
        raise NotImplementedError

    def encode_data(self, data: bytes) -> bytes:
        raise NotImplementedError

    def encode_end(self) -> bytes:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[Event]:
        """Parse response bytes. 1xx responses other than 101 are consumed silently."""
        raise NotImplementedError

    def feed_eof(self) -> list[Event]:
        """The peer closed. Ends an UNTIL_CLOSE body; raises ProtocolError if a message was cut short."""
        raise NotImplementedError

    def reusable(self) -> bool:
        """After a complete exchange: may this connection carry another request?"""
        raise NotImplementedError


def framing_of(name: bytes, value: bytes) -> tuple[BodyKind, int]:
    """The framing one `content-length` or `transfer-encoding` field gives a message (RFC 9112 §6.1-6.3).

    Only `chunked` is a transfer coding meshproxy can forward (h11 and Envoy accept no other either); anything
    else raises ProtocolError, as does a Content-Length that is not 1*DIGIT or exceeds 2^63 - 1.
    """
    if name == b"transfer-encoding":
        if value.strip(b" \t").lower() != b"chunked":
            raise ProtocolError(f"unsupported transfer-encoding {value[:40]!r}")
        return BodyKind.CHUNKED, -1
    if not value.isdigit():
        raise ProtocolError("invalid content-length")
    length = int(value)
    if length > MAX_CONTENT_LENGTH:
        raise ProtocolError("content-length out of range")
    return BodyKind.LENGTH, length


def body_kind_of(headers: Headers) -> tuple[BodyKind, int]:
    """Framing of a message from its headers, for a parser that already refused a message with both
    framings or repeated framing fields."""
    for name, value in headers:
        if name == b"transfer-encoding" or name == b"content-length":
            return framing_of(name, value)
    return BodyKind.NONE, -1


def head_size(target: str, headers: Headers) -> int:
    """What the header-size limit counts (as Envoy's header map byte size): target, names and values."""
    size = len(target)
    for name, value in headers:
        size += len(name) + len(value)
    return size


def keep_alive_of(headers: Headers, http_version: str) -> bool:
    """RFC 9112 §9.3: HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with `keep-alive`."""
    keep_alive = http_version == "1.1"
    for name, value in headers:
        if name == b"connection":
            tokens = [t.strip(b" \t") for t in value.lower().split(b",")]
            if b"close" in tokens:
                return False
            if b"keep-alive" in tokens:
                keep_alive = True
    return keep_alive


def until_last_message(events: list[Event], error: ProtocolError) -> list[Event]:
    """The events of the complete messages parsed before a protocol error, which is raised if there are none.

    A valid request followed in the same read by garbage is served before the garbage gets its 400 (Envoy
    does the same); the events of a message the error cut short are dropped with it.
    """
    for index in range(len(events) - 1, -1, -1):
        if isinstance(events[index], EndOfMessage):
            return events[: index + 1]
    raise error
