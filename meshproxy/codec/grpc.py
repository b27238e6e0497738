"""gRPC over HTTP/2 as the proxy sees it: statuses, `grpc-timeout`, and local replies as gRPC statuses.

gRPC carries its outcome in `grpc-status` / `grpc-message` trailers, or in the response headers of a
trailers-only response (gRPC over HTTP/2 spec, "Responses"). Envoy answers a gRPC request it cannot forward
with a trailers-only response (HTTP 200, `grpc-status` mapped from the HTTP status) rather than an HTTP error
body; App Mesh's grpcRetryEvents name the statuses retried (spec §4.5).
"""

from __future__ import annotations

import enum

from meshproxy.core.events import Headers


class GrpcStatus(enum.IntEnum):
    """The gRPC status codes (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


GRPC_CONTENT_TYPE = b"application/grpc"

# grpc-timeout units (gRPC over HTTP/2 spec: TimeoutValue is at most 8 digits)
_TIMEOUT_UNITS: dict[int, float] = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def is_grpc(headers: Headers) -> bool:
    """Does the message say `content-type: application/grpc[+proto|;...]`?"""
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(GRPC_CONTENT_TYPE)
    return False


def grpc_status_of(headers: Headers) -> int | None:
    """The numeric `grpc-status` of a header or trailer block; None if absent or not a number."""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def parse_grpc_timeout(value: bytes) -> float | None:
    """`grpc-timeout` (e.g. `100m`, `5S`) in seconds; None if malformed (then it is ignored, as by Envoy)."""
    if len(value) < 2 or len(value) > 9:
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    digits = value[:-1]
    if unit is None or not digits.isdigit():
        return None
    return int(digits) * unit


def grpc_timeout_of(headers: Headers) -> float | None:
    for name, value in headers:
        if name == b"grpc-timeout":
            return parse_grpc_timeout(value)
    return None


def percent_encode_message(message: bytes) -> bytes:
    """`grpc-message` is percent-encoded outside printable ASCII, and `%` itself (gRPC over HTTP/2 spec)."""
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in message):
        return message
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in message)


def trailers_only_headers(grpc_status: int, message: bytes) -> Headers:
    """The header block of a trailers-only gRPC response (without `:status`, date and server)."""
    headers: Headers = [(b"content-type", GRPC_CONTENT_TYPE), (b"grpc-status", b"%d" % grpc_status)]
    if message:
        headers.append((b"grpc-message", percent_encode_message(message)))
    return headers
