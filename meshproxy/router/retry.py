"""Retry decisions as App Mesh's Envoy made them (spec §4.5): pure functions of policy and outcome.

Plus the retry budget (issue 14), which App Mesh's Envoy did not have (it rendered `max_retries` 2147483647;
Envoy's own default is 3 retries in flight per cluster, which let a third of the requests fail against an
upstream failing one in three). A fixed ratio cannot both keep the success rate and stop a retry storm: two
retries at one failure in three need 0.44 retries per request, while a total outage must not multiply the
load. So the budget follows the cluster's recent success rate, in the spirit of gRPC's retry throttling
(gRFC A6: a token bucket that failures drain and successes refill) and linkerd's budgets (a floor of
retries per second): see `config.snapshot.RetryBudget`; the state is the cluster's
(`upstream.limits.RetryBudgetState`).
"""

from __future__ import annotations

import enum
import random

from meshproxy.config.snapshot import RetryBudget, RetryPolicy
from meshproxy.core.outcomes import AttemptFailure

# Envoy's default retry back-off: 25 ms base interval, exponential with full jitter, capped at 10x base.
BACKOFF_BASE_S = 0.025
BACKOFF_MAX_S = 0.250
# Request bodies up to this size are kept for replay; a larger body makes the request non-retriable
# (Envoy's per_connection_buffer_limit_bytes default is 1 MiB).
RETRY_BUFFER_LIMIT = 1024 * 1024


def should_retry_status(policy: RetryPolicy | None, status: int, grpc_status: int | None = None) -> bool:
    if policy is None:
        return False
    if status in policy.retriable_statuses:
        return True
    return grpc_status is not None and grpc_status in policy.grpc_statuses


def should_retry_failure(policy: RetryPolicy | None, failure: AttemptFailure) -> bool:
    if policy is None:
        return False
    if failure is AttemptFailure.CONNECT_FAILURE:
        return policy.retry_on_connect_failure or policy.retry_on_reset
    if failure is AttemptFailure.RESET:
        return policy.retry_on_reset
    if failure is AttemptFailure.REFUSED_STREAM:
        return policy.retry_on_refused_stream or policy.retry_on_reset
    if failure is AttemptFailure.PER_TRY_TIMEOUT:
        # Envoy retries a per-try timeout under `5xx`, `gateway-error` and `reset`.
        return policy.retry_on_reset or 504 in policy.retriable_statuses
    return False


def backoff_delay(retry_number: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential back-off for the n-th retry (1-based)."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** (retry_number - 1)))
    return float((rng or random).random() * ceiling)


class RetryVerdict(enum.Enum):
    RETRY = "retry"
    GIVE_UP = "give-up"  # not a retriable outcome: it stands
    LIMIT_EXCEEDED = "limit-exceeded"  # retriable, but retries are used up (or the body was not kept): URX
    OVERFLOW = "overflow"  # retriable, but the cluster's retry budget is spent: UO


def _verdict(policy: RetryPolicy | None, retriable: bool, replayable: bool, retries: int) -> RetryVerdict:
    if policy is None or not retriable:
        return RetryVerdict.GIVE_UP
    if replayable and retries < policy.max_retries:
        return RetryVerdict.RETRY
    return RetryVerdict.LIMIT_EXCEEDED if retries else RetryVerdict.GIVE_UP


def failure_verdict(
    policy: RetryPolicy | None, failure: AttemptFailure, replayable: bool, retries: int
) -> RetryVerdict:
    """After an attempt failed without a response (`retries` already made)."""
    return _verdict(policy, should_retry_failure(policy, failure), replayable, retries)


def response_verdict(
    policy: RetryPolicy | None, status: int, grpc_status: int | None, replayable: bool, retries: int
) -> RetryVerdict:
    """After a response head arrived (before any of the response went downstream)."""
    if policy is None or not should_retry_status(policy, status, grpc_status):
        return RetryVerdict.GIVE_UP  # the common case: once per response, so without the general verdict
    return _verdict(policy, True, replayable, retries)


# ------------------------------------------------------------------------------------------- retry budget


def budget_tokens(tokens: float, failed: bool, budget: RetryBudget) -> float:
    """The success tokens after one attempt: a failure takes one, a success gives back `token_ratio`."""
    if failed:
        return max(0.0, tokens - 1.0)
    return min(budget.max_tokens, tokens + budget.token_ratio)


def budget_allows(tokens: float, floor: float, elapsed: float, budget: RetryBudget) -> tuple[bool, float]:
    """May one more retry go? With more than half the success tokens left, yes; else if the floor (refilled
    at `min_retries_per_second` over `elapsed` seconds, holding at most one second's worth) has a whole
    token, yes, taking it. Returns the answer and the floor's tokens after it."""
    rate = budget.min_retries_per_second
    floor = min(rate, floor + elapsed * rate)
    if tokens * 2.0 > budget.max_tokens:
        return True, floor
    if floor >= 1.0:
        return True, floor - 1.0
    return False, floor
