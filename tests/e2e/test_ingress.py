"""The ingress path through a real proxy: a request reaches the local app carrying the listener's per-request
timeout (issue 2). The node under test, `front`, has one http listener with perRequest 3 s.

The 504 at that timeout and the listener's connectionPool limits (spec §4.2: applied toward the local app)
are the router's and the pool's logic: the component tier tests them on a fake clock
(tests/component/router/test_router_timeouts.py, tests/component/upstream/test_circuit_breakers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, Reply, http_request, running_proxy
from .resources import listener, mesh, node_arn, virtual_node

LISTENER_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class IngressMesh:
    proxy: MeshProxy
    app: ColourApp

    def call(self, target: str) -> Reply:
        return http_request(self.proxy.ingress_port, "GET", target, host="front.demo.local", timeout=15)


@pytest.fixture(scope="module")
def app(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("front")


@pytest.fixture(scope="module")
def ingress_mesh(app: ColourApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngressMesh]:
    front_listener = listener(app.port, timeout_s=LISTENER_TIMEOUT_S)
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
