"""The reference HTTP/1.1 codec: h11 behind the same interface as the httptools one.

h11 is strict and slow (about 6x the CPU of llhttp per request, bench/RESULTS.md); it is the oracle that the
fast codec is tested against and a fallback selected with MESHPROXY_HTTP1_PARSER=h11.

Both parsers must give the same verdict on every input, the stricter one winning (issue 11). h11 normalises
what it parses (repeated Content-Length fields merged, obs-fold joined, chunk extensions dropped), so the
rules where llhttp is stricter are checked here on the raw bytes of each head, chunk line and trailer
section, which this codec keeps a copy of until h11 has consumed them.
"""

from __future__ import annotations

import re
from typing import Any

import h11

from meshproxy.codec.h1 import (
    HEAD_SLACK_BYTES,
    MAX_HEADERS_COUNT,
    MAX_HEADERS_KB,
    ClientCodec,
    ProtocolError,
    ServerCodec,
    body_kind_of,
    head_size,
    keep_alive_of,
    until_last_message,
)
from meshproxy.codec.headers import valid_host
from meshproxy.core.events import END, BodyKind, Data, Event, Headers, RequestHead, ResponseHead, Upgraded

# What llhttp refuses anywhere in a head and h11 lets through: control characters other than HTAB (RFC 9110
# §5.5), a CR or LF that is not part of a CRLF (RFC 9112 §2.2 allows bare LF, llhttp and Envoy do not), and
# obs-fold (RFC 9112 §5.2: a proxy must reject or replace it; llhttp rejects).
_REFUSED_IN_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n|\n[ \t]")
_CONTENT_LENGTH_FIELD = re.compile(rb"\ncontent-length[ \t]*:([^\r]*)\r", re.IGNORECASE)
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
# RFC 9112 §7.1 chunk line as llhttp reads it: no whitespace, a size that fits 64 bits, token extensions.
_CHUNK_LINE = re.compile(
    rb"(?:\r?\n)?0*[0-9A-Fa-f]{1,16}(?:;" + _TCHAR + rb"+(?:=(?:" + _TCHAR + rb"*|" + _QUOTED + rb"))?)*\r\n"
)
_CRLF = b"\r\n"
_FRAMING_FIELDS = (b"content-length", b"transfer-encoding")


def _check_head(raw: bytes) -> None:
    """The raw head h11 just parsed: llhttp's stricter rules, and one Content-Length of digits only."""
    if _REFUSED_IN_HEAD.search(raw) is not None:
        raise ProtocolError("control character, bare CR or LF, or obs-fold in the head")
    lengths = _CONTENT_LENGTH_FIELD.findall(raw)
    if len(lengths) > 1:
        raise ProtocolError("repeated content-length")
    if lengths and not lengths[0].strip(b" \t").isdigit():
        raise ProtocolError("invalid content-length")


def _headers_of(event: Any) -> Headers:
    return [(name, value) for name, value in event.headers]


class _H11Codec:
    """What both h11 sides share: the event loop with h11's errors translated, the raw-byte checks, `feed`."""

    __slots__ = ("_chunked_in", "_conn", "_error", "_max_bytes", "_max_count", "_method", "_raw")
    _conn: h11.Connection

    def __init__(
        self, role: type[h11.CLIENT] | type[h11.SERVER], max_headers_kb: int, max_headers_count: int
    ) -> None:
        self._max_bytes = max_headers_kb * 1024
        self._max_count = max_headers_count
        self._conn = h11.Connection(role, max_incomplete_event_size=self._max_bytes + HEAD_SLACK_BYTES)
        self._raw = bytearray()  # bytes given to h11 and not yet consumed by an event
        self._chunked_in = False  # the message being received is chunked
        self._method = b""  # of the request being answered (a response to HEAD has no body)
        self._error: ProtocolError | None = None

    def _consumed(self) -> bytes:
        """The raw bytes h11 consumed for the event it just returned."""
        raw = self._raw
        used = len(raw) - len(self._conn.trailing_data[0])
        piece = bytes(raw[:used])
        del raw[:used]
        return piece

    def _drain(self) -> list[Event]:
        conn = self._conn
        events: list[Event] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                return self._failed(events, ProtocolError(str(exc), status))
            if event is h11.NEED_DATA or event is h11.PAUSED:
                self._on_pause(events)
                return events
            piece = self._consumed()
            try:
                if isinstance(event, h11.Data):
                    if self._chunked_in and event.chunk_start and _CHUNK_LINE.match(piece) is None:
                        raise ProtocolError("invalid chunk line")
                    # h11 hands over a bytearray where its stubs say bytes: read it untyped, or the compiled
                    # form would check it for bytes
                    received: Any = event
                    events.append(Data(bytes(received.data)))
                elif isinstance(event, h11.EndOfMessage):
                    if self._chunked_in:
                        self._check_last_chunk(piece, event)
                    events.append(END)
                elif isinstance(event, h11.ConnectionClosed):
                    return events
                else:
                    self._on_head(event, piece, events)
            except ProtocolError as error:
                return self._failed(events, error)

    def _check_last_chunk(self, piece: bytes, event: Any) -> None:
        line_end = piece.find(_CRLF, 1) + 2
        if _CHUNK_LINE.match(piece[:line_end]) is None:
            raise ProtocolError("invalid last chunk line")
        if _REFUSED_IN_HEAD.search(piece, line_end - 1) is not None:
            raise ProtocolError("control character, bare CR or LF, or obs-fold in the trailers")
        if len(event.headers) > self._max_count:
            raise ProtocolError("too many trailer fields", 431)
        if any(name in _FRAMING_FIELDS for name, _ in event.headers):
            # RFC 9110 §6.5.1: framing is never sent as a trailer; llhttp refuses it, and so do we
            raise ProtocolError("content-length or transfer-encoding in the trailers")

    def _failed(self, events: list[Event], error: ProtocolError) -> list[Event]:
        """Complete messages before the error are delivered; the error comes after them (`next_cycle`)."""
        kept = until_last_message(events, error)
        self._error = error
        return kept

    def _check_fields(self, raw: bytes, target: bytes, headers: Headers) -> None:
        _check_head(raw)
        if len(headers) > self._max_count:
            raise ProtocolError("headers count exceeds limit", 431)
        if head_size(target.decode("latin-1"), headers) > self._max_bytes:
            raise ProtocolError("headers size exceeds limit", 431)

    def _on_head(self, event: Any, raw: bytes, events: list[Event]) -> None:
        raise NotImplementedError

    def _on_pause(self, events: list[Event]) -> None:
        return None

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            return []  # the connection closes once what came before the error is answered
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:
            return [Upgraded(data)]
        if conn.their_state is h11.IDLE and not self._raw:
            data = data.lstrip(b"\r\n")  # RFC 9112 §2.2: empty lines before a request line are ignored
            if not data:
                return []
        self._raw += data
        conn.receive_data(data)
        return self._drain()


class H11ServerCodec(_H11Codec, ServerCodec):
    __slots__ = ()

    def __init__(
        self, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
    ) -> None:
        """Limits as `HttptoolsServerCodec`: beyond either, the request gets 431."""
        super().__init__(h11.SERVER, max_headers_kb, max_headers_count)

    def _on_head(self, event: Any, raw: bytes, events: list[Event]) -> None:
        if not isinstance(event, h11.Request):
            return
        headers = _headers_of(event)
        self._check_fields(raw, event.target, headers)
        _reject_ambiguous_framing(headers)
        if event.http_version not in (b"1.0", b"1.1"):
            raise ProtocolError(f"unsupported HTTP version {event.http_version.decode()}")
        if b"#" in event.target:
            raise ProtocolError("fragment in the request target")  # RFC 9112 §3.2
        kind, length = body_kind_of(headers)
        version = event.http_version.decode()
        if kind is BodyKind.CHUNKED and version == "1.0":
            raise ProtocolError("transfer-encoding in an HTTP/1.0 request")  # RFC 9112 §6.1
        if event.method == b"CONNECT":
            raise ProtocolError("CONNECT is not proxied")  # as httptools' codec, see there
        if not all(valid_host(v) for n, v in headers if n == b"host"):
            raise ProtocolError("Host is not a valid authority")
        upgrade = any(n == b"upgrade" for n, _ in headers) and any(
            n == b"connection" and b"upgrade" in v.lower() for n, v in headers
        )
        expect = any(n == b"expect" and v.lower() == b"100-continue" for n, v in headers)
        # h11 always closes after an HTTP/1.0 exchange, so only HTTP/1.1 may keep the connection here.
        keep_alive = keep_alive_of(headers, version) if version == "1.1" else False
        self._chunked_in = kind is BodyKind.CHUNKED
        self._method = bytes(event.method)
        events.append(
            RequestHead(
                event.method.decode("ascii"),
                event.target.decode("latin-1"),
                headers,
                version,
                keep_alive,
                kind,
                length,
                upgrade,
                expect,
            )
        )

    def next_cycle(self) -> list[Event]:
        error = self._error
        if error is not None:
            raise error
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            pending, _ = conn.trailing_data
            if pending[:1] in (b"\r", b"\n"):
                # RFC 9112 §2.2: empty lines before the next request line (h11 would call them an error)
                self._conn = h11.Connection(
                    h11.SERVER, max_incomplete_event_size=self._max_bytes + HEAD_SLACK_BYTES
                )
                self._raw = bytearray()
                return self.feed(pending)
            return self._drain()
        return []

    def encode_response_head(self, head: ResponseHead) -> bytes:
        try:
            response = h11.Response(status_code=head.status, headers=head.headers, reason=head.reason)
            return self._conn.send(response)
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot encode response: {exc}") from exc

    def encode_data(self, data: bytes) -> bytes:
        if not data or self._method == b"HEAD":
            return b""  # RFC 9110 §9.3.2: a response to HEAD has no content (h11 would raise)
        try:
            return self._conn.send(h11.Data(data=data))
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot encode response body: {exc}") from exc

    def encode_end(self) -> bytes:
        try:
            return self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot end the response: {exc}") from exc

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        try:
            return self._conn.send(h11.InformationalResponse(status_code=status, headers=headers))
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot encode response: {exc}") from exc

    def upgrade_trailing(self) -> bytes:
        """Bytes received after an accepted Upgrade request, already part of the tunnel."""
        trailing, _ = self._conn.trailing_data
        return bytes(trailing)


class H11ClientCodec(_H11Codec, ClientCodec):
    __slots__ = ()

    def __init__(
        self, max_headers_kb: int = MAX_HEADERS_KB, max_headers_count: int = MAX_HEADERS_COUNT
    ) -> None:
        """The limits bound a response head as they bound requests (Envoy's `max_headers_count` does)."""
        super().__init__(h11.CLIENT, max_headers_kb, max_headers_count)

    def encode_request_head(self, head: RequestHead) -> bytes:
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        try:
            method, target = head.method.encode("ascii"), head.target.encode("latin-1")
            request = h11.Request(method=method, target=target, headers=head.headers)
            out = conn.send(request)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise ProtocolError(f"cannot encode request: {exc}") from exc
        self._method = request.method
        return out

    def encode_data(self, data: bytes) -> bytes:
        if not data:
            return b""
        try:
            return self._conn.send(h11.Data(data=data))
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot encode request body: {exc}") from exc

    def encode_end(self) -> bytes:
        try:
            return self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot end the request: {exc}") from exc

    def _on_pause(self, events: list[Event]) -> None:
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:
            trailing, _ = conn.trailing_data
            events.append(Upgraded(bytes(trailing)))

    def _on_head(self, event: Any, raw: bytes, events: list[Event]) -> None:
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                events.append(
                    ResponseHead(101, b"Switching Protocols", _headers_of(event), "1.1", False, BodyKind.NONE)
                )
            return
        if isinstance(event, h11.Response):
            headers = _headers_of(event)
            self._check_fields(raw, b"", headers)
            _reject_ambiguous_framing(headers)
            kind, length = body_kind_of(headers)
            if kind is BodyKind.CHUNKED and event.http_version == b"1.0":
                raise ProtocolError("transfer-encoding in an HTTP/1.0 response")  # RFC 9112 §6.1
            self._chunked_in = kind is BodyKind.CHUNKED
            if event.status_code in (204, 304) or self._method == b"HEAD":
                kind, length = BodyKind.NONE, -1
            elif kind is BodyKind.NONE:
                kind = BodyKind.UNTIL_CLOSE
            keep_alive = kind is not BodyKind.UNTIL_CLOSE and keep_alive_of(
                headers, event.http_version.decode()
            )
            events.append(
                ResponseHead(
                    event.status_code,
                    bytes(event.reason),
                    headers,
                    event.http_version.decode(),
                    keep_alive and event.http_version == b"1.1",
                    kind,
                    length,
                )
            )

    def feed(self, data: bytes) -> list[Event]:
        error = self._error
        if error is not None:
            raise error
        return super().feed(data)

    def feed_eof(self) -> list[Event]:
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:
            return []
        conn.receive_data(b"")
        return self._drain()

    def reusable(self) -> bool:
        conn = self._conn
        # Bytes after the response (a response to no request) make the connection unusable: they would be
        # read as the answer to the next request.
        return (
            self._error is None
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not self._raw
        )


def _reject_ambiguous_framing(headers: Headers) -> None:
    """RFC 9112 §6.3: Content-Length with Transfer-Encoding smuggles requests; Envoy and llhttp reject it."""
    names = {name for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise ProtocolError("both transfer-encoding and content-length")
