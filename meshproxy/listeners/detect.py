"""What an egress connection speaks, from its first bytes (pure; spec §2.4 decision procedure).

App Mesh's Envoy chose filter chains by destination port and, for TLS, by SNI (tls_inspector). meshproxy has
one egress port for everything, so it looks at the first bytes: an HTTP/2 preface, an HTTP/1.x request line,
a TLS ClientHello (whose SNI is read, never decrypted), or anything else (opaque TCP).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ", b"CONNECT ")


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
    for method in _METHODS:
        if data.startswith(method):
            return _HTTP1
        if len(data) < len(method) and method.startswith(data):
            return _NEED_MORE
    return _OPAQUE


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
