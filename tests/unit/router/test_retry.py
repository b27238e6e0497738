"""Retry decisions (meshproxy/router/retry.py) for the policies App Mesh renders (spec §4.5)."""

from __future__ import annotations

import random

import pytest

from meshproxy.config.snapshot import RetryBudget, RetryPolicy
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.router.retry import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    backoff_delay,
    budget_allows,
    budget_tokens,
    should_retry_failure,
    should_retry_status,
)

SERVER_ERROR = frozenset({500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511})
GATEWAY_ERROR = frozenset({502, 503, 504})
CLIENT_ERROR = frozenset({409})

# App Mesh's implicit default policy (spec §4.5 [UG-defaults]): 503, UNAVAILABLE, connect-failure,
# refused-stream, reset; 2 retries.
DEFAULT_LIKE = RetryPolicy(
    max_retries=2,
    per_try_timeout=None,
    retriable_statuses=frozenset({503}),
    retry_on_reset=True,
    retry_on_connect_failure=True,
    retry_on_refused_stream=True,
    grpc_statuses=frozenset({14}),
    is_default=True,
)
# httpRetryEvents [gateway-error, client-error, stream-error] + tcpRetryEvents [connection-error]: what
# AWS recommends and what [DUMP] shows rendered as "reset,refused-stream,retriable-status-codes".
RECOMMENDED = RetryPolicy(
    max_retries=3,
    per_try_timeout=2.0,
    retriable_statuses=GATEWAY_ERROR | CLIENT_ERROR,
    retry_on_reset=True,
    retry_on_connect_failure=True,
    retry_on_refused_stream=True,
)
SERVER_ERRORS_ONLY = RetryPolicy(
    max_retries=1, per_try_timeout=1.0, retriable_statuses=SERVER_ERROR, retry_on_reset=True
)
CLIENT_ERRORS_ONLY = RetryPolicy(max_retries=1, per_try_timeout=1.0, retriable_statuses=CLIENT_ERROR)
CONNECTION_ERROR_ONLY = RetryPolicy(max_retries=1, per_try_timeout=1.0, retry_on_connect_failure=True)
STREAM_ERROR_ONLY = RetryPolicy(max_retries=1, per_try_timeout=1.0, retry_on_refused_stream=True)
GRPC_ONLY = RetryPolicy(max_retries=2, per_try_timeout=1.0, grpc_statuses=frozenset({1, 4, 8, 13, 14}))


# ------------------------------------------------------------------------------------------------ statuses


@pytest.mark.parametrize(
    ("policy", "retried"),
    [
        (DEFAULT_LIKE, {503}),
        (RECOMMENDED, {409, 502, 503, 504}),
        (SERVER_ERRORS_ONLY, set(SERVER_ERROR)),
        (CLIENT_ERRORS_ONLY, {409}),
        (CONNECTION_ERROR_ONLY, set()),
        (GRPC_ONLY, set()),
        (None, set()),
    ],
    ids=["default", "recommended", "server-error", "client-error", "connection-error", "grpc", "no-policy"],
)
def test_should_retry_status(policy: RetryPolicy | None, retried: set[int]) -> None:
    for status in (200, 201, 204, 301, 304, 400, 404, 409, 429, *range(500, 512)):
        assert should_retry_status(policy, status) is (status in retried), status


def test_509_is_not_a_server_error_event() -> None:
    # server-error is 500-508, 510, 511 (API HttpRetryPolicy): 509 is not in the list.
    assert not should_retry_status(SERVER_ERRORS_ONLY, 509)


@pytest.mark.parametrize(
    ("policy", "grpc_status", "expected"),
    [
        (DEFAULT_LIKE, 14, True),  # UNAVAILABLE
        (DEFAULT_LIKE, 4, False),
        (GRPC_ONLY, 1, True),  # cancelled
        (GRPC_ONLY, 4, True),  # deadline-exceeded
        (GRPC_ONLY, 8, True),  # resource-exhausted
        (GRPC_ONLY, 13, True),  # internal
        (GRPC_ONLY, 0, False),  # OK
        (GRPC_ONLY, 5, False),  # NOT_FOUND
        (RECOMMENDED, 14, False),
        (None, 14, False),
    ],
)
def test_should_retry_grpc_status(policy: RetryPolicy | None, grpc_status: int, expected: bool) -> None:
    # gRPC errors travel in a 200 response; the decision rests on grpc-status.
    assert should_retry_status(policy, 200, grpc_status) is expected


def test_grpc_status_none_falls_back_to_the_http_status() -> None:
    assert should_retry_status(GRPC_ONLY, 200, None) is False
    assert should_retry_status(DEFAULT_LIKE, 503, None) is True


# ------------------------------------------------------------------------------------------------ failures

F = AttemptFailure


@pytest.mark.parametrize(
    ("policy", "retried"),
    [
        (DEFAULT_LIKE, {F.CONNECT_FAILURE, F.RESET, F.REFUSED_STREAM, F.PER_TRY_TIMEOUT}),
        (RECOMMENDED, {F.CONNECT_FAILURE, F.RESET, F.REFUSED_STREAM, F.PER_TRY_TIMEOUT}),
        # reset covers connect failures and refused streams (Envoy's `reset` policy)
        (SERVER_ERRORS_ONLY, {F.CONNECT_FAILURE, F.RESET, F.REFUSED_STREAM, F.PER_TRY_TIMEOUT}),
        (CLIENT_ERRORS_ONLY, set()),
        (CONNECTION_ERROR_ONLY, {F.CONNECT_FAILURE}),
        (STREAM_ERROR_ONLY, {F.REFUSED_STREAM}),
        (GRPC_ONLY, set()),
        (None, set()),
    ],
    ids=[
        "default",
        "recommended",
        "server-error",
        "client-error",
        "connection-error",
        "stream-error",
        "grpc",
        "none",
    ],
)
def test_should_retry_failure(policy: RetryPolicy | None, retried: set[AttemptFailure]) -> None:
    for failure in AttemptFailure:
        assert should_retry_failure(policy, failure) is (failure in retried), failure


@pytest.mark.parametrize("policy", [DEFAULT_LIKE, RECOMMENDED, SERVER_ERRORS_ONLY])
def test_overflow_and_no_healthy_upstream_are_never_retried(policy: RetryPolicy) -> None:
    # A circuit-breaker overflow (UO) is never retried: retrying would only add load to a saturated cluster.
    assert not should_retry_failure(policy, AttemptFailure.OVERFLOW)
    assert not should_retry_failure(policy, AttemptFailure.NO_HEALTHY_UPSTREAM)


def test_per_try_timeout_is_retried_with_504_in_the_statuses_even_without_reset() -> None:
    policy = RetryPolicy(max_retries=1, per_try_timeout=1.0, retriable_statuses=frozenset({504}))
    assert should_retry_failure(policy, AttemptFailure.PER_TRY_TIMEOUT)
    assert not should_retry_failure(policy, AttemptFailure.RESET)


# ------------------------------------------------------------------------------------------------- backoff


def ceiling(retry_number: int) -> float:
    return min(0.25, 0.025 * 2.0 ** (retry_number - 1))


def test_backoff_constants_are_envoys() -> None:
    assert (BACKOFF_BASE_S, BACKOFF_MAX_S) == (0.025, 0.25)


@pytest.mark.parametrize("retry_number", range(1, 9))
def test_backoff_delay_is_full_jitter_within_the_ceiling(retry_number: int) -> None:
    rng = random.Random(retry_number)
    delays = [backoff_delay(retry_number, rng) for _ in range(2_000)]
    top = ceiling(retry_number)
    assert all(0.0 <= d <= top for d in delays)
    # full jitter: the whole range is used, not a fixed delay or a band near the ceiling
    assert min(delays) < 0.05 * top
    assert max(delays) > 0.95 * top
    assert 0.4 * top < sum(delays) / len(delays) < 0.6 * top


def test_backoff_ceiling_grows_then_caps() -> None:
    assert [ceiling(n) for n in (1, 2, 3, 4, 5)] == [0.025, 0.05, 0.1, 0.2, 0.25]
    rng = random.Random(3)
    assert max(backoff_delay(30, rng) for _ in range(500)) <= 0.25


def test_backoff_without_a_random_source_uses_the_module_one() -> None:
    assert 0.0 <= backoff_delay(2) <= 0.05


# --- the retry budget (issue 14) ----------------------------------------------------------------------------

BUDGET = RetryBudget(max_tokens=10.0, token_ratio=1.0, min_retries_per_second=2.0)


def test_failures_take_a_token_and_successes_give_token_ratio_back_within_bounds() -> None:
    assert budget_tokens(10.0, True, BUDGET) == 9.0
    assert budget_tokens(0.0, True, BUDGET) == 0.0
    assert budget_tokens(9.5, False, BUDGET) == 10.0
    half = RetryBudget(max_tokens=10.0, token_ratio=0.5)
    assert budget_tokens(4.0, False, half) == 4.5


def test_retries_go_while_more_than_half_the_tokens_are_left() -> None:
    assert budget_allows(5.5, 0.0, 0.0, BUDGET) == (True, 0.0)
    # at half, the floor decides: it has a whole token, then none, then refills at 2 per second
    assert budget_allows(5.0, 2.0, 0.0, BUDGET) == (True, 1.0)
    assert budget_allows(5.0, 0.5, 0.0, BUDGET) == (False, 0.5)
    assert budget_allows(5.0, 0.5, 0.25, BUDGET) == (True, 0.0)
    # the floor holds at most one second's worth
    assert budget_allows(0.0, 0.0, 60.0, BUDGET) == (True, 1.0)


def test_the_budget_follows_the_success_rate() -> None:
    """Drive the pure rules with a success rate: above one half (with ratio 1) the tokens stay high and
    retries flow; below it they drain and only the floor's retries go."""
    rng = random.Random(4)
    for failure_rate, retries_flow in ((1 / 3, True), (2 / 3, False)):
        tokens, refused = BUDGET.max_tokens, 0
        for _ in range(2000):
            failed = rng.random() < failure_rate
            tokens = budget_tokens(tokens, failed, BUDGET)
            if failed and not budget_allows(tokens, 0.0, 0.0, BUDGET)[0]:
                refused += 1
        assert (refused < 100) is retries_flow, (failure_rate, refused)
