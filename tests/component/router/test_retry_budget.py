"""The retry budget (issue 14, defect 4) through the real router, pools and codecs, on the fake clock.

Two numbers from the issue, each with 1200 requests arriving at 100 per second of fake time against one
upstream with App Mesh's default retry policy (2 retries on 503):
- the upstream fails one attempt in three (seeded, so the run is the same every time): at most 5 % of the
  requests fail (2 retries give 1/27, 3.7 %);
- the upstream is down (every answer 503): it sees at most 1.3 times the request rate, where two retries
  per request without a budget triple it (checked too, so the test shows it can fail).
"""

from __future__ import annotations

import random

from meshproxy.config.snapshot import RetryBudget

from ..clients import H1Client
from ..memory import MemoryNetwork, Run
from ..proxy import ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import Respond

REQUESTS = 1200
INTERVAL_S = 0.01  # 100 requests per second of fake time


async def send_all(proxy: ComponentProxy, net: MemoryNetwork) -> list[H1Client]:
    clients = []
    for i in range(REQUESTS):
        client = proxy.h1()
        client.get(f"/r{i}")
        clients.append(client)
        await net.advance(INTERVAL_S)
    await net.advance(2.0)  # the last back-offs
    return clients


def statuses(clients: list[H1Client]) -> list[int]:
    return [client.response().status for client in clients]


def test_one_failure_in_three_still_leaves_at_most_5_percent_failed(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        rng = random.Random(3)  # its draws fail 33.5 % of the time
        answers = [Respond(503) if rng.random() < 1 / 3 else Respond(200) for _ in range(3 * REQUESTS)]
        app = serve_h1(net, *answers)
        async with running_proxy(net, egress_snapshot()) as proxy:
            failed = statuses(await send_all(proxy, net)).count(503)
            stats = proxy.cluster_stats()

            assert failed <= 0.05 * REQUESTS, (failed, stats.upstream_rq_retry_overflow)
            assert len(app.requests) == REQUESTS + stats.upstream_rq_retry
            # the success rate stays above the budget's line: retries are hardly ever refused
            assert stats.upstream_rq_retry_overflow <= 0.01 * REQUESTS

    run(scenario())


def test_a_total_outage_multiplies_the_load_by_at_most_1_3(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503, b"down"))
        async with running_proxy(net, egress_snapshot()) as proxy:
            clients = await send_all(proxy, net)
            stats = proxy.cluster_stats()

            assert set(statuses(clients)) == {503}
            assert len(app.requests) <= 1.3 * REQUESTS, len(app.requests)
            assert stats.upstream_rq_retry_overflow >= REQUESTS // 2
            assert stats.upstream_rq_retry + REQUESTS == len(app.requests)
            # the refused retries relay the upstream's answer, flagged UO as Envoy's retry overflow is
            overflowed = [s for s in proxy.summaries if "UO" in s.response_flags.split(",")]
            assert len(overflowed) == stats.upstream_rq_retry_overflow
            assert clients[-1].response().body == b"down"

    run(scenario())


def test_without_a_budget_an_outage_triples_the_load(run: Run, net: MemoryNetwork) -> None:
    """What the budget prevents (MESHPROXY_RETRY_BUDGET_TOKENS=0: retries bounded by the policy only)."""

    async def scenario() -> None:
        app = serve_h1(net, Respond(503))
        async with running_proxy(net, egress_snapshot(), retry_budget=None) as proxy:
            await send_all(proxy, net)
            assert len(app.requests) == 3 * REQUESTS
            assert proxy.cluster_stats().upstream_rq_retry_overflow == 0

    run(scenario())


def test_the_floor_allows_a_few_retries_per_second_in_an_outage(run: Run, net: MemoryNetwork) -> None:
    """With no success tokens to spend, `min_retries_per_second` retries still go (here 2 per second, with
    one second's worth to start with)."""

    async def scenario() -> None:
        app = serve_h1(net, Respond(503))
        budget = RetryBudget(max_tokens=2.0, token_ratio=1.0, min_retries_per_second=2.0)
        async with running_proxy(net, egress_snapshot(), retry_budget=budget) as proxy:
            await send_all(proxy, net)
            retries = proxy.cluster_stats().upstream_rq_retry
            seconds = REQUESTS * INTERVAL_S  # requests (and their retries) come in this long
            assert 2 * (seconds - 1) <= retries <= 2 + 2 * seconds, retries
            assert len(app.requests) == REQUESTS + retries

    run(scenario())
