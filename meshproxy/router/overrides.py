"""What a client may ask of the router per request: Envoy's router control headers, and when it may.

They are always consumed: none goes upstream (codec/headers.py `ROUTER_CONTROL`; at a virtual gateway every
`x-envoy-*` header is stripped, upstream_headers.py). They are honoured only for an internal request, as
Envoy decides it without `use_remote_address` (App Mesh's setting on every listener;
ConnectionManagerUtility::mutateRequestHeaders): `x-forwarded-for` holds exactly one address and that address
is internal (Network::Utility::isInternalAddress: 10/8, 172.16/12, 192.168/16, 127.0.0.1, fd00::/8, ::1).
Any other request is external, and Envoy's connection manager strips these headers before the router sees
them. So an application's own call, which carries no `x-forwarded-for`, had them dropped and ignored by App
Mesh's Envoy, and is here too (checked against Envoy 1.40, tests/e2e/test_router_headers_envoy.py). Envoy
1.40 by default counts no address as internal, so it honours them not even under a private x-forwarded-for;
the address rule above is the one of the Envoy builds App Mesh shipped. Envoy's merge rules for an internal
request, followed here (router_filter docs "HTTP headers consumed from downstreams";
source/common/router/retry_state_impl.cc RetryStateImpl, router.cc FilterUtility::finalTimeout):

- `x-envoy-retry-on` / `x-envoy-retry-grpc-on`: the events named are added to the route's (a bitwise OR);
  unknown names are skipped. `5xx` retries every 5xx and any reset, `gateway-error` 502/503/504 and any reset
  (a per-try timeout too), `reset`, `connect-failure`, `refused-stream`, `retriable-4xx` (409),
  `retriable-status-codes`; gRPC: cancelled, deadline-exceeded, internal, resource-exhausted, unavailable.
  A route without a policy (the ingress listener's, ALLOW_ALL's passthrough) counts as Envoy's empty policy:
  no events, one retry.
- `x-envoy-retriable-status-codes`: codes added to the route's list; they count only while the events include
  `retriable-status-codes` (App Mesh renders every status event of a route's policy as that list).
- `x-envoy-max-retries`: replaces the number of retries, if any event is in effect at all.
- `x-envoy-upstream-rq-timeout-ms`: replaces the per-request timeout (and a gRPC client's shorter deadline);
  0 disables it. `x-envoy-upstream-rq-per-try-timeout-ms`: replaces the per-try timeout; 0 disables it.
- A value that is not a whole number (absl::SimpleAtoi: digits, an optional `+`, surrounding blanks) is
  ignored, as Envoy ignores it. A header sent twice counts as its values joined by commas (Envoy coalesces
  these inline headers). `x-envoy-retriable-header-names`, `x-envoy-hedge-on-per-try-timeout`,
  `x-envoy-upstream-rq-timeout-alt-response` and `x-envoy-upstream-alt-stat-name` are consumed, not honoured.

Runs only for a request that carries one of them (`upstream_headers.client_fields` notes them): the common
request pays nothing for this. Envoy also marks an internal request `x-envoy-internal: true`; that header is
not handled here (neither set nor stripped), for any request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Final

from meshproxy.config.snapshot import RetryPolicy
from meshproxy.core.events import Headers
from meshproxy.router.decide import RouteDecision

RETRY_ON: Final = b"x-envoy-retry-on"
RETRY_GRPC_ON: Final = b"x-envoy-retry-grpc-on"
MAX_RETRIES: Final = b"x-envoy-max-retries"
RETRIABLE_STATUS_CODES: Final = b"x-envoy-retriable-status-codes"
REQUEST_TIMEOUT: Final = b"x-envoy-upstream-rq-timeout-ms"
PER_TRY_TIMEOUT: Final = b"x-envoy-upstream-rq-per-try-timeout-ms"

# Envoy's RetryPolicyImpl for a route without a retry policy: no events, `num_retries` 1.
ENVOY_EMPTY_POLICY: Final = RetryPolicy(max_retries=1, per_try_timeout=None)
_ALL_5XX: Final = frozenset(range(500, 600))  # Http::CodeUtility::is5xx
_GATEWAY_ERRORS: Final = frozenset({502, 503, 504})  # Http::CodeUtility::isGatewayError
_GRPC_RETRY_ON: Final = {
    b"cancelled": 1,
    b"deadline-exceeded": 4,
    b"resource-exhausted": 8,
    b"internal": 13,
    b"unavailable": 14,
}
# Envoy holds the count in a uint32 and timeouts in uint64 milliseconds; a timer beyond about 49 days is
# bounded here, where the event loop's timers are sure to take it.
_MAX_COUNT: Final = 2**32 - 1
_RFC1918: Final = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_LOOPBACK_V4: Final = ipaddress.IPv4Address("127.0.0.1")


def internal_request(forwarded_for: bytes | None) -> bool:
    """Envoy's internal-request verdict without use_remote_address (see the top): one x-forwarded-for
    address (Utility::getLastAddressFromXFF's `single_address_`), and an internal one."""
    if forwarded_for is None or b"," in forwarded_for:
        return False
    try:
        address = ipaddress.ip_address(forwarded_for.strip(b" \t").decode("ascii"))
    except ValueError:  # not an address (UnicodeDecodeError is a ValueError)
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address == _LOOPBACK_V4 or any(address in network for network in _RFC1918)
    return address.packed[0] == 0xFD or address.packed == bytes(15) + b"\x01"


def whole_number(value: bytes) -> int | None:
    """absl::SimpleAtoi for an unsigned number: None for anything else (negative, fractional, empty)."""
    digits = value.strip(b" \t")
    if digits.startswith(b"+"):
        digits = digits[1:]
    if not digits or not digits.isdigit() or len(digits) > 20:
        return None
    number = int(digits)
    return number if number < 2**64 else None


def _tokens(value: bytes | None) -> list[bytes]:
    """Envoy's StringUtil::splitToken(value, ",", keep_empty=false, trim_whitespace=true)."""
    if value is None:
        return []
    return [token for token in (t.strip(b" \t") for t in value.split(b",")) if token]


def _timeout_ms(value: bytes | None, current: float | None) -> float | None:
    number = whole_number(value) if value is not None else None
    if number is None:
        return current  # absent or not a number: the route's stands
    return min(number, _MAX_COUNT) / 1000.0 if number else None


def _has_events(policy: RetryPolicy) -> bool:
    return bool(
        policy.retriable_statuses
        or policy.retry_on_reset
        or policy.retry_on_connect_failure
        or policy.retry_on_refused_stream
        or policy.grpc_statuses
    )


def merged_retry(route: RetryPolicy | None, values: dict[bytes, bytes]) -> RetryPolicy | None:
    """The route's retry policy with the client's retry headers merged in (per-try timeout aside)."""
    retry_on, grpc_on = values.get(RETRY_ON), values.get(RETRY_GRPC_ON)
    if retry_on is None and grpc_on is None and route is None:
        return None  # Envoy makes no retry state: x-envoy-max-retries alone does nothing
    events = _tokens(retry_on)
    base = route if route is not None else ENVOY_EMPTY_POLICY
    statuses = set(base.retriable_statuses)
    if b"retriable-status-codes" in events or statuses:
        for code in _tokens(values.get(RETRIABLE_STATUS_CODES)):
            number = whole_number(code)
            if number is not None and number < 2**32:
                statuses.add(number)
    if b"5xx" in events:
        statuses |= _ALL_5XX
    if b"gateway-error" in events:
        statuses |= _GATEWAY_ERRORS
    if b"retriable-4xx" in events:
        statuses.add(409)
    grpc = set(base.grpc_statuses)
    grpc.update(_GRPC_RETRY_ON[t] for t in _tokens(grpc_on) if t in _GRPC_RETRY_ON)
    merged = RetryPolicy(
        max_retries=base.max_retries,
        per_try_timeout=base.per_try_timeout,
        retriable_statuses=frozenset(statuses),
        # Envoy's wouldRetryFromReset: `5xx` and `gateway-error` retry any reset, as `reset` does
        retry_on_reset=base.retry_on_reset or bool({b"reset", b"5xx", b"gateway-error"} & set(events)),
        retry_on_connect_failure=base.retry_on_connect_failure or b"connect-failure" in events,
        retry_on_refused_stream=base.retry_on_refused_stream or b"refused-stream" in events,
        grpc_statuses=frozenset(grpc),
        is_default=base.is_default,
    )
    count = whole_number(values.get(MAX_RETRIES, b"")) if _has_events(merged) else None
    return merged if count is None else replace(merged, max_retries=min(count, _MAX_COUNT))


def overridden(
    decision: RouteDecision, timeout: float | None, control: Headers, forwarded_for: bytes | None
) -> tuple[RouteDecision, float | None]:
    """The decision and per-request timeout this request runs with, given the control headers it carried
    and its x-forwarded-for (unchanged for an external request)."""
    if not internal_request(forwarded_for):
        return decision, timeout
    values: dict[bytes, bytes] = {}
    for name, value in control:
        values[name] = values[name] + b"," + value if name in values else value
    retry = merged_retry(decision.retry, values)
    per_try = values.get(PER_TRY_TIMEOUT)
    if per_try is not None and whole_number(per_try) is not None:
        if retry is None:
            retry = RetryPolicy(max_retries=0, per_try_timeout=None)  # a per-try timeout, no retries
        retry = replace(retry, per_try_timeout=_timeout_ms(per_try, retry.per_try_timeout))
    timeout = _timeout_ms(values.get(REQUEST_TIMEOUT), timeout)
    return decision.with_policy(retry, timeout), timeout
