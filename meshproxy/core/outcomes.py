"""How a request or an attempt can end badly: Envoy's local replies (status, body, response flag) and the
ways an upstream attempt fails.

Runbooks and dashboards grep for these exact bodies and flags (spec §5.5, user-expectations §5.7).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ResponseFlag(enum.StrEnum):
    """Envoy %RESPONSE_FLAGS% short names."""

    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_CONNECT_FAILURE = "UF"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE = "NR"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    UPSTREAM_REMOTE_RESET = "UR"
    LOCAL_RESET = "LR"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    UPSTREAM_PROTOCOL_ERROR = "UPE"
    STREAM_IDLE_TIMEOUT = "SI"
    NO_CLUSTER_FOUND = "NC"


@dataclass(frozen=True, slots=True)
class LocalReply:
    status: int
    body: bytes
    flag: ResponseFlag
    grpc_status: int  # what a gRPC client gets instead (Envoy's HTTP -> gRPC status mapping)


_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: "

NO_ROUTE = LocalReply(404, b"", ResponseFlag.NO_ROUTE, 12)  # UNIMPLEMENTED
NO_HEALTHY_UPSTREAM = LocalReply(503, b"no healthy upstream", ResponseFlag.NO_HEALTHY_UPSTREAM, 14)
CONNECT_FAILURE = LocalReply(503, _RESET + b"connection failure", ResponseFlag.UPSTREAM_CONNECT_FAILURE, 14)
OVERFLOW = LocalReply(503, _RESET + b"overflow", ResponseFlag.UPSTREAM_OVERFLOW, 14)
CONNECTION_TERMINATION = LocalReply(
    503, _RESET + b"connection termination", ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, 14
)
UPSTREAM_TIMEOUT = LocalReply(504, b"upstream request timeout", ResponseFlag.UPSTREAM_REQUEST_TIMEOUT, 4)
STREAM_IDLE_TIMEOUT = LocalReply(408, b"stream timeout", ResponseFlag.STREAM_IDLE_TIMEOUT, 4)
# Envoy's request_headers_timeout (no stream exists yet, so no flag is logged for it).
REQUEST_HEADER_TIMEOUT = LocalReply(408, b"request header timeout", ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR, 4)
BAD_REQUEST = LocalReply(400, b"Bad Request", ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR, 13)
# Envoy's codec answers a head over max_request_headers_kb / max_headers_count with 431 (RFC 6585 §5).
HEADERS_TOO_LARGE = LocalReply(
    431, b"Request Header Fields Too Large", ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR, 13
)
# An upstream response meshproxy cannot relay (a field the downstream codec refuses to write).
UPSTREAM_PROTOCOL_ERROR = LocalReply(
    502, _RESET + b"protocol error", ResponseFlag.UPSTREAM_PROTOCOL_ERROR, 13
)


def protocol_error_reply(status: int) -> LocalReply:
    """The local reply for a downstream codec's ProtocolError status (400 or 431)."""
    return HEADERS_TOO_LARGE if status == 431 else BAD_REQUEST


class AttemptFailure(enum.Enum):
    """Why one upstream attempt ended without a response; the router maps each to a retry decision and,
    when no attempt is left, to one local reply."""

    CONNECT_FAILURE = "connect-failure"  # could not connect (UF)
    RESET = "reset"  # connection reset / closed before a complete response head (UC)
    REFUSED_STREAM = "refused-stream"  # HTTP/2 REFUSED_STREAM
    PER_TRY_TIMEOUT = "per-try-timeout"
    OVERFLOW = "overflow"  # circuit breaker: never retried (UO)
    NO_HEALTHY_UPSTREAM = "no-healthy-upstream"
    INVALID_REQUEST = "invalid-request"  # the upstream codec refused to write the request (400, DPE)


# The local reply when no attempt is left, by how the last one failed (Envoy's router: UF, UC, UT, UO, UH).
FAILURE_REPLY: dict[AttemptFailure, LocalReply] = {
    AttemptFailure.CONNECT_FAILURE: CONNECT_FAILURE,
    AttemptFailure.RESET: CONNECTION_TERMINATION,
    AttemptFailure.REFUSED_STREAM: CONNECTION_TERMINATION,
    AttemptFailure.PER_TRY_TIMEOUT: UPSTREAM_TIMEOUT,
    AttemptFailure.OVERFLOW: OVERFLOW,
    AttemptFailure.NO_HEALTHY_UPSTREAM: NO_HEALTHY_UPSTREAM,
    AttemptFailure.INVALID_REQUEST: BAD_REQUEST,
}
