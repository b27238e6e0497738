"""Host health decisions, as Envoy makes them (pure functions; upstream/cluster.py applies them).

- Panic mode: below Envoy's healthy panic threshold (50 % of the hosts healthy) the load balancer ignores
  health and spreads over every host, rather than piling the load onto the few healthy ones.
- Outlier detection (a listener's `outlierDetection`, applied by the clients of a node): `maxServerErrors`
  consecutive 5xx (or failures without a response) eject a host for `baseEjectionDuration` times the number
  of times it was ejected; at most `maxEjectionPercent` of the hosts are ejected at once, but App Mesh always
  allows one (spec §4.2).
- Active health checks (a listener's `healthCheck`): `unhealthyThreshold` consecutive failed checks take a
  healthy host out, `healthyThreshold` consecutive passed checks bring it back; a new host is out until its
  first check, and one passed check is enough then (Envoy: "during startup, only a single successful health
  check is required to mark a host healthy").
"""

from __future__ import annotations

import random

from meshproxy.config.snapshot import HealthCheck, OutlierDetection

HEALTHY_PANIC_THRESHOLD_PERCENT = 50  # Envoy's common_lb_config.healthy_panic_threshold default
HEALTH_CHECK_JITTER = 0.1  # each interval is stretched by up to 10 %, so sidecars drift out of step


def in_panic(healthy: int, total: int) -> bool:
    """Too few healthy hosts: balance over all of them."""
    return healthy * 100 < total * HEALTHY_PANIC_THRESHOLD_PERCENT


def may_eject(outlier: OutlierDetection, ejected: int, hosts: int) -> bool:
    """May one more host be ejected, with `ejected` of `hosts` out already?"""
    return ejected < max(1, hosts * outlier.max_ejection_percent // 100)


def ejection_seconds(outlier: OutlierDetection, ejections: int) -> float:
    """How long the `ejections`-th ejection of a host lasts (Envoy: base_ejection_time x times ejected)."""
    return outlier.base_ejection * ejections


def after_check(failed: bool, streak: int, passed: bool, check: HealthCheck, first: bool) -> tuple[bool, int]:
    """A host's (failed, streak) after one check. `streak` counts consecutive results: > 0 passes, < 0
    failures. `first`: the host's first check, which alone decides."""
    streak = (max(streak, 0) + 1) if passed else (min(streak, 0) - 1)
    if passed and failed and (first or streak >= check.healthy_threshold):
        return False, streak
    if not passed and not failed and -streak >= check.unhealthy_threshold:
        return True, streak
    return failed, streak


def next_check_in(check: HealthCheck, rng: random.Random) -> float:
    """Seconds to the next check of a host: the interval plus up to 10 % of jitter."""
    return check.interval * (1.0 + HEALTH_CHECK_JITTER * rng.random())


def first_check_in(check: HealthCheck, rng: random.Random) -> float:
    """Seconds to a new host's first check: soon (it is out of the pick set until then), spread over up to
    a tenth of the interval so that many sidecars started together do not probe in step."""
    return check.interval * HEALTH_CHECK_JITTER * rng.random()
