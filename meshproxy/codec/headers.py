"""Header rules for messages crossing the proxy (RFC 9110 §7.6.1 hop-by-hop fields, Envoy's router)."""

from __future__ import annotations

import random
import time

from meshproxy.core.events import Headers

# Hop-by-hop fields never forwarded as received (framing is rewritten by the codec that sends the message).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"upgrade", b"expect",
     b"proxy-authenticate", b"trailer"}
)  # fmt: skip

# Envoy control headers a client may send to steer retries/timeouts; stripped where the client is untrusted.
ENVOY_CONTROL_PREFIX = b"x-envoy-"
# The router filter's control headers: never forwarded. Envoy removes them in its connection manager from a
# request it counts external, else in the router (RetryStateImpl::create the retry ones,
# FilterUtility::finalTimeout the timeout ones, Filter::decodeHeaders the alt-response and alt-stat ones).
# router/overrides.py decides when the retry and timeout ones are honoured.
ROUTER_CONTROL: frozenset[bytes] = frozenset(
    {b"x-envoy-retry-on", b"x-envoy-retry-grpc-on", b"x-envoy-max-retries", b"x-envoy-retriable-status-codes",
     b"x-envoy-retriable-header-names", b"x-envoy-hedge-on-per-try-timeout",
     b"x-envoy-upstream-rq-timeout-ms", b"x-envoy-upstream-rq-per-try-timeout-ms",
     b"x-envoy-upstream-rq-timeout-alt-response", b"x-envoy-upstream-alt-stat-name"}
)  # fmt: skip


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Extra hop-by-hop names listed in `Connection` (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            lowered = value.lower()
            if lowered == b"close" or lowered == b"keep-alive":  # the common case: nothing extra
                continue
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    tokens.discard(b"close")
    tokens.discard(b"keep-alive")
    tokens.discard(b"upgrade")
    return frozenset(tokens)


# Fields a `Connection` header may name but that are never hop-by-hop: removing them would change the
# message's framing (the body read as a second request) or leave it without Host (RFC 9112 §3.2, §6).
_NEVER_HOP_BY_HOP: frozenset[bytes] = frozenset({b"content-length", b"transfer-encoding", b"host"})


def nominates_framing_or_host(tokens: frozenset[bytes]) -> bool:
    """Does `Connection` name Content-Length, Transfer-Encoding or Host? Such a request is refused (400), as
    Envoy refuses `Connection: host`: forwarding it either way would guess what the client meant."""
    return not tokens.isdisjoint(_NEVER_HOP_BY_HOP)


def new_request_id() -> bytes:
    """A UUID4-shaped x-request-id from one getrandbits call (uuid.uuid4 costs ~3x more on the hot path)."""
    n = random.getrandbits(128)
    h = b"%032x" % n
    return b"%b-%b-4%b-%x%b-%b" % (h[:8], h[8:12], h[13:16], 8 | (n >> 62 & 3), h[17:20], h[20:32])


_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def http_date(epoch_seconds: int) -> bytes:
    """RFC 9110 §5.6.7 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as email.utils.formatdate(usegmt=True)
    writes it (the unit tests hold them equal; `email` itself costs a megabyte of memory per worker)."""
    t = time.gmtime(epoch_seconds)
    return b"%b, %02d %b %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday],
        t.tm_mday,
        _MONTHS[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


class HttpDate:
    """The `date` header value, formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = http_date(second)
        return self._value


HTTP_DATE = HttpDate()


def _translation(allowed: bytes) -> bytes:
    """A bytes.translate table that maps every byte not in `allowed` to NUL (and NUL to NUL): a value is
    made only of allowed bytes when `0 not in value.translate(table)`, one C pass (no regex)."""
    return bytes(b if b in allowed and b != 0 else 0 for b in range(256))


# RFC 3986 §3.2 authority without userinfo (RFC 9110 §7.2 forbids it in Host / :authority): unreserved,
# pct-encoded, sub-delims, ":" before a port, "[" "]" around an IPv6 literal.
AUTHORITY_CHARS = _translation(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._~%!$&'()*+,;=:[]"
)


def valid_host(value: bytes) -> bool:
    """A Host field value both HTTP/1.1 parsers and HTTP/2 accept: empty (RFC 9112 §3.2 allows it when the
    target has no authority) or an authority. Anything else would reach an HTTP/2 upstream as an
    `:authority` it must refuse, or a route lookup as garbage."""
    return 0 not in value.translate(AUTHORITY_CHARS)
