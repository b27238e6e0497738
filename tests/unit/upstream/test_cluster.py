"""Host selection and passive health (meshproxy/upstream/cluster.py, host.py): pure decisions, no sockets.

`ClusterRuntime` is built directly from a `Cluster` config with static hosts set by `set_hosts`; nothing here
starts discovery or opens a pool. Time-based behaviour is tested by moving a host's `ejected_until` (the
cluster reads `time.monotonic()`), never by sleeping.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.config.snapshot import Cluster, ListenerProtocol, OutlierDetection, StaticDiscovery
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.discovery import order_addresses
from meshproxy.upstream.host import Host, HostHealth

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


def runtime(n: int, outlier: OutlierDetection | None = OUTLIER) -> ClusterRuntime:
    addresses = tuple((f"10.0.0.{i + 1}", 8080) for i in range(n))
    config = Cluster(
        name="cds_egress_apps_backend_http_8080",
        discovery=StaticDiscovery(addresses),
        protocol=ListenerProtocol.HTTP,
        virtual_node="backend",
        outlier=outlier,
    )
    cluster = ClusterRuntime(config, ClusterStats(), HttptoolsClientCodec)
    cluster.set_hosts(addresses)
    return cluster


def eject(host: Host, seconds: float = 60.0) -> None:
    host.health = HostHealth.EJECTED
    host.ejected_until = time.monotonic() + seconds


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


def test_host_labels_and_repr() -> None:
    assert Host("10.0.0.1", 80).label == "10.0.0.1:80"
    assert Host("fd00::1", 80).label == "[fd00::1]:80"
    assert repr(Host("10.0.0.1", 80)) == "<Host 10.0.0.1:80 healthy cx_active=0 rq_total=0>"
    assert repr(runtime(2)) == "<Cluster cds_egress_apps_backend_http_8080 hosts=2 connections=0 pending=0>"


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
    eject(b)
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


def test_ejected_host_is_skipped_until_its_ejection_time_passes() -> None:
    cluster = runtime(3)
    a, b, c = cluster.hosts
    eject(b)
    assert set(picks(cluster, 12)) == {a, c}
    b.ejected_until = time.monotonic() - 0.001  # the ejection period is over
    assert b in picks(cluster, 3)
    assert b.health is HostHealth.HEALTHY  # back in rotation, and reported healthy again


def test_host_available_uses_the_given_time() -> None:
    host = Host("10.0.0.1", 80)
    host.health = HostHealth.EJECTED
    host.ejected_until = 100.0
    assert not host.available(99.999)
    still = host.health
    assert host.available(100.0)
    assert (still, host.health) == (HostHealth.EJECTED, HostHealth.HEALTHY)


def test_single_ejected_host_is_used_in_panic() -> None:
    cluster = runtime(1)
    eject(cluster.hosts[0])
    assert cluster.pick_host() is cluster.hosts[0]


def test_all_hosts_ejected_still_serves_in_panic_mode() -> None:
    # Envoy's healthy panic threshold (50 %): too few healthy hosts and the balancer ignores health.
    cluster = runtime(3)
    for host in cluster.hosts:
        eject(host)
    assert all(h is not None for h in picks(cluster, 6))


def test_panic_mode_with_every_host_ejected_spreads_the_load() -> None:
    cluster = runtime(3)
    for host in cluster.hosts:
        eject(host)
    assert set(picks(cluster, 6)) == set(cluster.hosts)


def test_panic_mode_below_the_threshold_balances_across_all_hosts() -> None:
    cluster = runtime(4)
    for host in cluster.hosts[1:]:
        eject(host)  # 1 of 4 healthy: 25 % < 50 %
    assert set(picks(cluster, 8)) == set(cluster.hosts)


def test_no_panic_at_half_healthy() -> None:
    cluster = runtime(4)
    a, b, c, d = cluster.hosts
    eject(c)
    eject(d)  # 2 of 4 healthy: not below the 50 % threshold
    assert set(picks(cluster, 8)) == {a, b}


# ------------------------------------------------------------------------------------- outlier detection


def test_record_result_ejects_after_max_server_errors_consecutive_5xx() -> None:
    host = Host("10.0.0.1", 80)
    assert host.record_result(503, OUTLIER) is False
    assert host.record_result(500, OUTLIER) is False
    before = time.monotonic()
    assert host.record_result(502, OUTLIER) is True
    after = time.monotonic()
    assert host.health is HostHealth.EJECTED
    assert (host.ejections, host.consecutive_5xx, host.rq_error) == (1, 0, 3)
    assert before + 30.0 <= host.ejected_until <= after + 30.0


def test_success_resets_the_consecutive_count() -> None:
    host = Host("10.0.0.1", 80)
    for status in (503, 503, 200, 503, 503, 404, 503, 503):  # a 4xx is not a server error either
        assert host.record_result(status, OUTLIER) is False
    assert host.health is HostHealth.HEALTHY
    assert (host.rq_success, host.rq_error, host.consecutive_5xx) == (2, 6, 2)


def test_ejection_time_grows_with_each_ejection() -> None:
    # Envoy: ejection time = base_ejection_time x number of times the host was ejected.
    host = Host("10.0.0.1", 80)
    for expected in (1, 2, 3):
        host.record_result(500, OUTLIER)
        host.record_result(500, OUTLIER)
        before = time.monotonic()
        assert host.record_result(500, OUTLIER) is True
        after = time.monotonic()
        assert host.ejections == expected
        assert before + 30.0 * expected <= host.ejected_until <= after + 30.0 * expected
        host.available(host.ejected_until)  # let the period pass


def test_no_outlier_detection_never_ejects() -> None:
    host = Host("10.0.0.1", 80)
    for _ in range(50):
        assert host.record_result(503, None) is False
    assert host.health is HostHealth.HEALTHY


def test_cluster_record_response_ejects_and_counts() -> None:
    cluster = runtime(3)
    a = cluster.hosts[0]
    for _ in range(3):
        cluster.record_response(a, 503)
    assert a.health is HostHealth.EJECTED
    stats = cluster.stats
    assert (stats.outlier_detection_ejections_enforced_total, stats.outlier_detection_ejections_active) == (
        1,
        1,
    )
    assert stats.membership_healthy == 2
    assert a not in picks(cluster, 6)


def test_cluster_respects_max_ejection_percent_but_ejects_at_least_one() -> None:
    limited = OutlierDetection(
        max_server_errors=1, interval=10.0, base_ejection=30.0, max_ejection_percent=10
    )
    cluster = runtime(3, limited)
    a, b, c = cluster.hosts
    cluster.record_response(a, 500)  # 10 % of 3 hosts rounds to 0, but App Mesh always allows one
    cluster.record_response(b, 500)
    assert [h.health for h in (a, b, c)] == [HostHealth.EJECTED, HostHealth.HEALTHY, HostHealth.HEALTHY]
    assert cluster.stats.outlier_detection_ejections_enforced_total == 1


def test_cluster_without_outlier_detection_only_counts() -> None:
    cluster = runtime(2, outlier=None)
    a = cluster.hosts[0]
    for _ in range(10):
        cluster.record_response(a, 503)
    cluster.record_response(a, 200)
    assert a.health is HostHealth.HEALTHY
    assert (a.rq_error, a.rq_success) == (10, 1)
    assert Counter(h.address for h in picks(cluster, 4) if h) == {"10.0.0.1": 2, "10.0.0.2": 2}
