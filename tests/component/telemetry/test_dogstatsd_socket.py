"""DogStatsD flushes received by real UDP and unix datagram sockets (spec §5.2)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from meshproxy.settings import Settings
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore

LINE = re.compile(
    r"(?P<name>[a-zA-Z0-9_.]+):(?P<value>[0-9.]+)\|(?P<type>c|g|ms)(?:\|@(?P<rate>[0-9.e-]+))?(?:\|#(?P<tags>.+))?"
)
CLUSTER = "cds_egress_apps_serviceB_http_9080"


def receive_all(
    sock: socket.socket, until: Callable[[list[bytes]], bool], timeout: float = 5.0
) -> list[bytes]:
    """Datagrams until `until(datagrams)` holds (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    datagrams: list[bytes] = []
    while not until(datagrams) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            datagrams.append(sock.recv(65535))
        except TimeoutError:
            break
    return datagrams


def parse(datagrams: list[bytes]) -> list[dict[str, str]]:
    out = []
    for datagram in datagrams:
        for line in datagram.decode().split("\n"):
            m = LINE.fullmatch(line)
            assert m is not None, line
            out.append({k: v for k, v in m.groupdict().items() if v is not None})
    return out


def udp_receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_udp_flushes_counters_as_deltas_gauges_and_timers(make_settings: Callable[..., Settings]) -> None:
    receiver = udp_receiver()
    settings = make_settings(
        dogstatsd=True, statsd_port=receiver.getsockname()[1], stats_flush_interval_s=0.2, stats_tags=True
    )
    store = StatsStore()
    cluster = store.cluster(CLUSTER)
    store.server.control_plane_connected_state = 1
    telemetry = Telemetry(settings, store)

    def has(name: str, value: str) -> Callable[[list[bytes]], bool]:
        def check(datagrams: list[bytes]) -> bool:
            return any(line["name"] == name and line["value"] == value for line in parse(datagrams))

        return check

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        await telemetry.start()
        try:
            cluster.upstream_rq_total += 3
            for _ in range(3):
                cluster.count_response(200)
            cluster.upstream_rq_time.record(12)
            first = await asyncio.to_thread(
                receive_all, receiver, has("envoy.cluster.upstream_rq_time", "12")
            )
            cluster.upstream_rq_total += 2
            second = await asyncio.to_thread(
                receive_all, receiver, has("envoy.cluster.upstream_rq_total", "2")
            )
            cluster.upstream_rq_total += 4
        finally:
            await telemetry.stop()
        final = await asyncio.to_thread(
            receive_all, receiver, has("envoy.cluster.upstream_rq_total", "4"), 2.0
        )
        return first, second, final

    try:
        first, second, final = asyncio.run(scenario())
    finally:
        receiver.close()
    assert all(len(d) <= 1432 for d in first + second + final)
    lines = parse(first)
    tags = f"envoy.cluster_name:{CLUSTER},appmesh.mesh:apps,appmesh.virtual_node:serviceA"
    assert {"name": "envoy.cluster.upstream_rq_total", "value": "3", "type": "c", "tags": tags} in lines
    assert {
        "name": "envoy.cluster.upstream_rq_xx",
        "value": "3",
        "type": "c",
        "tags": "envoy.response_code_class:2," + tags,
    } in lines
    assert {"name": "envoy.cluster.upstream_rq_time", "value": "12", "type": "ms", "tags": tags} in lines
    assert {
        "name": "envoy.control_plane.connected_state",
        "value": "1",
        "type": "g",
        "tags": "appmesh.mesh:apps,appmesh.virtual_node:serviceA",
    } in lines
    assert any(
        line["name"] == "envoy.cluster.upstream_rq_total" and line["value"] == "2" for line in parse(second)
    )
    # stop() flushes once more, so the last increments are not lost.
    assert any(
        line["name"] == "envoy.cluster.upstream_rq_total" and line["value"] == "4" for line in parse(final)
    )


def test_many_stats_are_split_into_datagrams_under_the_mtu(make_settings: Callable[..., Settings]) -> None:
    receiver = udp_receiver()
    settings = make_settings(dogstatsd=True, statsd_port=receiver.getsockname()[1], stats_tags=True)
    store = StatsStore()
    for i in range(40):
        store.cluster(f"cds_egress_apps_backend{i:02d}_http_8080").upstream_rq_total = i + 1
    telemetry = Telemetry(settings, store)

    async def scenario() -> None:
        await telemetry.start()
        telemetry.flush_stats()
        await telemetry.stop()

    asyncio.run(scenario())
    try:
        datagrams = receive_all(receiver, lambda d: False, timeout=1.0)
    finally:
        receiver.close()
    assert len(datagrams) >= 4
    assert all(len(d) <= 1432 for d in datagrams)
    totals: dict[str, set[str]] = {}
    for line in parse(datagrams):  # two flushes: start's totals, then stop's zero deltas
        if line["name"] == "envoy.cluster.upstream_rq_total":
            totals.setdefault(line["tags"], set()).add(line["value"])
    assert len(totals) == 40
    tags = "envoy.cluster_name:cds_egress_apps_backend39_http_8080,appmesh.mesh:apps,"
    tags += "appmesh.virtual_node:serviceA"
    assert totals[tags] == {"40", "0"}


def test_unix_datagram_socket(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = str(tmp_path / "dsd.socket")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    settings = make_settings(dogstatsd=True, statsd_socket_path=path, statsd_port=9)  # the path wins
    store = StatsStore()
    store.listener("0.0.0.0_15000").downstream_cx_total = 6
    telemetry = Telemetry(settings, store)

    async def scenario() -> None:
        await telemetry.start()
        telemetry.flush_stats()
        await telemetry.stop()

    asyncio.run(scenario())
    try:
        datagrams = receive_all(receiver, lambda d: False, timeout=1.0)
    finally:
        receiver.close()
    lines = parse(datagrams)
    assert {
        "name": "envoy.listener.downstream_cx_total",
        "value": "6",
        "type": "c",
        "tags": "envoy.listener_address:0.0.0.0_15000",
    } in lines
    assert store.server.telemetry_send_errors_total == 0


def test_missing_unix_socket_is_counted_not_raised(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(dogstatsd=True, statsd_socket_path=str(tmp_path / "nobody-here"))
    store = StatsStore()
    telemetry = Telemetry(settings, store)

    async def scenario() -> None:
        await telemetry.start()
        telemetry.flush_stats()
        await telemetry.stop()

    asyncio.run(scenario())
    assert store.server.telemetry_send_errors_total >= 2  # the explicit flush and the one in stop()
