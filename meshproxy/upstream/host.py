"""An upstream endpoint and its health: passive (outlier detection) and active (health checks), spec §4.2.

A host is healthy when it is neither ejected by outlier detection nor failing its active health check, as
Envoy's health flags say (`/clusters` prints them). The decisions that change them are pure functions in
upstream/health.py; the cluster (upstream/cluster.py) applies them and keeps the counts.
"""

from __future__ import annotations


class Host:
    """One address of a cluster. Counters here feed /clusters; the cluster's stats carry Envoy's totals."""

    __slots__ = (
        "address",
        "consecutive_5xx",
        "cx_active",
        "cx_connect_fail",
        "cx_total",
        "ejected_until",
        "ejections",
        "hc_failed",
        "hc_pending",
        "hc_streak",
        "label",
        "port",
        "rq_active",
        "rq_error",
        "rq_success",
        "rq_timeout",
        "rq_total",
        "weight",
    )  # fmt: skip

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.label = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.consecutive_5xx = 0
        self.ejected_until = 0.0  # outlier detection: 0 when not ejected, else when it comes back (clock)
        self.ejections = 0
        self.hc_failed = False  # active health check: failing (Envoy's FAILED_ACTIVE_HC)
        self.hc_pending = False  # not checked yet (PENDING_ACTIVE_HC): a new host starts failed and pending
        self.hc_streak = 0  # consecutive check results: > 0 successes, < 0 failures
        self.cx_active = 0
        self.cx_total = 0
        self.cx_connect_fail = 0
        self.rq_total = 0
        self.rq_error = 0
        self.rq_success = 0
        self.rq_timeout = 0
        self.rq_active = 0
        self.weight = 1

    def __repr__(self) -> str:
        return f"<Host {self.label} {self.health_flags} cx_active={self.cx_active} rq_total={self.rq_total}>"

    @property
    def healthy(self) -> bool:
        """In the pick set (outside panic mode)."""
        return not self.ejected_until and not self.hc_failed

    @property
    def health_flags(self) -> str:
        """Envoy's /clusters `health_flags`: `healthy`, or the reasons it is not."""
        flags = ""
        if self.hc_failed:
            flags += "/failed_active_hc"
        if self.ejected_until:
            flags += "/failed_outlier_check"
        if self.hc_pending:
            flags += "/pending_active_hc"
        return flags or "healthy"

    def count_result(self, failed: bool) -> int:
        """Count one response (or an attempt that failed without one); returns the consecutive failures."""
        if failed:
            self.rq_error += 1
            self.consecutive_5xx += 1
        else:
            self.rq_success += 1
            self.consecutive_5xx = 0
        return self.consecutive_5xx
