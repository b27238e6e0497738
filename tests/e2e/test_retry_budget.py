"""The retry budget measured through a real proxy (issue 14, defect 4; the deterministic proof is
tests/component/router/test_retry_budget.py).

Requests from 8 keep-alive clients to a service whose route has App Mesh's default retry policy (2
retries on 503), against an app failing one request in three at random, then against an app that answers
every request with 503. Measured against Envoy with the same App Mesh config (issue 14): Envoy let 32 % fail
at one in three (its default of 3 retries in flight per cluster overflowed); meshproxy without a budget sent
a dead upstream 3.0x the requests.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import Http1Client, MeshProxy, grew, running_proxy
from .resources import egress_cluster, front_and_backend, node_arn

SERVICE = "flaky.demo.local"
REQUESTS = 1000
CLIENTS = 8
# At one failure in three, 2 retries leave 1/27 (3.7 %) failed; 2000 requests put 5 % three standard
# deviations away. The seed's sequence fails 33.5 % of its first draws (some seeds are far luckier or not).
FLAKY_REQUESTS = 2000
SEED = 3


@pytest.fixture(scope="module")
def flaky(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("flaky")


@pytest.fixture
def proxy(flaky: ColourApp, tmp_path: Path) -> Iterator[MeshProxy]:
    """A fresh proxy (and so a full budget) for each measurement."""
    flaky.reset()
    resources = front_and_backend(SERVICE, "flaky", flaky.port)  # App Mesh's default retry policy
    with running_proxy(resources, node_arn("front"), tmp_path) as started:
        yield started


def load(proxy: MeshProxy, requests: int = REQUESTS) -> Counter[int]:
    """`requests` requests from CLIENTS keep-alive connections; the statuses the clients got."""

    def client(count: int) -> Counter[int]:
        seen: Counter[int] = Counter()
        with Http1Client(proxy.egress_port) as connection:
            for i in range(count):
                seen[connection.get(f"/r{i}", host=SERVICE).status] += 1
        return seen

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        parts = list(pool.map(client, [requests // CLIENTS] * CLIENTS))
    return sum(parts, Counter())


def test_one_failure_in_three_leaves_at_most_5_percent_failed(proxy: MeshProxy, flaky: ColourApp) -> None:
    flaky.configure(fail_probability=1 / 3, seed=SEED)
    statuses = load(proxy, FLAKY_REQUESTS)
    assert sum(statuses.values()) == FLAKY_REQUESTS
    assert statuses[503] <= 0.05 * FLAKY_REQUESTS, statuses


def test_a_total_outage_reaches_the_upstream_at_most_1_3_times_per_request(
    proxy: MeshProxy, flaky: ColourApp
) -> None:
    flaky.configure(fail_first=10**9)
    before = proxy.stats()
    statuses = load(proxy)
    after = proxy.stats()
    assert statuses == Counter({503: REQUESTS})
    assert flaky.requests <= 1.3 * REQUESTS, flaky.requests
    overflow = grew(
        before, after, f"cluster.{egress_cluster('flaky', flaky.port)}.upstream_rq_retry_overflow"
    )
    assert overflow >= REQUESTS // 2
