"""The events a request is made of, whatever the protocol on either side: the proxy's shared vocabulary.

Codecs turn bytes into these and back (codec/); the router and the connection managers only ever see these.
Header lists are ``[(name, value), ...]`` of bytes with lower-case names, in arrival order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


class BodyKind(enum.Enum):
    NONE = 0  # no body (HEAD responses, 204, 304, 1xx, requests without framing headers)
    LENGTH = 1  # Content-Length framed
    CHUNKED = 2  # Transfer-Encoding: chunked (HTTP/1.1), or a stream without a declared length (HTTP/2)
    UNTIL_CLOSE = 3  # response body delimited by connection close (HTTP/1.0 style)


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str  # origin-form (`/path?q`) or absolute-form (`http://host/path`) as received
    headers: Headers
    http_version: str  # "1.1", "1.0" or "2"
    keep_alive: bool
    body: BodyKind
    content_length: int = -1
    upgrade: bool = False  # Upgrade requested (WebSocket): bytes after this message form a tunnel if accepted
    expect_continue: bool = False


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: Headers
    http_version: str
    keep_alive: bool
    body: BodyKind
    content_length: int = -1


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Upgraded:
    """An accepted protocol switch: `trailing` holds bytes that already belong to the tunnel."""

    trailing: bytes = b""


END = EndOfMessage()

Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgraded
