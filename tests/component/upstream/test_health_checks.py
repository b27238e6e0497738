"""Active health checks (a backend listener's `healthCheck`, spec §4.2; issue 14, item 5) through the whole
request path, on the fake clock: which hosts requests reach while checks fail and pass, the thresholds, every
protocol (http, http2, grpc, tcp), timeouts, jitter, panic mode, /clusters health flags, Envoy's stats, and
hosts that discovery removes leaving at once whatever their checks say (App Mesh roadmap #213).
"""

from __future__ import annotations

import pytest

from meshproxy.admin.server import cluster_status
from meshproxy.config.snapshot import HealthCheck, ListenerProtocol

from ..memory import Accept, Blackhole, MemoryNetwork, Refuse, Run
from ..proxy import CLUSTER, HOSTS, ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import H1App, H2App, Respond

INTERVAL_S = 5.0
TIMEOUT_S = 2.0
HEALTH = "/health"
UP = Respond(200, b"ok")
DOWN = Respond(503, b"down")
GRPC_SERVING = b"\x00\x00\x00\x00\x02\x08\x01"  # HealthCheckResponse{status: SERVING}, gRPC-framed
GRPC_NOT_SERVING = b"\x00\x00\x00\x00\x02\x08\x02"


def check(protocol: ListenerProtocol = ListenerProtocol.HTTP, **overrides: object) -> HealthCheck:
    values: dict[str, object] = {
        "protocol": protocol,
        "interval": INTERVAL_S,
        "timeout": TIMEOUT_S,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
        "path": HEALTH if protocol in (ListenerProtocol.HTTP, ListenerProtocol.HTTP2) else None,
    }
    values.update(overrides)
    return HealthCheck(**values)  # type: ignore[arg-type]


def apps(net: MemoryNetwork, *health: Respond) -> list[H1App]:
    """One HTTP/1.1 app per host answering UP to requests and `health[i]` to the health-check path."""
    return [
        serve_h1(net, UP, address=address, paths={HEALTH: answer})
        for address, answer in zip(HOSTS, health, strict=True)
    ]


async def send(proxy: ComponentProxy, count: int) -> None:
    for i in range(count):
        client = await proxy.get(f"/r{i}", advance=0.0)
        assert client.response().status == 200


def traffic(*hosts: H1App) -> list[int]:
    """Requests each app served, health checks not counted."""
    return [sum(1 for r in app.requests if r.target != HEALTH) for app in hosts]


def checks(app: H1App | H2App) -> list[str]:
    return [r.target for r in app.requests if r.target in (HEALTH, "/grpc.health.v1.Health/Check")]


def test_a_host_failing_its_checks_gets_no_traffic_until_it_passes_again(
    run: Run, net: MemoryNetwork
) -> None:
    async def scenario() -> None:
        bad, good1, good2 = apps(net, DOWN, UP, UP)
        snapshot = egress_snapshot(hosts=HOSTS, health_check=check())
        async with running_proxy(net, snapshot) as proxy:
            stats = proxy.cluster_stats()
            await net.advance(INTERVAL_S * 0.1)  # every host's first check, jittered within a tenth
            assert [len(checks(app)) for app in (bad, good1, good2)] == [1, 1, 1]
            assert (stats.health_check_attempt, stats.health_check_success, stats.health_check_failure) == (
                3,
                2,
                1,
            )
            assert (stats.health_check_healthy, stats.membership_healthy) == (2, 2)
            # what the probe looked like: Envoy's
            probe = next(r for r in bad.requests if r.target == HEALTH)
            assert (probe.method, probe.headers["host"], probe.headers["user-agent"]) == (
                "GET",
                CLUSTER,
                "Envoy/HC",
            )

            await send(proxy, 8)
            assert traffic(bad, good1, good2) == [0, 4, 4]

            bad.script.paths[HEALTH] = UP  # it recovers: healthyThreshold (2) passes bring it back
            await net.advance(INTERVAL_S * 1.1)
            await send(proxy, 6)
            assert traffic(bad) == [0]
            await net.advance(INTERVAL_S * 1.1)
            await send(proxy, 6)
            assert traffic(bad) == [2]
            assert stats.health_check_healthy == 3

    run(scenario())


def test_a_healthy_host_goes_out_after_unhealthy_threshold_failures(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        flaky, *_ = hosts = apps(net, UP, UP, UP)
        snapshot = egress_snapshot(hosts=HOSTS, health_check=check(unhealthy_threshold=3))
        async with running_proxy(net, snapshot) as proxy:
            await net.advance(INTERVAL_S * 0.1)
            flaky.script.paths[HEALTH] = DOWN
            for expected_in in (True, True, False):  # out on the third failed check in a row
                await net.advance(INTERVAL_S * 1.1)
                before = traffic(flaky)[0]
                await send(proxy, 6)
                assert (traffic(flaky)[0] > before) is expected_in
            assert proxy.cluster_stats().health_check_failure == 3
            assert len(hosts) == 3

    run(scenario())


def test_checks_are_jittered_and_every_interval(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        hosts = apps(net, UP, UP, UP)
        async with running_proxy(net, egress_snapshot(hosts=HOSTS, health_check=check())) as proxy:
            runtime = proxy.dataplane.clusters.get(CLUSTER)
            assert runtime is not None and runtime.checker is not None
            firsts = [timer.when - net.clock.now() for timer in runtime.checker.hosts.values() if timer]
            await net.advance(0.5)
            assert [len(checks(app)) for app in hosts] == [1, 1, 1]
            await net.advance(10 * INTERVAL_S)
            total = [len(checks(app)) for app in hosts]
            nexts = [timer.when - net.clock.now() for timer in runtime.checker.hosts.values() if timer]
            # the first check within a tenth of the interval, then one every 5 to 5.5 s: 9 or 10 more
            assert all(0 <= delay <= 0.5 for delay in firsts) and len(set(firsts)) == 3, firsts
            assert all(10 <= n <= 11 for n in total), total
            assert len(set(nexts)) == 3, nexts  # the hosts are not checked in step

    run(scenario())


@pytest.mark.parametrize("protocol", [ListenerProtocol.HTTP2, ListenerProtocol.GRPC])
def test_http2_and_grpc_checks(run: Run, net: MemoryNetwork, protocol: ListenerProtocol) -> None:
    async def scenario() -> None:
        if protocol is ListenerProtocol.GRPC:
            grpc = (("content-type", "application/grpc"),)
            path = "/grpc.health.v1.Health/Check"
            healthy = Respond(200, GRPC_SERVING, grpc, trailers=(("grpc-status", "0"),))
            unhealthy = Respond(200, GRPC_NOT_SERVING, grpc, trailers=(("grpc-status", "0"),))
        else:
            path, healthy, unhealthy = HEALTH, UP, DOWN
        answers = (unhealthy, healthy, healthy)
        servers = [H2App(UP, paths={path: answer}) for answer in answers]
        for address, app in zip(HOSTS, servers, strict=True):
            net.connector.route(address, Accept(app.server))
        snapshot = egress_snapshot(hosts=HOSTS, protocol=protocol, health_check=check(protocol))
        async with running_proxy(net, snapshot) as proxy:
            await net.advance(INTERVAL_S * 0.1)
            stats = proxy.cluster_stats()
            assert (stats.health_check_success, stats.health_check_failure) == (2, 1)
            assert [len(checks(app)) for app in servers] == [1, 1, 1]
            if protocol is ListenerProtocol.GRPC:
                probe = servers[0].requests[0]
                assert (probe.method, probe.headers["content-type"], probe.body) == (
                    "POST",
                    "application/grpc",
                    b"\x00\x00\x00\x00\x00",
                )
            runtime = proxy.dataplane.clusters.get(CLUSTER)
            assert runtime is not None
            assert [h.healthy for h in runtime.hosts] == [False, True, True]

    run(scenario())


def test_tcp_checks_and_timeouts_are_network_failures(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        hosts = (*HOSTS, ("10.0.1.4", 8080), ("10.0.1.5", 8080))
        net.connector.route(hosts[0], Refuse())
        net.connector.route(hosts[1], Blackhole())
        up = [serve_h1(net, UP, address=address) for address in hosts[2:]]
        snapshot = egress_snapshot(hosts=hosts, health_check=check(ListenerProtocol.TCP))
        async with running_proxy(net, snapshot) as proxy:
            await net.advance(INTERVAL_S * 0.1)
            stats = proxy.cluster_stats()
            # the refused host has failed; the silent one waits for the timeout
            assert (stats.health_check_success, stats.health_check_network_failure) == (3, 1)
            await net.advance(TIMEOUT_S)
            assert (stats.health_check_failure, stats.health_check_network_failure) == (2, 2)
            assert stats.health_check_healthy == 3
            await send(proxy, 6)
            assert traffic(*up) == [2, 2, 2]
            assert [checks(app) for app in up] == [[], [], []]  # a tcp check sends nothing

    run(scenario())


def test_with_too_few_healthy_hosts_the_balancer_panics_as_envoy(run: Run, net: MemoryNetwork) -> None:
    """1 of 3 healthy is under Envoy's 50 % panic threshold: every host takes traffic, counted."""

    async def scenario() -> None:
        hosts = apps(net, DOWN, DOWN, UP)
        async with running_proxy(net, egress_snapshot(hosts=HOSTS, health_check=check())) as proxy:
            await net.advance(INTERVAL_S * 0.1)
            await send(proxy, 6)
            assert traffic(*hosts) == [2, 2, 2]
            assert proxy.cluster_stats().lb_healthy_panic == 6

    run(scenario())


def test_clusters_shows_the_health_flags(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        apps(net, DOWN, UP, UP)
        async with running_proxy(net, egress_snapshot(hosts=HOSTS, health_check=check())) as proxy:
            text = cluster_status(proxy.dataplane.clusters, as_json=False)
            assert isinstance(text, str)
            flags = [line for line in text.splitlines() if line.endswith("/pending_active_hc")]
            assert len(flags) == 3  # not checked yet: out, and pending
            await net.advance(INTERVAL_S * 0.1)
            text = cluster_status(proxy.dataplane.clusters, as_json=False)
            assert isinstance(text, str)
            assert f"{CLUSTER}::{HOSTS[0][0]}:8080::health_flags::/failed_active_hc" in text
            assert f"{CLUSTER}::{HOSTS[1][0]}:8080::health_flags::healthy" in text

    run(scenario())


def test_a_host_discovery_removes_leaves_at_once_though_its_checks_pass(run: Run, net: MemoryNetwork) -> None:
    """App Mesh roadmap #213: Envoy kept routing to endpoints Cloud Map had removed until they failed their
    health checks; here the next discovery answer takes them out of the pick set."""

    async def scenario() -> None:
        hosts = apps(net, UP, UP, UP)
        async with running_proxy(net, egress_snapshot(hosts=HOSTS, health_check=check())) as proxy:
            await net.advance(INTERVAL_S * 0.1)
            runtime = proxy.dataplane.clusters.get(CLUSTER)
            assert runtime is not None
            runtime.set_hosts(HOSTS[1:])  # what discovery's next answer says
            await send(proxy, 6)
            assert traffic(*hosts) == [0, 3, 3]
            checked = len(checks(hosts[0]))
            await net.advance(3 * INTERVAL_S)
            assert len(checks(hosts[0])) == checked  # no longer checked either

    run(scenario())
