"""The client's router control headers merged into the route's retry policy and timeouts as Envoy merges them,
for the requests Envoy counts as internal (meshproxy/router/overrides.py; Envoy's RetryStateImpl,
FilterUtility::finalTimeout and ConnectionManagerUtility::mutateRequestHeaders)."""

from __future__ import annotations

import pytest

from meshproxy.config.compile import DEFAULT_RETRY_POLICY
from meshproxy.config.snapshot import RetryPolicy
from meshproxy.core.events import Headers
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.router.decide import RouteDecision
from meshproxy.router.overrides import (
    ENVOY_EMPTY_POLICY,
    internal_request,
    merged_retry,
    overridden,
    whole_number,
)
from meshproxy.router.retry import should_retry_failure, should_retry_status

# httpRetryEvents [gateway-error]: App Mesh renders it as reset + retriable-status-codes [502, 503, 504]
GATEWAY = RetryPolicy(
    max_retries=1, per_try_timeout=2.0, retriable_statuses=frozenset({502, 503, 504}), retry_on_reset=True
)
# tcpRetryEvents [connection-error] only: no status list, so no `retriable-status-codes` event
CONNECT_ONLY = RetryPolicy(max_retries=2, per_try_timeout=None, retry_on_connect_failure=True)


def values(**headers: str) -> dict[bytes, bytes]:
    return {f"x-envoy-{name.replace('_', '-')}".encode(): v.encode() for name, v in headers.items()}


def decision(retry: RetryPolicy | None, timeout: float | None = 15.0) -> RouteDecision:
    return RouteDecision("cds_backend", "backend/route", timeout, 300.0, "/", retry)


@pytest.mark.parametrize(
    ("text", "number"),
    [("3", 3), (" 7 ", 7), ("+2", 2), ("0", 0), ("18446744073709551615", 2**64 - 1)],
)
def test_whole_numbers_as_absl_reads_them(text: str, number: int) -> None:
    assert whole_number(text.encode()) == number


@pytest.mark.parametrize(
    "text", ["", "-1", "1.5", "abc", "1e3", "0x10", "1_000", "٣", "18446744073709551616"]
)
def test_what_is_not_a_whole_number_is_ignored(text: str) -> None:
    assert whole_number(text.encode()) is None


def test_header_events_are_added_to_the_routes() -> None:
    merged = merged_retry(CONNECT_ONLY, values(retry_on="5xx"))
    assert merged is not None
    assert merged.retry_on_connect_failure and merged.retry_on_reset
    assert merged.retriable_statuses == frozenset(range(500, 600))
    assert merged.max_retries == 2  # the route's count stands without x-envoy-max-retries


def test_unknown_and_blank_events_are_skipped() -> None:
    merged = merged_retry(None, values(retry_on=" gateway-error , bogus,,retriable-4xx"))
    assert merged is not None
    assert merged.retriable_statuses == frozenset({502, 503, 504, 409})
    assert merged.retry_on_reset and not merged.retry_on_connect_failure


def test_a_route_without_a_policy_gets_envoys_empty_one_retry_policy() -> None:
    merged = merged_retry(None, values(retry_on="connect-failure,refused-stream"))
    assert merged is not None
    assert merged.max_retries == ENVOY_EMPTY_POLICY.max_retries == 1
    assert (merged.retry_on_connect_failure, merged.retry_on_refused_stream, merged.retry_on_reset) == (
        True,
        True,
        False,
    )


def test_max_retries_replaces_the_count() -> None:
    merged = merged_retry(GATEWAY, values(max_retries="5"))
    assert merged is not None and merged.max_retries == 5
    merged = merged_retry(GATEWAY, values(max_retries="0"))
    assert merged is not None and merged.max_retries == 0


@pytest.mark.parametrize("bad", ["-1", "two", "1.5", ""])
def test_an_invalid_max_retries_leaves_the_count(bad: str) -> None:
    merged = merged_retry(GATEWAY, values(max_retries=bad))
    assert merged is not None and merged.max_retries == 1


def test_max_retries_alone_does_nothing_without_any_event() -> None:
    assert merged_retry(None, values(max_retries="4")) is None  # no retry state at all
    merged = merged_retry(None, values(retry_on="bogus", max_retries="4"))  # a state with no events
    assert merged is not None and merged.max_retries == 1
    assert not should_retry_status(merged, 503)


def test_retriable_status_codes_count_with_the_event() -> None:
    merged = merged_retry(
        None, values(retry_on="retriable-status-codes", retriable_status_codes="418, 429,x")
    )
    assert merged is not None and merged.retriable_statuses == frozenset({418, 429})


def test_retriable_status_codes_join_a_routes_status_list() -> None:
    # App Mesh renders a route's status events as `retriable-status-codes`: the header adds to that list
    merged = merged_retry(GATEWAY, values(retriable_status_codes="500"))
    assert merged is not None and merged.retriable_statuses == frozenset({500, 502, 503, 504})
    merged = merged_retry(DEFAULT_RETRY_POLICY, values(retriable_status_codes="429"))
    assert merged is not None and 429 in merged.retriable_statuses


def test_retriable_status_codes_without_the_event_do_nothing() -> None:
    assert merged_retry(None, values(retriable_status_codes="500")) is None
    merged = merged_retry(CONNECT_ONLY, values(retriable_status_codes="500"))
    assert merged is not None and not merged.retriable_statuses
    merged = merged_retry(None, values(retry_on="5xx", retriable_status_codes="418"))
    assert merged is not None and 418 not in merged.retriable_statuses


def test_grpc_events() -> None:
    merged = merged_retry(
        GATEWAY, values(retry_grpc_on="cancelled,deadline-exceeded,internal,resource-exhausted,nope")
    )
    assert merged is not None and merged.grpc_statuses == frozenset({1, 4, 13, 8})
    assert should_retry_status(merged, 200, grpc_status=13)
    merged = merged_retry(None, values(retry_grpc_on="unavailable", max_retries="3"))
    assert merged is not None and (merged.grpc_statuses, merged.max_retries) == (frozenset({14}), 3)


@pytest.mark.parametrize("event", ["5xx", "gateway-error", "reset"])
def test_events_that_retry_any_reset(event: str) -> None:
    merged = merged_retry(None, values(retry_on=event))
    for failure in (AttemptFailure.RESET, AttemptFailure.CONNECT_FAILURE, AttemptFailure.PER_TRY_TIMEOUT):
        assert should_retry_failure(merged, failure)


INTERNAL = b"10.0.3.7"  # x-forwarded-for of an internal request


def overrides(
    route: RouteDecision, timeout: float | None, **headers: str
) -> tuple[RouteDecision, float | None]:
    control: Headers = [(name, value) for name, value in values(**headers).items()]
    return overridden(route, timeout, control, INTERNAL)


def test_the_request_timeout_header_replaces_the_routes_and_0_disables_it() -> None:
    route = decision(GATEWAY)
    changed, timeout = overrides(route, 15.0, upstream_rq_timeout_ms="250")
    assert timeout == changed.timeout == 0.25
    assert changed.retry == GATEWAY and changed.cluster == route.cluster and changed.path == route.path
    assert overrides(route, 15.0, upstream_rq_timeout_ms="0")[1] is None
    assert overrides(route, 15.0, upstream_rq_timeout_ms="-5")[1] == 15.0
    assert overrides(route, 15.0, upstream_rq_timeout_ms="soon")[1] == 15.0


def test_the_per_try_timeout_header_replaces_the_routes() -> None:
    changed, _ = overrides(decision(GATEWAY), 15.0, upstream_rq_per_try_timeout_ms="100")
    assert changed.retry is not None and changed.retry.per_try_timeout == 0.1
    assert changed.retry.max_retries == 1
    changed, _ = overrides(decision(GATEWAY), 15.0, upstream_rq_per_try_timeout_ms="0")
    assert changed.retry is not None and changed.retry.per_try_timeout is None
    changed, _ = overrides(decision(GATEWAY), 15.0, upstream_rq_per_try_timeout_ms="x")
    assert changed.retry == GATEWAY


def test_a_per_try_timeout_without_a_policy_bounds_the_one_attempt() -> None:
    changed, _ = overrides(decision(None), 15.0, upstream_rq_per_try_timeout_ms="300")
    assert changed.retry is not None
    assert (changed.retry.per_try_timeout, changed.retry.max_retries) == (0.3, 0)


def test_a_header_sent_twice_counts_as_its_values_joined() -> None:
    control: Headers = [(b"x-envoy-retry-on", b"connect-failure"), (b"x-envoy-retry-on", b"retriable-4xx")]
    changed, _ = overridden(decision(None), None, control, INTERNAL)
    assert changed.retry is not None
    assert changed.retry.retry_on_connect_failure and changed.retry.retriable_statuses == frozenset({409})
    control = [(b"x-envoy-max-retries", b"3"), (b"x-envoy-max-retries", b"4")]  # "3,4": not a number
    changed, _ = overridden(decision(GATEWAY), None, control, INTERNAL)
    assert changed.retry is not None and changed.retry.max_retries == 1


def test_headers_consumed_but_not_honoured_change_nothing() -> None:
    control: Headers = [
        (b"x-envoy-hedge-on-per-try-timeout", b"true"),
        (b"x-envoy-upstream-alt-stat-name", b"x"),
    ]
    changed, timeout = overridden(decision(GATEWAY), 15.0, control, INTERNAL)
    assert (changed.retry, timeout) == (GATEWAY, 15.0)


@pytest.mark.parametrize(
    "forwarded_for",
    ["10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1", "127.0.0.1", " 10.1.1.1 ", "fd12::1", "::1"],
)
def test_internal_requests(forwarded_for: str) -> None:
    assert internal_request(forwarded_for.encode())


@pytest.mark.parametrize(
    "forwarded_for",
    [None, "", "8.8.8.8", "172.32.0.1", "127.0.0.2", "fc00::1", "2001:db8::1", "10.0.0.1, 10.0.0.2",
     "10.0.0.1,", "10.0.0.1:80", "localhost", "10.0.0.\xff"],
)  # fmt: skip
def test_external_requests(forwarded_for: str | None) -> None:
    raw = forwarded_for.encode("latin-1") if forwarded_for is not None else None
    assert not internal_request(raw)


@pytest.mark.parametrize("forwarded_for", [None, b"203.0.113.9", b"10.0.0.1, 10.0.0.2"])
def test_an_external_request_keeps_the_routes_policy_and_timeout(forwarded_for: bytes | None) -> None:
    """Envoy's connection manager strips them from an external request before the router sees them (an
    application's own call has no x-forwarded-for: external)."""
    route = decision(GATEWAY)
    control: Headers = [(b"x-envoy-max-retries", b"5"), (b"x-envoy-upstream-rq-timeout-ms", b"100")]
    assert overridden(route, 15.0, control, forwarded_for) == (route, 15.0)
