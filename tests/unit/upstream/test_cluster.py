"""Host selection and passive health (meshproxy/upstream/cluster.py, host.py): pure decisions, no sockets.

`ClusterRuntime` is built directly from a `Cluster` config with static hosts set by `set_hosts`; nothing here
starts discovery or opens a pool. Time is a `Ticks` clock the test moves by hand (the cluster's Clock seam),
never a sleep. The same behaviour through the whole request path is in tests/component/upstream/.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

import pytest

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.config.snapshot import (
    Cluster,
    HealthCheck,
    ListenerProtocol,
    OutlierDetection,
    StaticDiscovery,
)
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.discovery import order_addresses
from meshproxy.upstream.health import after_check, ejection_seconds, in_panic, may_eject
from meshproxy.upstream.host import Host

V4, V6 = socket.AF_INET, socket.AF_INET6

# ---------------------------------------------------------------------------------------- order_addresses

# As getaddrinfo returns them: mixed families, and the same address once per socket type.
RESOLVED = [(V6, "fd00::1"), (V4, "10.0.0.1"), (V6, "fd00::2"), (V4, "10.0.0.2"), (V4, "10.0.0.1")]


@pytest.mark.parametrize(
    ("preference", "expected"),
    [
        ("IPv4_ONLY", ["10.0.0.1", "10.0.0.2"]),
        ("IPv6_ONLY", ["fd00::1", "fd00::2"]),
        ("IPv4_PREFERRED", ["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"]),
        ("IPv6_PREFERRED", ["fd00::1", "fd00::2", "10.0.0.1", "10.0.0.2"]),
        # unset: the resolver's own order (a deliberate choice in cluster.py for loopback-only setups)
        (None, ["fd00::1", "10.0.0.1", "fd00::2", "10.0.0.2"]),
    ],
)
def test_order_addresses(preference: str | None, expected: list[str]) -> None:
    assert order_addresses(RESOLVED, preference) == expected


def test_order_addresses_only_family_missing_gives_nothing() -> None:
    # spec §4.1: IPv6_ONLY with an IPv4-only answer is empty (the cluster then reports "no usable address")
    assert order_addresses([(V4, "10.0.0.1")], "IPv6_ONLY") == []
    assert order_addresses([(V6, "fd00::1")], "IPv4_ONLY") == []
    assert order_addresses([], None) == []


def test_order_addresses_accepts_a_generator() -> None:
    assert order_addresses(((f, a) for f, a in RESOLVED), "IPv4_ONLY") == ["10.0.0.1", "10.0.0.2"]


# ------------------------------------------------------------------------------------------------ helpers

OUTLIER = OutlierDetection(max_server_errors=3, interval=10.0, base_ejection=30.0, max_ejection_percent=100)


class Ticks:
    """A clock whose time moves only when the test says (these tests arm no timers)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        raise AssertionError("no timers here")

    def call_soon(self, callback: Callable[[], None]) -> object:
        raise AssertionError("no timers here")


def runtime(n: int, outlier: OutlierDetection | None = OUTLIER, clock: Ticks | None = None) -> ClusterRuntime:
    addresses = tuple((f"10.0.0.{i + 1}", 8080) for i in range(n))
    config = Cluster(
        name="cds_egress_apps_backend_http_8080",
        discovery=StaticDiscovery(addresses),
        protocol=ListenerProtocol.HTTP,
        virtual_node="backend",
        outlier=outlier,
    )
    cluster = ClusterRuntime(config, ClusterStats(), HttptoolsClientCodec, clock=clock or Ticks())
    cluster.set_hosts(addresses)
    return cluster


def eject(cluster: ClusterRuntime, host: Host, seconds: float = 60.0) -> None:
    host.ejected_until = cluster.clock.now() + seconds
    cluster.refresh_health()


def picks(cluster: ClusterRuntime, count: int, exclude: tuple[Host, ...] = ()) -> list[Host | None]:
    return [cluster.pick_host(exclude) for _ in range(count)]


# ---------------------------------------------------------------------------------------------- set_hosts


def test_set_hosts_keeps_known_hosts_and_updates_membership() -> None:
    cluster = runtime(3)
    first = cluster.hosts[0]
    first.rq_total = 7
    cluster.set_hosts([("10.0.0.1", 8080), ("10.0.0.9", 8080)])
    assert cluster.hosts[0] is first  # the same Host object: counters and health survive a refresh
    assert [h.label for h in cluster.hosts] == ["10.0.0.1:8080", "10.0.0.9:8080"]
    assert (cluster.stats.membership_total, cluster.stats.membership_healthy) == (2, 2)
    assert cluster.resolved


def test_host_labels_flags_and_repr() -> None:
    assert Host("10.0.0.1", 80).label == "10.0.0.1:80"
    assert Host("fd00::1", 80).label == "[fd00::1]:80"
    assert repr(Host("10.0.0.1", 80)) == "<Host 10.0.0.1:80 healthy cx_active=0 rq_total=0>"
    assert repr(runtime(2)) == "<Cluster cds_egress_apps_backend_http_8080 hosts=2 connections=0 pending=0>"
    host = Host("10.0.0.1", 80)
    host.hc_failed = host.hc_pending = True
    host.ejected_until = 5.0
    assert host.health_flags == "/failed_active_hc/failed_outlier_check/pending_active_hc"
    assert not host.healthy


# ---------------------------------------------------------------------------------------------- pick_host


def test_pick_host_round_robin() -> None:
    cluster = runtime(3)
    chosen = picks(cluster, 9)
    assert chosen[:3] == chosen[3:6] == chosen[6:]  # a fixed rotation
    assert set(chosen) == set(cluster.hosts)


def test_pick_host_empty_cluster() -> None:
    assert runtime(0).pick_host() is None


def test_pick_host_avoids_tried_hosts() -> None:
    # spec §4.5: retries use the previous_hosts predicate, so a retry goes to a host not tried yet.
    cluster = runtime(3)
    a, b, c = cluster.hosts
    for _ in range(6):
        assert cluster.pick_host((a,)) in (b, c)
        assert cluster.pick_host((a, b)) is c


def test_pick_host_falls_back_to_a_tried_host_when_no_other_is_available() -> None:
    cluster = runtime(2)
    a, b = cluster.hosts
    eject(cluster, b)
    assert picks(cluster, 4, exclude=(a,)) == [a] * 4
    assert picks(cluster, 4, exclude=(a, b)) == [a] * 4


def test_pick_host_single_host_even_if_tried() -> None:
    cluster = runtime(1)
    (only,) = cluster.hosts
    assert picks(cluster, 3, exclude=(only,)) == [only] * 3


def test_pick_host_all_tried_still_round_robins() -> None:
    cluster = runtime(3)
    assert set(picks(cluster, 3, exclude=tuple(cluster.hosts))) <= set(cluster.hosts)
    assert all(h is not None for h in picks(cluster, 3, exclude=tuple(cluster.hosts)))


def test_an_ejected_host_is_skipped_until_its_ejection_time_passes_on_the_clock() -> None:
    clock = Ticks()
    cluster = runtime(3, clock=clock)
    a, b, c = cluster.hosts
    eject(cluster, b, 60.0)
    assert set(picks(cluster, 12)) == {a, c}
    assert cluster.stats.outlier_detection_ejections_active == 1
    clock.t += 59.999
    assert b not in picks(cluster, 6)
    clock.t += 0.001  # the ejection period is over
    assert b in picks(cluster, 3)
    assert (b.health_flags, cluster.stats.outlier_detection_ejections_active) == ("healthy", 0)
    assert cluster.stats.membership_healthy == 3


def test_single_ejected_host_is_used_in_panic() -> None:
    cluster = runtime(1)
    eject(cluster, cluster.hosts[0])
    assert cluster.pick_host() is cluster.hosts[0]
    assert cluster.stats.lb_healthy_panic == 1


def test_all_hosts_ejected_still_serves_in_panic_mode_and_spreads_the_load() -> None:
    # Envoy's healthy panic threshold (50 %): too few healthy hosts and the balancer ignores health.
    cluster = runtime(3)
    for host in cluster.hosts:
        eject(cluster, host)
    assert set(picks(cluster, 6)) == set(cluster.hosts)
    assert cluster.stats.lb_healthy_panic == 6


def test_panic_mode_below_the_threshold_balances_across_all_hosts() -> None:
    cluster = runtime(4)
    for host in cluster.hosts[1:]:
        eject(cluster, host)  # 1 of 4 healthy: 25 % < 50 %
    assert set(picks(cluster, 8)) == set(cluster.hosts)


def test_no_panic_at_half_healthy() -> None:
    cluster = runtime(4)
    a, b, c, d = cluster.hosts
    eject(cluster, c)
    eject(cluster, d)  # 2 of 4 healthy: not below the 50 % threshold
    assert set(picks(cluster, 8)) == {a, b}
    assert cluster.stats.lb_healthy_panic == 0


def test_a_host_failing_its_health_check_leaves_the_pick_set() -> None:
    cluster = runtime(3)
    a, b, c = cluster.hosts
    b.hc_failed = True
    cluster.refresh_health()
    assert set(picks(cluster, 6)) == {a, c}
    assert cluster.stats.membership_healthy == 2


# ------------------------------------------------------------------------------------- outlier detection


def test_consecutive_5xx_eject_a_host_for_the_base_ejection_time() -> None:
    clock = Ticks()
    cluster = runtime(3, clock=clock)
    a = cluster.hosts[0]
    for status in (503, 500):
        cluster.record_response(a, status)
    assert a.healthy
    cluster.record_response(a, 502)
    assert (a.ejections, a.consecutive_5xx, a.rq_error, a.ejected_until) == (1, 0, 3, clock.t + 30.0)
    stats = cluster.stats
    assert (stats.outlier_detection_ejections_enforced_total, stats.outlier_detection_ejections_active) == (
        1,
        1,
    )
    assert stats.membership_healthy == 2
    assert a not in picks(cluster, 6)


def test_a_failure_without_a_response_counts_as_a_5xx() -> None:
    cluster = runtime(3)
    a = cluster.hosts[0]
    cluster.record_failure(a)
    cluster.record_response(a, 503)
    cluster.record_failure(a)
    assert a.ejected_until and a.ejections == 1


def test_success_resets_the_consecutive_count() -> None:
    cluster = runtime(3)
    a = cluster.hosts[0]
    for status in (503, 503, 200, 503, 503, 404, 503, 503):  # a 4xx is not a server error either
        cluster.record_response(a, status)
    assert a.healthy
    assert (a.rq_success, a.rq_error, a.consecutive_5xx) == (2, 6, 2)


def test_ejection_time_grows_with_each_ejection() -> None:
    # Envoy: ejection time = base_ejection_time x number of times the host was ejected.
    clock = Ticks()
    cluster = runtime(3, clock=clock)
    a = cluster.hosts[0]
    for expected in (1, 2, 3):
        for _ in range(3):
            cluster.record_response(a, 500)
        assert (a.ejections, a.ejected_until) == (expected, clock.t + 30.0 * expected)
        clock.t = a.ejected_until  # let the period pass
        cluster.refresh_health()
        assert a.healthy


def test_no_outlier_detection_never_ejects() -> None:
    cluster = runtime(2, outlier=None)
    a = cluster.hosts[0]
    for _ in range(10):
        cluster.record_response(a, 503)
    cluster.record_response(a, 200)
    assert a.healthy
    assert (a.rq_error, a.rq_success) == (10, 1)
    assert Counter(h.address for h in picks(cluster, 4) if h) == {"10.0.0.1": 2, "10.0.0.2": 2}


def test_max_ejection_percent_caps_ejections_but_one_is_always_allowed() -> None:
    limited = OutlierDetection(
        max_server_errors=1, interval=10.0, base_ejection=30.0, max_ejection_percent=10
    )
    cluster = runtime(3, limited)
    a, b, c = cluster.hosts
    cluster.record_response(a, 500)  # 10 % of 3 hosts rounds to 0, but App Mesh always allows one
    cluster.record_response(b, 500)
    assert [h.healthy for h in (a, b, c)] == [False, True, True]
    assert cluster.stats.outlier_detection_ejections_enforced_total == 1


# ------------------------------------------------------------------------------------- pure decisions


def test_the_pure_health_decisions() -> None:
    assert [in_panic(h, 4) for h in range(5)] == [True, True, False, False, False]
    outlier = OutlierDetection(
        max_server_errors=5, interval=10.0, base_ejection=30.0, max_ejection_percent=50
    )
    assert [may_eject(outlier, ejected, 4) for ejected in range(4)] == [True, True, False, False]
    assert [ejection_seconds(outlier, n) for n in (1, 2, 3)] == [30.0, 60.0, 90.0]


CHECK = HealthCheck(ListenerProtocol.HTTP, 5.0, 2.0, healthy_threshold=2, unhealthy_threshold=3)


def test_health_check_thresholds() -> None:
    # a new host: failed and pending; its first passed check alone brings it in
    assert after_check(True, 0, True, CHECK, first=True) == (False, 1)
    # a first check that fails keeps it out; then healthyThreshold passes in a row bring it in
    failed, streak = after_check(True, 0, False, CHECK, first=True)
    assert (failed, streak) == (True, -1)
    failed, streak = after_check(failed, streak, True, CHECK, first=False)
    assert (failed, streak) == (True, 1)
    assert after_check(failed, streak, True, CHECK, first=False) == (False, 2)
    # a healthy host goes out after unhealthyThreshold failures in a row; a pass in between resets the count
    failed, streak = False, 5
    for expected in ((False, -1), (False, -2), (False, 1), (False, -1), (False, -2), (True, -3)):
        passed = expected[1] > 0
        failed, streak = after_check(failed, streak, passed, CHECK, first=False)
        assert (failed, streak) == expected
