"""A cluster's circuit breakers: its `connectionPool` limits and the counts they are checked against.

App Mesh renders a listener's `connectionPool` as the circuit breakers of the cluster that reaches it (spec
§4.2): `http` maxConnections + maxPendingRequests, `http2`/`grpc` maxRequests, `tcp` maxConnections. One
`CircuitBreakers` per cluster is shared by its host pools (HTTP/1.1 and HTTP/2) and its TCP sessions, so a
limit holds across hosts, as Envoy's per-cluster thresholds do. Each refusal is counted with Envoy's stat.
The retry budget is one of Envoy's circuit-breaker thresholds too (`retry_budget`); its state lives here.
"""

from __future__ import annotations

from meshproxy.config.snapshot import ConnectionPoolLimits, RetryBudget
from meshproxy.telemetry.stats import ClusterStats


class CircuitBreakers:
    __slots__ = ("connections", "limits", "pending", "requests", "stats")

    def __init__(self, limits: ConnectionPoolLimits, stats: ClusterStats) -> None:
        self.limits = limits
        self.stats = stats
        self.connections = 0  # open or being opened, HTTP and TCP alike
        self.pending = 0  # requests waiting for a connection or a stream
        self.requests = 0  # requests attached to an upstream connection or stream

    def __repr__(self) -> str:
        return (
            f"<CircuitBreakers connections={self.connections} pending={self.pending} "
            f"requests={self.requests}>"
        )

    def open_connection(self) -> bool:
        """Take a connection slot; False (counted upstream_cx_overflow) at maxConnections."""
        if self.connections >= self.limits.max_connections:
            self.stats.upstream_cx_overflow += 1
            return False
        self.connections += 1
        return True

    def connection_closed(self) -> None:
        self.connections -= 1

    def connection_available(self) -> bool:
        return self.connections < self.limits.max_connections

    def admit_pending(self) -> bool:
        """Queue one more waiting request; False (upstream_rq_pending_overflow) at maxPendingRequests."""
        if self.pending >= self.limits.max_pending_requests:
            self.stats.upstream_rq_pending_overflow += 1
            return False
        self.pending += 1
        stats = self.stats
        stats.upstream_rq_pending_total += 1
        stats.upstream_rq_pending_active += 1
        return True

    def pending_done(self) -> None:
        self.pending -= 1
        self.stats.upstream_rq_pending_active -= 1

    def request_allowed(self) -> bool:
        """Below maxRequests? Envoy counts a refusal as upstream_rq_pending_overflow too."""
        if self.requests >= self.limits.max_requests:
            self.stats.upstream_rq_pending_overflow += 1
            return False
        return True

    def request_started(self) -> None:
        self.requests += 1
        self.stats.upstream_rq_active += 1

    def request_done(self) -> None:
        self.requests -= 1
        self.stats.upstream_rq_active -= 1


class RetryBudgetState:
    """A cluster's retry budget as it stands (the decisions are router/retry.py's): its success tokens, and
    the floor's tokens with the time they were last topped up (on the cluster's clock)."""

    __slots__ = ("budget", "floor", "floor_at", "tokens")

    def __init__(self, budget: RetryBudget, now: float) -> None:
        self.budget = budget
        self.tokens = budget.max_tokens
        self.floor = budget.min_retries_per_second
        self.floor_at = now

    def __repr__(self) -> str:
        return f"<RetryBudgetState tokens={self.tokens:g}/{self.budget.max_tokens:g} floor={self.floor:.2f}>"
