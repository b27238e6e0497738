"""An upstream endpoint and its passive health (outlier detection, spec §4.2)."""

from __future__ import annotations

import enum
import time

from meshproxy.config.snapshot import OutlierDetection


class HostHealth(enum.Enum):
    HEALTHY = "healthy"
    EJECTED = "ejected"  # outlier detection: consecutive 5xx
    FAILED_ACTIVE_HC = "failed_active_hc"


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
        "health",
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
        self.health = HostHealth.HEALTHY
        self.consecutive_5xx = 0
        self.ejected_until = 0.0
        self.ejections = 0
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
        return f"<Host {self.label} {self.health.value} cx_active={self.cx_active} rq_total={self.rq_total}>"

    def available(self, now: float) -> bool:
        if self.health is HostHealth.EJECTED and now >= self.ejected_until:
            self.health = HostHealth.HEALTHY  # ejection period over: back in rotation
        return self.health is HostHealth.HEALTHY

    def record_result(self, status: int, outlier: OutlierDetection | None) -> bool:
        """Count a response; returns True when this response ejects the host (consecutive 5xx reached)."""
        if status >= 500:
            self.rq_error += 1
            self.consecutive_5xx += 1
            if outlier is not None and self.consecutive_5xx >= outlier.max_server_errors:
                self.consecutive_5xx = 0
                self.ejections += 1
                self.health = HostHealth.EJECTED
                # Envoy: ejection time = base_ejection_time * number of times ejected
                self.ejected_until = time.monotonic() + outlier.base_ejection * self.ejections
                return True
        else:
            self.rq_success += 1
            self.consecutive_5xx = 0
        return False
