"""Outlier detection (a listener's `outlierDetection`, spec §4.2) through the whole request path, on the
fake clock (issue 14, item 6): consecutive 5xx eject a host, `maxEjectionPercent` caps how many are out at
once, and an ejected host comes back after `baseEjectionDuration` x the number of times it was ejected.

Three backend hosts; requests carry no retry policy, so each answer reaches the client and the round robin
is plain to see in which app got which request.
"""

from __future__ import annotations

from meshproxy.config.snapshot import OutlierDetection

from ..memory import MemoryNetwork, Refuse, Run
from ..proxy import HOSTS, ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import H1App, Respond

BASE_EJECTION_S = 30.0


def outlier(max_ejection_percent: int = 100) -> OutlierDetection:
    return OutlierDetection(
        max_server_errors=2,
        interval=10.0,
        base_ejection=BASE_EJECTION_S,
        max_ejection_percent=max_ejection_percent,
    )


async def send(proxy: ComponentProxy, count: int) -> list[int]:
    """`count` requests one after the other; the statuses the clients got."""
    statuses = []
    for i in range(count):
        client = await proxy.get(f"/r{i}", advance=0.0)
        statuses.append(client.response().status)
    return statuses


def served(*apps: H1App) -> list[int]:
    return [len(app.requests) for app in apps]


def test_a_failing_host_is_ejected_and_comes_back_after_base_ejection_times_n(
    run: Run, net: MemoryNetwork
) -> None:
    async def scenario() -> None:
        bad = serve_h1(net, Respond(503), address=HOSTS[0])
        good = [serve_h1(net, Respond(200), address=address) for address in HOSTS[1:]]
        snapshot = egress_snapshot(hosts=HOSTS, retry=None, outlier=outlier())
        async with running_proxy(net, snapshot) as proxy:
            stats = proxy.cluster_stats()
            await send(proxy, 6)  # two rounds: the bad host's second 503 ejects it
            assert served(bad, *good) == [2, 2, 2]
            assert (
                stats.outlier_detection_ejections_enforced_total,
                stats.outlier_detection_ejections_active,
            ) == (1, 1)
            assert stats.membership_healthy == 2

            assert await send(proxy, 10) == [200] * 10  # the bad host is out of the pick set
            assert served(bad) == [2]

            await net.advance(BASE_EJECTION_S - 0.1)
            await send(proxy, 4)
            assert served(bad) == [2]  # not yet
            await net.advance(0.1)
            statuses = await send(proxy, 6)  # back: it takes its turns, fails twice, is ejected again
            assert statuses.count(503) == 2 and served(bad) == [4]
            assert stats.outlier_detection_ejections_enforced_total == 2

            await net.advance(2 * BASE_EJECTION_S - 0.1)  # the second ejection lasts twice as long
            await send(proxy, 4)
            assert served(bad) == [4]
            await net.advance(0.1)
            await send(proxy, 3)
            assert served(bad) == [5]
            assert stats.outlier_detection_ejections_active == 0

    run(scenario())


def test_max_ejection_percent_keeps_a_second_failing_host_in(run: Run, net: MemoryNetwork) -> None:
    """34 % of 3 hosts is one: the second host to fail stays in the pick set while the first is out, and is
    ejected on its next error once the first is back."""

    async def scenario() -> None:
        first = serve_h1(net, Respond(503), address=HOSTS[0])
        second = serve_h1(net, Respond(503), address=HOSTS[1])
        good = serve_h1(net, Respond(200), address=HOSTS[2])
        snapshot = egress_snapshot(hosts=HOSTS, retry=None, outlier=outlier(max_ejection_percent=34))
        async with running_proxy(net, snapshot) as proxy:
            stats = proxy.cluster_stats()
            await send(proxy, 6)
            assert stats.outlier_detection_ejections_enforced_total == 1
            await send(proxy, 10)  # the other failing host keeps its turns: the cap holds
            out, kept = sorted((first, second), key=lambda app: len(app.requests))
            assert served(out, kept, good) == [2, 7, 7]
            assert stats.outlier_detection_ejections_active == 1

            await net.advance(BASE_EJECTION_S)
            await send(proxy, 3)  # the first is back; the other's next 503 ejects it at once
            assert stats.outlier_detection_ejections_enforced_total == 2
            assert stats.outlier_detection_ejections_active == 1
            before = served(kept)
            await send(proxy, 6)
            assert served(kept) == before

    run(scenario())


def test_hosts_refusing_connections_are_ejected_too(run: Run, net: MemoryNetwork) -> None:
    """A connect failure is a local-origin error, which Envoy counts as a 5xx for outlier detection."""

    async def scenario() -> None:
        net.connector.route(HOSTS[0], Refuse())
        apps = [serve_h1(net, Respond(200), address=address) for address in HOSTS[1:]]
        snapshot = egress_snapshot(hosts=HOSTS, retry=None, outlier=outlier())
        async with running_proxy(net, snapshot) as proxy:
            statuses = await send(proxy, 6)
            assert statuses.count(503) == 2  # 503 UF, twice: then the host is out
            assert await send(proxy, 8) == [200] * 8
            assert served(*apps) == [6, 6]
            assert proxy.cluster_stats().outlier_detection_ejections_enforced_total == 1

    run(scenario())
