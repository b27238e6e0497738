"""Circuit breakers on egress clusters (issue 14, item 6): Envoy's default thresholds (1024 connections,
pending requests and requests per cluster) where App Mesh rendered 2147483647, settable with
MESHPROXY_EGRESS_MAX_*; an overflow is a 503 UO with Envoy's body and stat. (The listener `connectionPool`
limits on ingress clusters are proven in tests/component/upstream/test_circuit_breakers.py.)
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, Reply, running_proxy, wait_for
from .resources import egress_cluster, front_and_backend, node_arn

SLOW = "slow.demo.local"
OVERFLOW_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


@pytest.fixture(scope="module")
def slow(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("slow")


def resources(slow: ColourApp) -> list[dict[str, object]]:
    return front_and_backend(SLOW, "slow", slow.port)


def thresholds(proxy: MeshProxy, cluster: str) -> dict[str, int]:
    prefix = f"{cluster}::default_priority::"
    return {
        line[len(prefix) :].split("::")[0]: int(line.rsplit("::", 1)[1])
        for line in proxy.admin("/clusters").body.decode().splitlines()
        if line.startswith(prefix)
    }


def test_egress_clusters_run_with_envoys_default_thresholds(slow: ColourApp, tmp_path: Path) -> None:
    with running_proxy(resources(slow), node_arn("front"), tmp_path) as proxy:
        limits = thresholds(proxy, egress_cluster("slow", slow.port))
    assert {k: limits[k] for k in ("max_connections", "max_pending_requests", "max_requests")} == {
        "max_connections": 1024,
        "max_pending_requests": 1024,
        "max_requests": 1024,
    }


def test_an_egress_overflow_is_a_503_uo_with_envoys_stat(slow: ColourApp, tmp_path: Path) -> None:
    slow.reset()
    slow.configure(delay_s=1.0)
    env = {"MESHPROXY_EGRESS_MAX_CONNECTIONS": "1", "MESHPROXY_EGRESS_MAX_PENDING_REQUESTS": "1"}
    cluster = egress_cluster("slow", slow.port)
    with running_proxy(resources(slow), node_arn("front"), tmp_path, env=env) as proxy:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(proxy.egress, SLOW, "/1")
            assert wait_for(lambda: slow.in_flight == 1, 5.0)
            second = pool.submit(proxy.egress, SLOW, "/2")  # waits for the one connection
            assert wait_for(
                lambda: proxy.stats().get(f"cluster.{cluster}.upstream_rq_pending_active") == 1, 5.0
            )
            third: Reply = proxy.egress(SLOW, "/3")
            answered = [first.result(10), second.result(10)]
        stats = proxy.stats()
        limits = thresholds(proxy, cluster)
    assert (third.status, third.body) == (503, OVERFLOW_BODY), third
    assert [r.status for r in answered] == [200, 200]
    assert stats[f"cluster.{cluster}.upstream_rq_pending_overflow"] == 1
    assert (limits["max_connections"], limits["max_pending_requests"]) == (1, 1)
