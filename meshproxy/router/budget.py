"""Retries and the cluster on the request path: the retry budget's state (upstream/limits.py
`RetryBudgetState`) run through the pure rules of router/retry.py, what an attempt's outcome tells the
cluster, and how a retriable outcome that is not retried is flagged."""

from __future__ import annotations

from meshproxy.core.outcomes import AttemptFailure, ResponseFlag
from meshproxy.router.retry import RetryVerdict, budget_allows, budget_tokens
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.host import Host

# Failures that say something about the host (outlier detection, the retry budget); an overflow, no host, or
# a request the codec refused do not.
HOST_FAILURES = frozenset(
    {AttemptFailure.CONNECT_FAILURE, AttemptFailure.RESET, AttemptFailure.REFUSED_STREAM,
     AttemptFailure.PER_TRY_TIMEOUT}
)  # fmt: skip


def count_attempt(cluster: ClusterRuntime, failed: bool) -> None:
    """One attempt's outcome: a failure (a retriable answer, a 5xx, no answer) spends a token of the
    cluster's retry budget, a success earns some back."""
    budget = cluster.retry_budget
    if budget is not None:
        budget.tokens = budget_tokens(budget.tokens, failed, budget.budget)


def host_failed(cluster: ClusterRuntime, host: Host) -> None:
    """An attempt on `host` failed without a response: outlier detection and the retry budget count it."""
    cluster.record_failure(host)
    count_attempt(cluster, True)


def admit_retry(cluster: ClusterRuntime | None, verdict: RetryVerdict, now: float) -> RetryVerdict:
    """A RETRY goes if the cluster's retry budget allows it; else it is an OVERFLOW (counted
    upstream_rq_retry_overflow and flagged UO, as Envoy's retry circuit breaker does: the response or
    failure at hand stands)."""
    budget = cluster.retry_budget if cluster is not None else None
    if verdict is not RetryVerdict.RETRY or budget is None:
        return verdict
    allowed, budget.floor = budget_allows(budget.tokens, budget.floor, now - budget.floor_at, budget.budget)
    budget.floor_at = now
    if allowed:
        return verdict
    assert cluster is not None
    cluster.stats.upstream_rq_retry_overflow += 1
    return RetryVerdict.OVERFLOW


def not_retried_flag(cluster: ClusterRuntime | None, verdict: RetryVerdict) -> str:
    """The response flag of a retriable outcome that was not retried: out of budget (UO) or out of retries
    (URX, and Envoy counts the request as upstream_rq_retry_limit_exceeded)."""
    if verdict is RetryVerdict.OVERFLOW:
        return ResponseFlag.UPSTREAM_OVERFLOW.value
    if cluster is not None:
        cluster.stats.upstream_rq_retry_limit_exceeded += 1
    return ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED.value
