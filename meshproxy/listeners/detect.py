"""What an egress connection speaks, from its first bytes (pure; spec §2.4 decision procedure).

App Mesh's Envoy chose filter chains by destination port and, for TLS, by SNI (tls_inspector). meshproxy has
one egress port for everything, so it looks at the first bytes: an HTTP/2 preface, an HTTP/1.x request line,
a TLS ClientHello (whose SNI is read, never decrypted), or anything else (opaque TCP).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ", b"CONNECT ")
_EMPTY_LINE = (b"\r", b"\n")
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN_PREFIX = re.compile(_TCHAR + rb"+")
_REQUEST_LINE_PREFIX = re.compile(_TCHAR + rb"+ [\x21-\x7e]*(?: (?:H(?:T(?:T(?:P(?:/[0-9.]*)?)?)?)?)?)?")
_REQUEST_LINE = re.compile(_TCHAR + rb"+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?\n")


class Detected(enum.Enum):
    NEED_MORE = "need-more"
    HTTP1 = "http1"
    HTTP2 = "http2"
    TLS = "tls"
    OPAQUE = "opaque"


@dataclass(frozen=True, slots=True)
class Detection:
    kind: Detected
    sni: str | None = None


_NEED_MORE = Detection(Detected.NEED_MORE)
_HTTP1 = Detection(Detected.HTTP1)
_HTTP2 = Detection(Detected.HTTP2)
_OPAQUE = Detection(Detected.OPAQUE)


def detect(data: bytes) -> Detection:
    """Classify the first bytes of a connection; NEED_MORE while a prefix is still ambiguous."""
    if not data:
        return _NEED_MORE
    if data[0] == 0x16:  # TLS handshake record
        if len(data) < 5:
            return _NEED_MORE
        sni = client_hello_sni(data)
        if sni is _INCOMPLETE:
            return _NEED_MORE
        return Detection(Detected.TLS, sni if isinstance(sni, str) else None)
    if data.startswith(H2_PREFACE[: len(data)]) and len(data) < len(H2_PREFACE):
        return _NEED_MORE
    if data.startswith(H2_PREFACE):
        return _HTTP2
    return _http1_or_opaque(data)


def _http1_or_opaque(data: bytes) -> Detection:
    """HTTP/1.x if the bytes start a request line (RFC 9112 §3, after the empty lines §2.2 lets a server
    ignore): a common method at once; any other token method (RFC 9110 §9.1) once the line ends in a version,
    so that a text protocol that merely starts with a word is not taken for HTTP."""
    if data[:1] in _EMPTY_LINE:
        data = data.lstrip(b"\r\n")
        if not data:
            return _NEED_MORE
    for method in _METHODS:
        if data.startswith(method):
            return _HTTP1
    token = _TOKEN_PREFIX.match(data)
    if token is None:
        return _OPAQUE
    if token.end() == len(data):
        return _NEED_MORE
    line_end = data.find(b"\n", token.end())
    if line_end < 0:
        return _NEED_MORE if _REQUEST_LINE_PREFIX.fullmatch(data) else _OPAQUE
    return _HTTP1 if _REQUEST_LINE.match(data[: line_end + 1]) else _OPAQUE


class _Incomplete:
    pass


_INCOMPLETE = _Incomplete()


def client_hello_sni(data: bytes) -> str | _Incomplete | None:
    """The server_name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3), None if absent or unparsable,
    `_INCOMPLETE` if more bytes are needed."""
    if len(data) < 5:
        return _INCOMPLETE
    record_length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + record_length:
        return _INCOMPLETE if record_length <= 16384 else None
    body = data[5 : 5 + record_length]
    if len(body) < 4 or body[0] != 0x01:  # handshake type client_hello
        return None
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    try:
        pos += 1 + body[pos]  # session id
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
        pos += 1 + body[pos]  # compression methods
        end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            ext_type = int.from_bytes(body[pos : pos + 2], "big")
            ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
            pos += 4
            if ext_type == 0:  # server_name
                list_pos = pos + 2
                while list_pos + 3 <= pos + ext_len:
                    name_type = body[list_pos]
                    name_len = int.from_bytes(body[list_pos + 1 : list_pos + 3], "big")
                    if name_type == 0:
                        return body[list_pos + 3 : list_pos + 3 + name_len].decode("ascii").lower()
                    list_pos += 3 + name_len
                return None
            pos += ext_len
    except (IndexError, UnicodeDecodeError):
        return None
    return None
