"""The fast HTTP/1.1 codec: llhttp through httptools for parsing, hand-written serialisation.

Parsing is driven by llhttp callbacks that append events to a list; serialisation builds each head with one
`b"".join`. Chunked bodies are decoded on the way in and re-encoded on the way out (as Envoy does), so the two
sides of a proxied message can frame differently (an HTTP/1.0 close-delimited response goes on chunked).
"""

from __future__ import annotations

import httptools

from meshproxy.codec.h1 import (
    HEAD_SLACK_BYTES,
    MAX_HEADERS_COUNT,
    MAX_HEADERS_KB,
    ClientCodec,
    ProtocolError,
    ServerCodec,
    body_kind_of,
    framing_of,
    head_size,
    until_last_message,
)
from meshproxy.codec.h1_request_line import (
    MAX_METHOD,
    STAND_IN_METHOD,
    TOKEN,
    message_end,
    pipelined_lines_ok,
    request_line_ok,
)
from meshproxy.codec.h1_wire import LAST_CHUNK, encode_chunk, encode_headers, reason_phrase, request_line
from meshproxy.codec.headers import valid_host
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


def _extra_spaces() -> ProtocolError:
    return ProtocolError("more than one space between the parts of the request line (RFC 9112 §3)")


class _HeadDone(Exception):
    """Raised from a parser callback to stop llhttp after the head of a response to HEAD."""


class HttptoolsServerCodec(ServerCodec):
    """Downstream codec. Pipelined requests are parsed as they arrive; the connection manager queues them.

    llhttp validates the bytes (RFC 9112 grammar, framing, control characters); this class adds what llhttp
    leaves to its user, at a cost paid once per head rather than per field: the size and count limits
    (431), Host (RFC 9112 §3.2), the target's form, HTTP/1.0 with Transfer-Encoding (§6.1), methods llhttp
    does not know (any RFC 9110 token is a method), and serving complete requests that precede garbage.
    """

    __slots__ = (
        "_chunked_out",
        "_custom_method",
        "_error",
        "_events",
        "_feed_len",
        "_head_requests",
        "_head_upper",
        "_headers",
        "_idle",
        "_max_bytes",
        "_max_count",
        "_max_quiet",
        "_no_body",
        "_parser",
        "_pending",
        "_quiet",
        "_replay",
        "_trailers",
        "_url",
    )

    def __init__(
        self, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
    ) -> None:
        """`max_headers_kb` bounds a request head (target, names and values, as Envoy's
        `max_request_headers_kb`); `max_headers_count` its fields (Envoy's `max_headers_count`); beyond
        either the request gets 431."""
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._url = b""
        self._headers: Headers = []
        self._trailers: Headers | None = None  # a list once the head is complete: later fields are trailers
        self._chunked_out = False
        # per parsed request not yet answered, in order: was it HEAD? (a list: rarely more than one entry, and
        # an empty deque costs 600 bytes per connection)
        self._head_requests: list[bool] = []
        self._no_body = False  # the response being encoded answers a HEAD request
        self._max_bytes = max_headers_kb * 1024
        self._max_count = max_headers_count
        self._max_quiet = self._max_bytes + HEAD_SLACK_BYTES
        self._quiet = 0  # bytes fed since the last read that gave an event (a head or trailers in progress)
        self._feed_len = 0
        self._head_upper = 0  # an upper bound of the current head's raw size
        self._idle = True  # between two requests
        self._custom_method: str | None = None
        self._replay: bytes | None = None  # this request's bytes so far, while it has given no event
        self._pending = b""  # the start of a request whose unknown method has not fully arrived
        self._error: ProtocolError | None = (
            None  # raised by next_cycle once the requests before it are served
        )

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._trailers = None
        self._idle = False
        self._head_upper = self._feed_len

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        trailers = self._trailers
        if trailers is None:
            self._headers.append((name.lower(), value))
        else:
            if len(trailers) >= self._max_count:
                raise ProtocolError("too many trailer fields", 431)
            trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        url = self._url
        self._trailers = []
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise ProtocolError(f"unsupported HTTP version {version}")
        if len(headers) > self._max_count:
            raise ProtocolError("headers count exceeds limit", 431)
        target = url.decode("latin-1")
        # The raw head can only exceed the limit if this many bytes arrived while it was parsed.
        upper = self._head_upper + self._quiet + self._feed_len
        if upper > self._max_bytes and head_size(target, headers) > self._max_bytes:
            raise ProtocolError("headers size exceeds limit", 431)
        if url.find(b"#") >= 0:  # not `in`: see ARCHITECTURE.md, "bytes in bytes"
            raise ProtocolError("fragment in the request target")  # RFC 9112 §3.2: never sent on the wire
        kind = BodyKind.NONE
        length = -1
        expect = False
        hosts = 0
        for name, value in headers:
            if name == b"host":
                hosts += 1
                if not valid_host(value):
                    raise ProtocolError("Host is not a valid authority")
            elif name == b"content-length" or name == b"transfer-encoding":
                kind, length = framing_of(name, value)
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        if hosts != 1 and (hosts or version == "1.1"):
            # RFC 9112 §3.2: exactly one Host in HTTP/1.1 (h11 and Envoy answer 400 otherwise)
            raise ProtocolError("missing or repeated Host")
        if kind is BodyKind.CHUNKED and version == "1.0":
            raise ProtocolError("transfer-encoding in an HTTP/1.0 request")  # RFC 9112 §6.1
        method = self._custom_method
        if method is None:
            method = parser.get_method().decode("ascii")
        else:
            self._custom_method = None
        upgrade = parser.should_upgrade()
        if upgrade and method == "CONNECT":
            # RFC 9110 §9.3.6 tunnels are not part of App Mesh's HTTP routes: refused as Envoy does without a
            # CONNECT upgrade config.
            raise ProtocolError("CONNECT is not proxied")
        self._head_requests.append(method == "HEAD")
        self._events.append(
            RequestHead(
                method,
                target,
                headers,
                version,
                parser.should_keep_alive() and version == "1.1",  # h11 never keeps HTTP/1.0 open
                kind,
                length,
                upgrade,
                expect,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        # HTTP/1.1 trailers are parsed apart from the head (never merged into it) and not forwarded, as
        # Envoy does by default.
        self._idle = True
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END)

    # codec interface
    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            return []  # the connection closes once the requests before the error are answered
        if self._pending:
            data = self._pending + data
            self._pending = b""
        events = self._events = []
        self._feed_len = len(data)
        idle = self._idle
        replay = self._replay
        if idle and not request_line_ok(data):
            return self._failed(_extra_spaces())
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append(Upgraded(data[exc.args[0] :]))
        except httptools.HttpParserInvalidMethodError as exc:
            return self._unknown_method(data, idle, ProtocolError(str(exc) or "invalid method"))
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if not isinstance(error, ProtocolError):
                error = ProtocolError(str(error or exc))
            return self._failed(error)
        except httptools.HttpParserError as exc:
            return self._failed(ProtocolError(str(exc) or type(exc).__name__))
        if events:
            if self._quiet:
                self._quiet = 0
                self._replay = None
            if not idle and replay is not None and not request_line_ok(replay + data):
                return self._failed(_extra_spaces(), keep=0)  # a request line that came in several reads
            if data.find(b"  ") >= 0:
                return self._check_pipelined(data if idle else None)
        else:
            # Nothing complete came of these bytes: a head (or trailers) in progress. Keep them while they may
            # be the start of a request with an unknown method, and stop at the size limit.
            if idle:
                self._replay = data
            elif self._replay is not None:
                self._replay += data
            self._quiet += len(data)
            if self._quiet > self._max_quiet:
                return self._failed(
                    ProtocolError("headers size exceeds limit", 431 if self._trailers is None else 400)
                )
        return events

    def _failed(self, error: ProtocolError, keep: int | None = None) -> list[Event]:
        """The complete requests before the error are served (`keep` of them, when known), then 400."""
        events = self._events
        if keep is not None:
            heads = [i for i, event in enumerate(events) if isinstance(event, RequestHead)]
            events = events[: heads[keep]] if keep < len(heads) else events
        events = until_last_message(events, error)
        self._error = error
        return events

    def _check_pipelined(self, data: bytes | None) -> list[Event]:
        """Requests pipelined in one read: each request line is checked like the first one."""
        events = self._events
        heads = sum(1 for e in events if isinstance(e, RequestHead))
        if heads < 2 or data is None:
            return events
        good = pipelined_lines_ok(data, heads)
        return events if good == heads else self._failed(_extra_spaces(), keep=good)

    def _unknown_method(self, data: bytes, idle: bool, error: ProtocolError) -> list[Event]:
        """llhttp knows a fixed list of methods; RFC 9110 §9.1 allows any token. Show llhttp a stand-in and
        report the real method. Only possible where the request starts is known: at the start of this read, or
        after requests that all began in it."""
        events = self._events
        replay = self._replay
        if not idle and replay is not None and not events:
            data, idle = replay + data, True  # the request began in earlier reads that gave no event
        if not idle:
            return self._failed(error)  # where the failing request starts is unknown: serve the complete ones
        complete = sum(1 for e in events if isinstance(e, EndOfMessage))
        start = message_end(data, complete) if complete else 0
        rest = data[start:].lstrip(b"\r\n")  # RFC 9112 §2.2: empty lines before a request line
        space = rest.find(b" ", 0, MAX_METHOD + 1)
        method = rest[:space] if space > 0 else rest[: MAX_METHOD + 1]
        if not TOKEN.fullmatch(method) or (space < 0 and len(rest) > MAX_METHOD):
            return self._failed(error)
        self._parser = httptools.HttpRequestParser(self)
        self._idle = True
        self._replay = None
        self._quiet = 0
        if space < 0:
            self._pending = rest  # the method is not complete yet
            self._events = []
            return events
        self._custom_method = method.decode("ascii")
        later = self.feed(STAND_IN_METHOD + rest[space:])
        return events + later

    def next_cycle(self) -> list[Event]:
        error = self._error
        if error is not None:
            raise error
        return []

    def encode_response_head(self, head: ResponseHead) -> bytes:
        out = encode_headers(b"HTTP/1.1 %d %b\r\n" % (head.status, head.reason), head.headers)
        # RFC 9110 §9.3.2: a response to HEAD has no content, whatever the caller hands us.
        self._no_body = self._head_requests.pop(0) if self._head_requests else False
        self._chunked_out = head.body is BodyKind.CHUNKED and not self._no_body
        return out

    def encode_data(self, data: bytes) -> bytes:
        if self._no_body:
            return b""
        return encode_chunk(data) if self._chunked_out else data

    def encode_end(self) -> bytes:
        if self._chunked_out:
            self._chunked_out = False
            return LAST_CHUNK
        return b""

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        reason = (
            b"Continue" if status == 100 else b"Switching Protocols" if status == 101 else b"Informational"
        )
        return encode_headers(b"HTTP/1.1 %d %b\r\n" % (status, reason), headers)

    def upgrade_trailing(self) -> bytes:
        return b""  # llhttp hands them over in the Upgraded event


class HttptoolsClientCodec(ClientCodec):
    """Upstream codec: one request at a time on a connection (HTTP/1.1 without pipelining, as Envoy).

    A response nobody asked for (bytes after the response, e.g. to a request the upstream saw twice) makes
    the connection unusable: it is never handed to the next request."""

    __slots__ = (
        "_chunked_out",
        "_error",
        "_events",
        "_expecting",
        "_head_request",
        "_headers",
        "_in_message",
        "_max_count",
        "_max_quiet",
        "_parser",
        "_quiet",
        "_reusable",
        "_trailers",
        "_until_close",
    )  # fmt: skip

    def __init__(
        self, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
    ) -> None:
        """The limits bound a response head as they bound requests (Envoy's `max_headers_count` does)."""
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers | None = None
        self._head_request = False
        self._chunked_out = False
        self._until_close = False
        self._reusable = True
        self._in_message = False
        self._expecting = False  # a request was sent and its final response has not ended
        self._max_count = max_headers_count
        self._max_quiet = max_headers_kb * 1024 + HEAD_SLACK_BYTES
        self._quiet = 0
        self._error: ProtocolError | None = None

    # llhttp callbacks
    def on_message_begin(self) -> None:
        if not self._expecting:
            raise ProtocolError("a response to no request")
        self._headers = []
        self._trailers = None
        self._in_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._headers if self._trailers is None else self._trailers
        if len(fields) >= self._max_count:
            raise ProtocolError("headers count exceeds limit")
        fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        self._trailers = []
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue / 103 Early Hints: consumed here (Envoy does not proxy 100-continue)
        keep_alive = parser.should_keep_alive()
        version = parser.get_http_version()
        if status == 101:
            self._events.append(
                ResponseHead(status, b"Switching Protocols", headers, "1.1", False, BodyKind.NONE)
            )
            return
        if self._head_request or status in (204, 304):
            kind, length = BodyKind.NONE, -1
        else:
            kind, length = body_kind_of(headers)
            if kind is BodyKind.CHUNKED and version == "1.0":
                raise ProtocolError("transfer-encoding in an HTTP/1.0 response")  # RFC 9112 §6.1
            if kind is BodyKind.NONE:
                kind = BodyKind.UNTIL_CLOSE
                keep_alive = False
        self._until_close = kind is BodyKind.UNTIL_CLOSE
        self._reusable = keep_alive
        self._events.append(
            ResponseHead(status, reason_phrase(status), headers, version, keep_alive, kind, length)
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
        self._expecting = False
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END)

    # codec interface
    def encode_request_head(self, head: RequestHead) -> bytes:
        out = encode_headers(request_line(head), head.headers)
        self._head_request = head.method == "HEAD"
        self._chunked_out = head.body is BodyKind.CHUNKED
        self._expecting = True
        return out

    def encode_data(self, data: bytes) -> bytes:
        return encode_chunk(data) if self._chunked_out else data

    def encode_end(self) -> bytes:
        if self._chunked_out:
            self._chunked_out = False
            return LAST_CHUNK
        return b""

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append(Upgraded(data[exc.args[0] :]))
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if isinstance(error, _HeadDone):
                # the parser is mid-message (it expects a body that HEAD responses never carry): start afresh
                self._parser = httptools.HttpResponseParser(self)
                self._in_message = False
                self._expecting = False
                return events
            return self._failed(
                error if isinstance(error, ProtocolError) else ProtocolError(str(error or exc))
            )
        except httptools.HttpParserError as exc:
            return self._failed(ProtocolError(str(exc) or type(exc).__name__))
        if events:
            if self._quiet:
                self._quiet = 0
        else:
            self._quiet += len(data)
            if self._quiet > self._max_quiet:
                return self._failed(ProtocolError("response headers size exceeds limit"))
        return events

    def _failed(self, error: ProtocolError) -> list[Event]:
        """A complete response before the error is still delivered; the connection is not used again."""
        self._reusable = False
        events = until_last_message(self._events, error)
        self._error = error
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
