"""What one load-generator run measured, whichever generator ran it (wrk, h2load, bench.tcp_load).

Every generator's output is parsed into one `LoadResult`, so the medians, the table and results.json do not
care which tool produced it. `operations` are what the scenario counts: HTTP requests (wrk, h2load), TCP
request/response messages, or, for a bulk TCP stream, nothing (its figure is bytes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One timed run. Latencies in microseconds (0 when the generator does not measure them);
    `socket_errors` excludes wrong answers (`status_errors`: non-2xx/3xx, short or failed exchanges)."""

    requests: int
    duration_s: float
    bytes: int
    socket_errors: int
    status_errors: int
    timeouts: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    max_us: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Payload throughput in MB/s (10^6 bytes), the bulk TCP figure."""
        return self.bytes / 1e6 / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.status_errors


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100] of already sorted values; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} outside (0, 100]")
    # q * n / 100 in floating point can land a hair above an integer (99.9 * 1000 / 100 = 999.0000000000001).
    rank = math.ceil(q * len(sorted_values) / 100 - 1e-9)
    return float(sorted_values[max(rank, 1) - 1])
