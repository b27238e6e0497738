"""The ingress path: listener per-request timeout and connection-pool limits towards the local app (issue 2).

The node under test, `front`, has one http listener with perRequest 3 s and connectionPool.http
{maxConnections 1, maxPendingRequests 1} (spec §4.2: applied on the destination side, Envoy -> local app).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, Reply, grew, http_request, running_proxy, wait_for
from .resources import ingress_cluster, listener, mesh, node_arn, virtual_node

LISTENER_TIMEOUT_S = 3.0
OVERFLOW_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


@dataclass(frozen=True, slots=True)
class IngressMesh:
    proxy: MeshProxy
    app: ColourApp

    def stat(self, name: str) -> str:
        return f"cluster.{ingress_cluster('front', self.app.port)}.{name}"

    def call(self, target: str) -> Reply:
        return http_request(self.proxy.ingress_port, "GET", target, host="front.demo.local", timeout=15)


@pytest.fixture(scope="module")
def app(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("front")


@pytest.fixture(scope="module")
def ingress_mesh(app: ColourApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngressMesh]:
    front_listener = listener(
        app.port, timeout_s=LISTENER_TIMEOUT_S, max_connections=1, max_pending_requests=1
    )
    resources = [mesh(), virtual_node("front", [front_listener])]
    with running_proxy(resources, node_arn("front"), tmp_path_factory.mktemp("ingress")) as proxy:
        yield IngressMesh(proxy, app)


@pytest.fixture(autouse=True)
def _fresh_app(app: ColourApp) -> None:
    app.reset()


def test_ingress_request_carries_the_listener_timeout(ingress_mesh: IngressMesh) -> None:
    reply = ingress_mesh.call("/hello")
    assert (reply.status, reply.app) == (200, "front"), reply
    assert reply.json()["headers"]["x-envoy-expected-rq-timeout-ms"] == "3000"


def test_listener_timeout_gives_504(ingress_mesh: IngressMesh) -> None:
    m = ingress_mesh
    upstream_delay_s = 6.0
    m.app.configure(delay_s=upstream_delay_s, delay_first=1)
    before = m.proxy.stats()
    started = time.monotonic()
    reply = m.call("/slow")
    elapsed = time.monotonic() - started

    assert (reply.status, reply.body) == (504, b"upstream request timeout"), reply
    assert LISTENER_TIMEOUT_S * 0.9 <= elapsed < upstream_delay_s - 1.0, elapsed
    assert grew(before, m.proxy.stats(), m.stat("upstream_rq_timeout")) == 1


def test_connection_pool_overflow_gives_503(ingress_mesh: IngressMesh) -> None:
    m = ingress_mesh
    # Long enough to queue behind, short enough that the queued request (1 s waiting + 1 s served) stays
    # inside the 3 s listener timeout.
    m.app.configure(delay_s=1.0, delay_first=2)
    before = m.proxy.stats()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        in_flight = pool.submit(m.call, "/first")
        # (`requests`, not `in_flight`: a handler delayed by an earlier test may still be sleeping.)
        assert wait_for(lambda: m.app.requests == 1, 5.0), "the first request never reached the app"
        pending = pool.submit(m.call, "/second")
        # The second request must be queued in the proxy (one connection allowed) before the third arrives:
        # wait for Envoy's pending gauge, or a bounded moment if the proxy does not report it.
        wait_for(lambda: m.proxy.stats().get(m.stat("upstream_rq_pending_active"), 0) >= 1, 0.3)
        overflow = m.call("/third")
        first, second = in_flight.result(15), pending.result(15)
    after = m.proxy.stats()

    assert (overflow.status, overflow.body) == (503, OVERFLOW_BODY), overflow
    assert (first.status, second.status) == (200, 200), (first, second)
    assert [s.path for s in m.app.seen] == ["/first", "/second"]
    assert len(m.app.peers) == 1  # maxConnections 1: both went over the one upstream connection
    assert grew(before, after, m.stat("upstream_rq_pending_overflow")) == 1
