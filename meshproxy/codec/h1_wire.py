"""HTTP/1.1 on the wire, as meshproxy writes it: heads, request lines, chunks and reason phrases.

Used by the httptools codec pair (the hand-written serialisation beside llhttp's parser) and by the
connection manager for reason phrases. Pure functions, no I/O.
"""

from __future__ import annotations

from meshproxy.codec.h1 import ProtocolError
from meshproxy.core.events import Headers, RequestHead

_CRLF = b"\r\n"
_SEP = b": "
_LINE_BREAKING = b"\r\n\x00"


def encode_headers(first_line: bytes, headers: Headers) -> bytes:
    """A message head. Raises ProtocolError, writing nothing, if a name or value holds CR, LF or NUL.

    Defence in depth behind the parsers (issue 11): a field that reached us with `\r\n` inside (through
    HTTP/2, or a bug) must never become two lines upstream. The check is one C-speed pass over the joined
    head, no per-header Python work: the head holds exactly one CR and one LF per line of its own, so
    deleting every CR, LF and NUL must shorten it by exactly two bytes per line.
    """
    parts = [first_line]
    for name, value in headers:
        parts += (name, _SEP, value, _CRLF)
    parts.append(_CRLF)
    head = b"".join(parts)
    if len(head) - len(head.translate(None, _LINE_BREAKING)) != 2 * (len(headers) + 2):
        raise ProtocolError("CR, LF or NUL in a header field or the start line: not written")
    return head


def request_line(head: RequestHead) -> bytes:
    """`METHOD SP target SP HTTP/1.1 CRLF`; ProtocolError if a space (or a character that is not ASCII in the
    method, latin-1 in the target) would change what the upstream reads there. CR, LF and NUL are
    `encode_headers`' to refuse."""
    try:
        method = head.method.encode("ascii")
        target = head.target.encode("latin-1")
    except UnicodeEncodeError:
        raise ProtocolError("a request line that is not latin-1") from None
    # find, not `in`: ARCHITECTURE.md, "bytes in bytes"
    if method.find(b" ") >= 0 or target.find(b" ") >= 0 or not method or not target:
        raise ProtocolError("a space in the method or the target, or an empty one")
    return b"%b %b HTTP/1.1\r\n" % (method, target)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


LAST_CHUNK = b"0\r\n\r\n"


_REASONS = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip


def reason_phrase(status: int) -> bytes:
    # Envoy does not keep the upstream reason phrase either: it writes the standard one for the code.
    return _REASONS.get(status, b"Unknown")
