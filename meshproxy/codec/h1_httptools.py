"""The fast HTTP/1.1 codec: llhttp through httptools for parsing, hand-written serialisation.

Parsing is driven by llhttp callbacks that append events to a list; serialisation builds each head with one
`b"".join`. Chunked bodies are decoded on the way in and re-encoded on the way out (as Envoy does), so the two
sides of a proxied message can frame differently (an HTTP/1.0 close-delimited response goes on chunked).
"""

from __future__ import annotations

from collections import deque

import httptools

from meshproxy.codec.h1 import ProtocolError, body_kind_of
from meshproxy.core.events import (
    END,
    BodyKind,
    Data,
    EndOfMessage,
    Event,
    Headers,
    RequestHead,
    ResponseHead,
    Upgraded,
)

_CRLF = b"\r\n"
_SEP = b": "


def encode_headers(first_line: bytes, headers: Headers) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts += (name, _SEP, value, _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


_LAST_CHUNK = b"0\r\n\r\n"


class _HeadDone(Exception):
    """Raised from a parser callback to stop llhttp after the head of a response to HEAD."""


class HttptoolsServerCodec:
    """Downstream codec. Pipelined requests are parsed as they arrive; the connection manager queues them."""

    __slots__ = (
        "_chunked_out",
        "_events",
        "_head_requests",
        "_headers",
        "_no_body",
        "_parser",
        "_trailers",
        "_url",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._url = b""
        self._headers: Headers = []
        self._trailers: Headers | None = None  # a list once the head is complete: later fields are trailers
        self._chunked_out = False
        self._head_requests: deque[bool] = deque()  # per parsed request, in order: was it HEAD?
        self._no_body = False  # the response being encoded answers a HEAD request

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._trailers = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is None:
            self._headers.append((name.lower(), value))
        else:
            self._trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        self._trailers = []
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise ProtocolError(f"unsupported HTTP version {version}")
        try:
            kind, length = body_kind_of(headers)
        except ValueError as exc:
            raise ProtocolError("invalid content-length") from exc
        expect = False
        for name, value in headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
        method = parser.get_method().decode("ascii")
        self._head_requests.append(method == "HEAD")
        self._events.append(
            RequestHead(
                method,
                self._url.decode("latin-1"),
                headers,
                version,
                parser.should_keep_alive(),
                kind,
                length,
                parser.should_upgrade(),
                expect,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        # HTTP/1.1 trailers are parsed apart from the head (never merged into it) and not forwarded, as
        # Envoy does by default.
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END)

    # codec interface
    def feed(self, data: bytes) -> list[Event]:
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append(Upgraded(data[exc.args[0] :]))
        except httptools.HttpParserError as exc:
            raise ProtocolError(str(exc) or type(exc).__name__) from exc
        return events

    def next_cycle(self) -> list[Event]:
        return []

    def encode_response_head(self, head: ResponseHead) -> bytes:
        # RFC 9110 §9.3.2: a response to HEAD has no content, whatever the caller hands us.
        self._no_body = self._head_requests.popleft() if self._head_requests else False
        self._chunked_out = head.body is BodyKind.CHUNKED and not self._no_body
        return encode_headers(b"HTTP/1.1 %d %b\r\n" % (head.status, head.reason), head.headers)

    def encode_data(self, data: bytes) -> bytes:
        if self._no_body:
            return b""
        return encode_chunk(data) if self._chunked_out else data

    def encode_end(self) -> bytes:
        if self._chunked_out:
            self._chunked_out = False
            return _LAST_CHUNK
        return b""

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        reason = (
            b"Continue" if status == 100 else b"Switching Protocols" if status == 101 else b"Informational"
        )
        return encode_headers(b"HTTP/1.1 %d %b\r\n" % (status, reason), headers)

    def upgrade_trailing(self) -> bytes:
        return b""  # llhttp hands them over in the Upgraded event


class HttptoolsClientCodec:
    """Upstream codec: one request at a time on a connection (HTTP/1.1 without pipelining, as Envoy)."""

    __slots__ = (
        "_chunked_out",
        "_events",
        "_head_request",
        "_headers",
        "_in_message",
        "_parser",
        "_reusable",
        "_trailers",
        "_until_close",
    )  # fmt: skip

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers | None = None
        self._head_request = False
        self._chunked_out = False
        self._until_close = False
        self._reusable = True
        self._in_message = False

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = None
        self._in_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is None:
            self._headers.append((name.lower(), value))
        else:
            self._trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        self._trailers = []
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue / 103 Early Hints: consumed here (Envoy does not proxy 100-continue)
        keep_alive = parser.should_keep_alive()
        if status == 101:
            self._events.append(
                ResponseHead(status, b"Switching Protocols", headers, "1.1", False, BodyKind.NONE)
            )
            return
        if self._head_request or status in (204, 304):
            kind, length = BodyKind.NONE, -1
        else:
            try:
                kind, length = body_kind_of(headers)
            except ValueError as exc:
                raise ProtocolError("invalid content-length") from exc
            if kind is BodyKind.NONE:
                kind = BodyKind.UNTIL_CLOSE
                keep_alive = False
        self._until_close = kind is BodyKind.UNTIL_CLOSE
        self._reusable = keep_alive
        self._events.append(
            ResponseHead(
                status, _reason_of(status), headers, parser.get_http_version(), keep_alive, kind, length
            )
        )
        if self._head_request:
            self._events.append(END)
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return  # 1xx: swallowed, or 101 whose "body" is the tunnel (reported as Upgraded)
        self._in_message = False
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END)

    # codec interface
    def encode_request_head(self, head: RequestHead) -> bytes:
        self._head_request = head.method == "HEAD"
        self._chunked_out = head.body is BodyKind.CHUNKED
        return encode_headers(
            b"%b %b HTTP/1.1\r\n" % (head.method.encode(), head.target.encode()), head.headers
        )

    def encode_data(self, data: bytes) -> bytes:
        return encode_chunk(data) if self._chunked_out else data

    def encode_end(self) -> bytes:
        if self._chunked_out:
            self._chunked_out = False
            return _LAST_CHUNK
        return b""

    def feed(self, data: bytes) -> list[Event]:
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append(Upgraded(data[exc.args[0] :]))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadDone):
                # the parser is mid-message (it expects a body that HEAD responses never carry): start afresh
                self._parser = httptools.HttpResponseParser(self)
                self._in_message = False
                return events
            raise ProtocolError(str(exc.__context__ or exc)) from exc
        except httptools.HttpParserError as exc:
            raise ProtocolError(str(exc) or type(exc).__name__) from exc
        return events

    def feed_eof(self) -> list[Event]:
        if self._in_message:
            if self._until_close:
                self._in_message = False
                self._reusable = False
                return [EndOfMessage()]
            raise ProtocolError("upstream closed mid-response")
        return []

    def reusable(self) -> bool:
        return self._reusable


_REASONS = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large",
    429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip


def _reason_of(status: int) -> bytes:
    # Envoy does not keep the upstream reason phrase either: it writes the standard one for the code.
    return _REASONS.get(status, b"Unknown")


def reason_phrase(status: int) -> bytes:
    return _reason_of(status)
