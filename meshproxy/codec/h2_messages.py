"""HTTP/2 messages as the router's heads and back, so a request can cross from one protocol to the other in
either direction (RFC 9113 §8.2.2 connection-specific fields dropped, §8.2.3 cookies joined for HTTP/1.1,
`:authority` <-> `Host`). Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

from meshproxy.codec.headers import HOP_BY_HOP
from meshproxy.core.events import BodyKind, Headers, RequestHead, ResponseHead

# Header fields that never cross into an HTTP/2 message (RFC 9113 §8.2.2) or are rewritten by the proxy.
_NOT_FORWARDED_TO_H2: frozenset[bytes] = HOP_BY_HOP | {b"host", b"http2-settings", b"server"}
_PSEUDO = 0x3A  # ord(":")

GRPC_TE = (b"te", b"trailers")
SERVER_HEADER = (b"server", b"envoy")


def request_head_from_h2(raw: list[Any], stream_ended: bool) -> RequestHead | None:
    """An HTTP/2 request header block as the router's RequestHead (`:authority` becomes `Host`, cookies are
    joined); None if it is malformed (no :method or :path), a stream error (RFC 9113 §8.1.1)."""
    method = path = authority = None
    headers: Headers = []
    cookies: list[bytes] | None = None
    length = -1
    host: bytes | None = None
    for name, value in raw:
        if name[0] == _PSEUDO:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            if not value:
                continue  # an empty crumb would leave "; " dangling in the joined field (RFC 9113 §8.2.3)
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
            continue
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        elif name == b"host":
            host = value
            continue
        headers.append((name, value))
    if method is None or (path is None and method != b"CONNECT"):
        return None
    authority = authority or host
    if authority is not None:
        headers.insert(0, (b"host", authority))
    if cookies is not None:
        headers.append((b"cookie", b"; ".join(cookies)))
    if stream_ended:
        body = BodyKind.NONE
    elif length >= 0:
        body = BodyKind.LENGTH
    else:
        body = BodyKind.CHUNKED
    return RequestHead(
        method.decode("ascii", "replace"),
        (path or b"").decode("latin-1"),
        headers,
        "2",
        True,
        body,
        length,
    )


def h2_request_headers(head: RequestHead, authority: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """The router's upstream RequestHead as an HTTP/2 header block (`Host` becomes `:authority`)."""
    host = authority
    rest: list[tuple[bytes, bytes]] = []
    grpc = False
    for name, value in head.headers:
        if name in _NOT_FORWARDED_TO_H2:
            if name == b"host":
                host = value
            continue
        if name == b"content-type" and value.startswith(b"application/grpc"):
            grpc = True
        rest.append((name, value))
    headers = [
        (b":method", head.method.encode("ascii")),
        (b":scheme", b"http"),
        (b":authority", host or b"localhost"),
        (b":path", head.target.encode("latin-1")),
    ]
    headers += rest
    if grpc:
        headers.append(GRPC_TE)  # gRPC servers require `te: trailers` (the router drops TE as hop-by-hop)
    return headers


def response_head_from_h2(raw: list[Any], stream_ended: bool, head_request: bool) -> ResponseHead | None:
    """An HTTP/2 response header block as a ResponseHead; a body that ends with the headers gets
    `content-length: 0` so an HTTP/1.1 client sees it framed. None if `:status` is missing or invalid."""
    status = 0
    headers: Headers = []
    length = -1
    for name, value in raw:
        if name[0] == _PSEUDO:
            if name == b":status":
                try:
                    status = int(value)
                except ValueError:
                    return None
            continue
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
        headers.append((name, value))
    if status < 100:
        return None
    if head_request or status in (204, 304):
        body = BodyKind.NONE
    elif length >= 0:
        body = BodyKind.LENGTH
    elif stream_ended:
        body = BodyKind.LENGTH
        length = 0
        headers.append((b"content-length", b"0"))
    else:
        body = BodyKind.CHUNKED
    return ResponseHead(status, b"", headers, "2", True, body, length)


def h2_response_headers(head: ResponseHead, service_time_ms: int) -> list[tuple[bytes, bytes]]:
    """A ResponseHead as an HTTP/2 header block, with Envoy's `x-envoy-upstream-service-time` and `server`."""
    headers = [(b":status", b"%d" % head.status)]
    for name, value in head.headers:
        if name in _NOT_FORWARDED_TO_H2:
            continue
        headers.append((name, value))
    if service_time_ms >= 0:
        headers.append((b"x-envoy-upstream-service-time", b"%d" % service_time_ms))
    headers.append(SERVER_HEADER)
    return headers


def h2_trailers(trailers: Headers) -> list[tuple[bytes, bytes]]:
    """Trailers as relayed: pseudo-headers and connection-specific fields never appear in them."""
    return [(n, v) for n, v in trailers if n[0] != _PSEUDO and n not in _NOT_FORWARDED_TO_H2]


def h2c_upgrade_settings(head: RequestHead) -> bytes | None:
    """The `HTTP2-Settings` value of an `Upgrade: h2c` request the proxy will accept, else None (RFC 7540
    §3.2; removed from RFC 9113 but still sent by curl --http2 and some clients). Only requests without a body
    are upgraded; others are served over HTTP/1.1 (a server may ignore Upgrade)."""
    if not head.upgrade or head.body is not BodyKind.NONE:
        return None
    upgrade = settings = None
    for name, value in head.headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"http2-settings":
            settings = value
    if upgrade is None or settings is None or upgrade.strip().lower() != b"h2c":
        return None
    return settings
