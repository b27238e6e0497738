"""HTTP/2 message rules (RFC 9113 §8): is a received header block well-formed, and within the proxy's limits?

Both HTTP/2 codecs (the lean frame layer and the h2 library, whose own `validate_inbound_headers` is a
per-character Python loop costing more than the rest of a request) call these checks on every header block
they receive, so the two give the same verdict. A block that fails is never handed to the connection manager
or the pool: the codec resets that stream (a stream error, RFC 9113 §8.1.1) and the proxy forwards nothing of
it. What is checked is what keeps a request from changing meaning on its way to an HTTP/1.1 upstream:

- field names: non-empty, lower-case RFC 9110 tokens (§8.2.1 forbids upper case, controls, SP, ":");
- field values: no NUL, CR, LF or other control character but HTAB, no leading or trailing SP / HTAB (§8.2.1;
  the other controls are rejected as nghttp2 and meshproxy's HTTP/1.1 parsers do);
- connection-specific fields (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
  `upgrade`) and `te` other than `trailers` (§8.2.2);
- pseudo-headers: only the defined ones, before every regular field, never repeated, request ones in
  requests and `:status` in responses, none in trailers; a request has `:method`, and `:scheme` and a
  `:path` starting with "/" (or "*" for OPTIONS) unless it is a CONNECT (§8.3.1); `:protocol` only in an
  extended CONNECT (RFC 8441 §4), which the connection manager answers 501 without forwarding it (the
  proxy never sends SETTINGS_ENABLE_CONNECT_PROTOCOL; the 501 says why, where a reset would not);
- `:path` and `:authority` / `host` hold only URI characters (no SP, no "#" fragment, no userinfo), and a
  `host` that differs from `:authority` makes the request malformed (§8.3.1);
- `content-length`: one field of 1 to 18 digits (RFC 9110 §8.6; the codecs then check the DATA frames sum
  to it, §8.1.1).

Limits (Envoy's `max_request_headers_kb` 60 and `max_headers_count` 100, counted as Envoy counts: every
field, pseudo-headers included, and the bytes of names and values) are a stream error of type
ENHANCE_YOUR_CALM: Envoy resets such a stream too (nghttp2 with INTERNAL_ERROR); ENHANCE_YOUR_CALM says why,
and gRPC clients map it to RESOURCE_EXHAUSTED, the status gRPC servers give for oversized metadata.
"""

from __future__ import annotations

from h2.errors import ErrorCodes
from hpack.table import HeaderTable

from meshproxy.codec.headers import AUTHORITY_CHARS

DEFAULT_MAX_HEADER_LIST_SIZE = 60 * 1024  # bytes of names and values: Envoy's max_request_headers_kb
DEFAULT_MAX_HEADER_COUNT = 100  # fields, pseudo-headers included: Envoy's max_headers_count


class StreamRejected(Exception):
    """A header block the proxy will not pass on: reset its stream with `code` (RFC 9113 §5.4.2)."""

    def __init__(self, code: ErrorCodes, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _malformed(reason: str) -> StreamRejected:
    return StreamRejected(ErrorCodes.PROTOCOL_ERROR, reason)


def _translation(allowed: bytes) -> bytes:
    """A bytes.translate table that maps every byte not in `allowed` to NUL (and NUL to NUL): a field is
    valid when `0 not in field.translate(table)`, one C pass over the field (no regex)."""
    return bytes(b if b in allowed and b != 0 else 0 for b in range(256))


_DIGITS = b"0123456789"
_LOWER = b"abcdefghijklmnopqrstuvwxyz"
_TCHAR_OTHER = b"!#$%&'*+-.^_`|~"  # RFC 9110 §5.6.2 tchar besides letters and digits
_NAME = _translation(_TCHAR_OTHER + _DIGITS + _LOWER)
_METHOD = _translation(_TCHAR_OTHER + _DIGITS + _LOWER + _LOWER.upper())
_SCHEME = _translation(_DIGITS + _LOWER + _LOWER.upper() + b"+-.")  # RFC 3986 §3.1
_VALUE = _translation(bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]))
# RFC 3986 path and query characters, pct-encoded included; no SP, no controls, no "#" (Envoy refuses a
# fragment in a request path); bytes above 0x7f are let through as nghttp2 does.
_PATH = _translation(bytes(c for c in range(0x21, 0x7F) if c != 0x23) + bytes(range(0x80, 0x100)))
# RFC 3986 §3.2 host and port: unreserved, pct-encoded, sub-delims, ":" and IP-literal brackets; no userinfo
_AUTHORITY = AUTHORITY_CHARS  # one definition for HTTP/1.1 Host and HTTP/2 :authority / host
_WHITESPACE = b" \t"

_CONNECTION_SPECIFIC = 1
_TE = 2
_CONTENT_LENGTH = 3
_HOST = 4
_SPECIAL: dict[bytes, int] = {
    b"connection": _CONNECTION_SPECIFIC,
    b"keep-alive": _CONNECTION_SPECIFIC,
    b"proxy-connection": _CONNECTION_SPECIFIC,
    b"transfer-encoding": _CONNECTION_SPECIFIC,
    b"upgrade": _CONNECTION_SPECIFIC,
    b"te": _TE,
    b"content-length": _CONTENT_LENGTH,
    b"host": _HOST,
}
# Names known to be valid lower-case tokens (the HPACK static table's and other common ones) skip the name
# check; the special ones say what else to check.
_KNOWN: dict[bytes, int] = {name: 0 for name, _ in HeaderTable.STATIC_TABLE if name[:1] != b":"}
_KNOWN.update(
    dict.fromkeys(
        (
            b"x-request-id",
            b"x-forwarded-proto",
            b"x-forwarded-for",
            b"x-envoy-expected-rq-timeout-ms",
            b"grpc-timeout",
            b"grpc-encoding",
            b"grpc-accept-encoding",
            b"grpc-status",
            b"grpc-message",
            b"x-amzn-trace-id",
            b"traceparent",
            b"tracestate",
        ),
        0,
    )
)
_KNOWN.update(_SPECIAL)
_MAX_CONTENT_LENGTH_DIGITS = 18  # below 2^63, as Envoy and llhttp require

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority", b":protocol"})


def _check_regular(name: bytes, value: bytes) -> int:
    """One regular field: raises if malformed; returns its `_KNOWN` kind (0 for most fields)."""
    kind = _KNOWN.get(name)
    if kind is None:
        if not name or 0 in name.translate(_NAME):
            raise _malformed(f"invalid field name {name[:64]!r}")
        kind = 0
    if value and (0 in value.translate(_VALUE) or value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
        raise _malformed(f"invalid value for {name[:64]!r}")
    if kind == _CONNECTION_SPECIFIC:
        raise _malformed(f"connection-specific field {name!r}")
    if kind == _TE and value.lower() != b"trailers":
        raise _malformed("te other than trailers")
    return kind


def _content_length(value: bytes, previous: int) -> int:
    if previous >= 0:
        raise _malformed("more than one content-length")
    if not value.isdigit() or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
        raise _malformed("invalid content-length")
    return int(value)


def _over_limits(size: int, max_size: int) -> None:
    if size > max_size:
        raise StreamRejected(ErrorCodes.ENHANCE_YOUR_CALM, f"header list of {size} bytes")


def check_request(headers: list[tuple[bytes, bytes]], max_size: int, max_count: int) -> int:
    """Validate a request header block (see the module docstring); returns its content-length (-1: none).
    Raises StreamRejected. One pass over the fields, each checked with bytes methods (hot path)."""
    if len(headers) > max_count:
        raise StreamRejected(ErrorCodes.ENHANCE_YOUR_CALM, f"{len(headers)} header fields")
    size = 0
    pseudo: dict[bytes, bytes] = {}
    host = None
    length = -1
    regular = False
    known = _KNOWN
    for name, value in headers:
        size += len(name) + len(value)
        if name[:1] == b":":
            if regular or name in pseudo or name not in _REQUEST_PSEUDO:
                raise _malformed(f"pseudo-header {name[:64]!r} repeated, unknown or after a regular field")
            pseudo[name] = value
            continue
        regular = True
        kind = known.get(name)
        if kind is None:
            if not name or 0 in name.translate(_NAME):
                raise _malformed(f"invalid field name {name[:64]!r}")
        elif kind:
            if kind == _CONTENT_LENGTH:
                length = _content_length(value, length)
            elif kind == _HOST:
                if host is not None:
                    raise _malformed("more than one host")
                host = value
            elif kind == _CONNECTION_SPECIFIC or value.lower() != b"trailers":
                raise _malformed(f"connection-specific field {name!r}")
        if value and (0 in value.translate(_VALUE) or value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
            raise _malformed(f"invalid value for {name[:64]!r}")
    _over_limits(size, max_size)
    _check_request_pseudo(pseudo, host)
    return length


def _check_request_pseudo(pseudo: dict[bytes, bytes], host: bytes | None) -> None:
    """RFC 9113 §8.3.1 (and RFC 8441 §4 for :protocol), and Host against :authority (§8.3.1)."""
    method = pseudo.get(b":method")
    if not method or 0 in method.translate(_METHOD):
        raise _malformed("missing or invalid :method")
    scheme = pseudo.get(b":scheme")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    protocol = pseudo.get(b":protocol")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or not authority:
            raise _malformed("CONNECT needs :authority and no :scheme or :path")
    else:
        if protocol is not None and (
            method != b"CONNECT" or not authority or 0 in protocol.translate(_METHOD)
        ):
            raise _malformed(":protocol outside an extended CONNECT")
        if not scheme or 0 in scheme.translate(_SCHEME):
            raise _malformed("missing or invalid :scheme")
        if not path or 0 in path.translate(_PATH):
            raise _malformed("missing or invalid :path")
        if path[0] != 0x2F and not (path == b"*" and method == b"OPTIONS"):
            raise _malformed(":path is not origin-form")
    if authority is not None and 0 in authority.translate(_AUTHORITY):
        raise _malformed("invalid :authority")
    if host is not None:
        if not host or 0 in host.translate(_AUTHORITY):
            raise _malformed("invalid host")
        if authority is not None and host != authority:
            raise _malformed("host differs from :authority")


def check_response(headers: list[tuple[bytes, bytes]], max_size: int, max_count: int) -> tuple[int, int]:
    """Validate a response header block; returns (status, content-length or -1). Raises StreamRejected."""
    if len(headers) > max_count:
        raise StreamRejected(ErrorCodes.ENHANCE_YOUR_CALM, f"{len(headers)} header fields")
    size = 0
    status: bytes | None = None
    length = -1
    regular = False
    for name, value in headers:
        size += len(name) + len(value)
        if name[:1] == b":":
            if regular:
                raise _malformed(f"pseudo-header {name!r} after a regular field")
            if name != b":status":
                raise _malformed(f"pseudo-header {name[:64]!r} in a response")
            if status is not None:
                raise _malformed("duplicate :status")
            status = value
            continue
        regular = True
        if _check_regular(name, value) == _CONTENT_LENGTH:
            length = _content_length(value, length)
    _over_limits(size, max_size)
    # RFC 9110 §15: three digits; RFC 9113 §8.6: no 101 (Switching Protocols) in HTTP/2
    if status is None or len(status) != 3 or not status.isdigit():
        raise _malformed("missing or invalid :status")
    code = int(status)
    if code < 100 or code == 101:
        raise _malformed(f":status {code}")
    return code, length


def check_trailers(headers: list[tuple[bytes, bytes]], max_size: int, max_count: int) -> None:
    """Validate a trailer block: regular fields only (RFC 9113 §8.1). Raises StreamRejected."""
    if len(headers) > max_count:
        raise StreamRejected(ErrorCodes.ENHANCE_YOUR_CALM, f"{len(headers)} trailer fields")
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        if name[:1] == b":":
            raise _malformed(f"pseudo-header {name[:64]!r} in trailers")
        _check_regular(name, value)
    _over_limits(size, max_size)
