"""ENVOY_CONCURRENCY > 1 (issue 8): worker processes share the listening ports (SO_REUSEPORT), the admin
endpoint reports totals across them, a worker that dies is restarted and counted, and SIGTERM drains every
worker before the supervisor exits 0."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import Http1Client, MeshProxy, parse_stats, process_tree, wait_for
from .resources import Resource, mesh, node_arn, route, service_via_router, virtual_node, virtual_router

COLOR = "color.demo.local"


def _color_mesh(blue_port: int) -> list[Resource]:
    return [
        mesh(),
        virtual_node("front", 18999, backends=[COLOR]),
        virtual_node("blue", blue_port),
        virtual_router("color-router"),
        route("color-router", "all", targets=[("blue", 100)]),
        service_via_router(COLOR, "color-router"),
    ]


@pytest.fixture
def workers_proxy(app_loop: AppLoop, tmp_path: Path) -> Iterator[tuple[MeshProxy, ColourApp]]:
    blue = app_loop.colour_app("blue-w")
    proxy = MeshProxy(_color_mesh(blue.port), node_arn("front"), tmp_path, env={"ENVOY_CONCURRENCY": "2"})
    try:
        yield proxy.start(), blue
    finally:
        proxy.stop()


def _workers(proxy: MeshProxy) -> list[int]:
    return [pid for pid in process_tree(proxy.pid) if pid != proxy.pid]


def test_two_workers_share_the_port_and_the_admin_reports_totals(
    workers_proxy: tuple[MeshProxy, ColourApp],
) -> None:
    proxy, blue = workers_proxy
    assert len(_workers(proxy)) == 2
    for _ in range(60):  # a new connection each time: the kernel spreads them over both workers
        with Http1Client(proxy.egress_port) as client:
            assert client.get("/", host=COLOR).status == 200
    stats = parse_stats(proxy.admin("/stats").body.decode())
    assert stats["http.egress.downstream_rq_total"] == 60
    assert stats[f"listener.127.0.0.1_{proxy.egress_port}.downstream_cx_total"] == 60
    assert blue.requests == 60
    workers = json.loads(proxy.admin("/workers").body)["workers"]
    assert [w["state"] for w in workers] == ["LIVE", "LIVE"]
    assert sum(w["downstream_cx_total"] for w in workers) == 60
    assert all(w["downstream_cx_total"] > 0 for w in workers), workers  # SO_REUSEPORT spread them
    assert b"envoy_http_downstream_rq_total" in proxy.admin("/stats/prometheus").body
    assert '"state": "LIVE"' in proxy.admin("/server_info").body.decode()
    clusters = proxy.admin("/clusters").body.decode()
    assert "cds_egress_demo_blue_http" in clusters


def test_a_dead_worker_is_restarted_and_counted(workers_proxy: tuple[MeshProxy, ColourApp]) -> None:
    proxy, _ = workers_proxy
    for _ in range(10):
        with Http1Client(proxy.egress_port) as client:
            assert client.get("/", host=COLOR).status == 200
    assert wait_for(
        lambda: parse_stats(proxy.admin("/stats").body.decode())["http.egress.downstream_rq_total"] == 10, 5
    )
    victim = _workers(proxy)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(_workers(proxy)) == 2 and victim not in _workers(proxy), 15, interval=0.2)
    stats = parse_stats(proxy.admin("/stats").body.decode())
    assert stats["meshproxy.worker_restarts"] == 1
    assert stats["http.egress.downstream_rq_total"] >= 10  # the dead worker's counts are kept
    assert wait_for(lambda: proxy.admin("/ready").status == 200, 10)
    for _ in range(10):
        with Http1Client(proxy.egress_port) as client:
            assert client.get("/", host=COLOR).status == 200


def test_sigterm_drains_every_worker_then_exits_zero(workers_proxy: tuple[MeshProxy, ColourApp]) -> None:
    proxy, _ = workers_proxy
    workers = _workers(proxy)
    assert proxy.process is not None
    proxy.process.send_signal(signal.SIGTERM)
    assert wait_for(lambda: proxy.admin("/ready").status == 503, 5)
    with Http1Client(proxy.egress_port) as client:  # still served while draining
        assert client.get("/", host=COLOR).status == 200
    assert proxy.wait_exit(proxy.drain_wait_s + 10) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_workers_never_import_a_meshproxy_folder_from_the_working_directory(
    app_loop: AppLoop, tmp_path: Path
) -> None:
    # A decoy package where the proxy runs: importing it leaves a mark and kills the process.
    decoy = tmp_path / "meshproxy"
    decoy.mkdir()
    mark = tmp_path / "decoy-imported"
    (decoy / "__init__.py").write_text(f"import os\nopen({str(mark)!r}, 'w').close()\nos._exit(7)\n")
    (decoy / "__main__.py").write_text("")
    blue = app_loop.colour_app("blue-decoy")
    proxy = MeshProxy(_color_mesh(blue.port), node_arn("front"), tmp_path, env={"ENVOY_CONCURRENCY": "2"})
    try:
        proxy.start()
        assert wait_for(lambda: len(_workers(proxy)) == 2, 10)
        workers = json.loads(proxy.admin("/workers").body)["workers"]
        assert [w["state"] for w in workers] == ["LIVE", "LIVE"]
        with Http1Client(proxy.egress_port) as client:
            assert client.get("/", host=COLOR).status == 200
        stats = parse_stats(proxy.admin("/stats").body.decode())
        assert stats.get("meshproxy.worker_restarts", 0) == 0
    finally:
        proxy.stop()
    assert not mark.exists(), "a worker imported the meshproxy/ folder of its working directory"


def counters(prometheus: str) -> dict[str, float]:
    """Every counter sample of a /stats/prometheus page: `name{labels}` -> value."""
    kinds = {}
    samples = {}
    for line in prometheus.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            kinds[name] = kind
        elif line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            if kinds.get(series.split("{", 1)[0]) == "counter":
                samples[series] = float(value)
    return samples


def test_totals_never_go_backwards_when_a_worker_dies(workers_proxy: tuple[MeshProxy, ColourApp]) -> None:
    """Under load, one of two workers is killed: every counter the supervisor reports, read every 50 ms
    before, during and after the restart, only ever grows (a dead worker's last counts are kept)."""
    proxy, _ = workers_proxy
    stop = threading.Event()
    failures: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                with Http1Client(proxy.egress_port, timeout=5) as client:
                    client.get("/", host=COLOR)
            except OSError as exc:  # the killed worker's connections: not what this test is about
                failures.append(repr(exc))

    readings: list[dict[str, float]] = []
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 8.0
        killed = False
        while time.monotonic() < deadline:
            readings.append(counters(proxy.admin("/stats/prometheus").body.decode()))
            if not killed and len(readings) == 20:
                os.kill(_workers(proxy)[0], signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert killed and len(readings) > 60
    went_back = [
        (series, before[series], after[series], index)
        for index, (before, after) in enumerate(itertools.pairwise(readings))
        for series in before.keys() & after.keys()
        if after[series] < before[series]
    ]
    assert not went_back, went_back[:10]
    restarts = [r.get("envoy_meshproxy_worker_restarts", 0.0) for r in readings]
    assert restarts[-1] == 1, restarts[-5:]
    total = 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="egress"}'
    assert readings[-1][total] > readings[0][total]
