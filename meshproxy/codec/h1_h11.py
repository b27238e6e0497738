"""The reference HTTP/1.1 codec: h11 behind the same interface as the httptools one.

h11 is strict and slow (about 6x the CPU of llhttp per request, bench/RESULTS.md); it is the oracle that the
fast codec is tested against and a fallback selected with MESHPROXY_HTTP1_PARSER=h11.
"""

from __future__ import annotations

from typing import Any

import h11

from meshproxy.codec.h1 import ProtocolError, body_kind_of
from meshproxy.core.events import END, BodyKind, Data, Event, Headers, RequestHead, ResponseHead, Upgraded

_MAX_HEAD = 64 * 1024


def _headers_of(event: Any) -> Headers:
    return [(name, value) for name, value in event.headers]


class _H11Codec:
    """What both h11 sides share: the event loop with h11's errors translated, bodies and `feed`."""

    __slots__ = ("_conn",)
    _conn: h11.Connection

    def _drain(self) -> list[Event]:
        conn = self._conn
        events: list[Event] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA or event is h11.PAUSED:
                self._on_pause(events)
                return events
            if isinstance(event, h11.Data):
                events.append(Data(bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                events.append(END)
            elif isinstance(event, h11.ConnectionClosed):
                return events
            else:
                self._on_head(event, events)

    def _on_head(self, event: Any, events: list[Event]) -> None:
        raise NotImplementedError

    def _on_pause(self, events: list[Event]) -> None:
        return None

    def feed(self, data: bytes) -> list[Event]:
        if self._conn.their_state is h11.SWITCHED_PROTOCOL:
            return [Upgraded(data)]
        self._conn.receive_data(data)
        return self._drain()


class H11ServerCodec(_H11Codec):
    __slots__ = ()

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)

    def _on_head(self, event: Any, events: list[Event]) -> None:
        if not isinstance(event, h11.Request):
            return
        headers = _headers_of(event)
        _reject_ambiguous_framing(headers)
        if event.http_version not in (b"1.0", b"1.1"):
            raise ProtocolError(f"unsupported HTTP version {event.http_version.decode()}")
        try:
            kind, length = body_kind_of(headers)
        except ValueError as exc:
            raise ProtocolError("invalid content-length") from exc
        upgrade = any(n == b"upgrade" for n, _ in headers) and any(
            n == b"connection" and b"upgrade" in v.lower() for n, v in headers
        )
        expect = any(n == b"expect" and v.lower() == b"100-continue" for n, v in headers)
        version = event.http_version.decode()
        keep_alive = h11._connection._keep_alive(event) if version == "1.1" else False
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
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return self._drain()
        return []

    def encode_response_head(self, head: ResponseHead) -> bytes:
        try:
            return self._conn.send(
                h11.Response(status_code=head.status, headers=head.headers, reason=head.reason)
            )
        except h11.LocalProtocolError as exc:  # pragma: no cover - our own framing bug
            raise ProtocolError(f"cannot encode response: {exc}") from exc

    def encode_data(self, data: bytes) -> bytes:
        if not data or _is_head(self._conn):
            return b""  # RFC 9110 §9.3.2: a response to HEAD has no content (h11 would raise)
        return self._conn.send(h11.Data(data=data))

    def encode_end(self) -> bytes:
        return self._conn.send(h11.EndOfMessage())

    def encode_informational(self, status: int, headers: Headers) -> bytes:
        return self._conn.send(h11.InformationalResponse(status_code=status, headers=headers))

    def upgrade_trailing(self) -> bytes:
        """Bytes received after an accepted Upgrade request, already part of the tunnel."""
        trailing, _ = self._conn.trailing_data
        return bytes(trailing)


class H11ClientCodec(_H11Codec):
    __slots__ = ()

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)

    def encode_request_head(self, head: RequestHead) -> bytes:
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        try:
            return conn.send(h11.Request(method=head.method, target=head.target, headers=head.headers))
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot encode request: {exc}") from exc

    def encode_data(self, data: bytes) -> bytes:
        return self._conn.send(h11.Data(data=data)) if data else b""

    def encode_end(self) -> bytes:
        return self._conn.send(h11.EndOfMessage())

    def _on_pause(self, events: list[Event]) -> None:
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:
            trailing, _ = conn.trailing_data
            events.append(Upgraded(bytes(trailing)))

    def _on_head(self, event: Any, events: list[Event]) -> None:
        conn = self._conn
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                events.append(
                    ResponseHead(101, b"Switching Protocols", _headers_of(event), "1.1", False, BodyKind.NONE)
                )
            return
        if isinstance(event, h11.Response):
            headers = _headers_of(event)
            _reject_ambiguous_framing(headers)
            kind, length = body_kind_of(headers)
            if event.status_code in (204, 304) or _is_head(conn):
                kind, length = BodyKind.NONE, -1
            elif kind is BodyKind.NONE:
                kind = BodyKind.UNTIL_CLOSE
            keep_alive = (
                kind is not BodyKind.UNTIL_CLOSE
                and event.http_version == b"1.1"
                and not any(n == b"connection" and b"close" in v.lower() for n, v in headers)
            )
            events.append(
                ResponseHead(
                    event.status_code,
                    bytes(event.reason),
                    headers,
                    event.http_version.decode(),
                    keep_alive,
                    kind,
                    length,
                )
            )

    def feed_eof(self) -> list[Event]:
        conn = self._conn
        if conn.their_state is h11.SWITCHED_PROTOCOL:
            return []
        conn.receive_data(b"")
        return self._drain()

    def reusable(self) -> bool:
        conn = self._conn
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def _reject_ambiguous_framing(headers: Headers) -> None:
    """RFC 9112 §6.3: Content-Length with Transfer-Encoding smuggles requests; Envoy and llhttp reject it."""
    names = {name for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise ProtocolError("both transfer-encoding and content-length")


def _is_head(conn: h11.Connection) -> bool:
    return bool(getattr(conn, "_request_method", None) == b"HEAD")
