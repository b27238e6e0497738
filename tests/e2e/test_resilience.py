"""Retries, timeouts and failed upstreams through a real proxy (issue 2).

`retry.demo.local` has an explicit policy (maxRetries 2, server-error); `default.demo.local` has no policy, so
App Mesh's default applies (2 retries on 503, connect failure and reset; spec §4.5); both reach the same
`flaky` app. `gone.demo.local` is a node nobody listens for. Timeouts, per-try timeouts, back-offs and host
avoidance are tested on a fake clock in the component tier (tests/component/router/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, free_ports, grew, running_proxy
from .resources import (
    egress_cluster,
    mesh,
    node_arn,
    retry_policy,
    route,
    service_via_node,
    service_via_router,
    virtual_node,
    virtual_router,
)

RETRY = "retry.demo.local"
DEFAULT = "default.demo.local"
GONE = "gone.demo.local"
MAX_RETRIES = 2
UF_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
RESET_BODY_PREFIX = b"upstream connect error or disconnect/reset before headers. reset reason: "


@dataclass(frozen=True, slots=True)
class ResilienceMesh:
    proxy: MeshProxy
    flaky: ColourApp
    gone_port: int

    def cluster_stat(self, node: str, stat: str) -> str:
        port = {"flaky": self.flaky.port, "gone": self.gone_port}[node]
        return f"cluster.{egress_cluster(node, port)}.{stat}"


@pytest.fixture(scope="module")
def flaky(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("flaky")


@pytest.fixture(scope="module")
def resilience_mesh(flaky: ColourApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResilienceMesh]:
    (gone_port,) = free_ports(1)  # nothing listens there: connections are refused
    resources = [
        mesh(),
        virtual_node("flaky", flaky.port),
        virtual_node("gone", gone_port),
        virtual_node("front", free_ports(1)[0], backends=[RETRY, DEFAULT, GONE]),
        virtual_router("retry-router"),
        route("retry-router", "retry", [("flaky", 1)], retry=retry_policy(MAX_RETRIES, 2), timeout_s=10),
        service_via_router(RETRY, "retry-router"),
        virtual_router("default-router"),
        route("default-router", "no-policy", [("flaky", 1)]),
        service_via_router(DEFAULT, "default-router"),
        service_via_node(GONE, "gone"),
    ]
    with running_proxy(resources, node_arn("front"), tmp_path_factory.mktemp("resilience")) as proxy:
        yield ResilienceMesh(proxy, flaky, gone_port)


@pytest.fixture(autouse=True)
def _fresh_app(flaky: ColourApp) -> None:
    flaky.reset()


# --- explicit retry policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500])
def test_retry_policy_turns_server_errors_into_success(resilience_mesh: ResilienceMesh, status: int) -> None:
    m = resilience_mesh
    m.flaky.configure(fail_first=MAX_RETRIES, fail_status=status)
    before = m.proxy.stats()
    reply = m.proxy.egress(RETRY, "/flaky")
    after = m.proxy.stats()

    assert (reply.status, reply.app) == (200, "flaky"), reply
    assert m.flaky.requests == 1 + MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", "upstream_rq_retry")) == MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", "upstream_rq_total")) == 1 + MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", f"upstream_rq_{status}")) == MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", "upstream_rq_2xx")) == 1


def test_retries_stop_at_max_retries_and_return_the_last_response(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    m.flaky.configure(fail_first=100, fail_status=503)
    before = m.proxy.stats()
    reply = m.proxy.egress(RETRY, "/flaky")
    after = m.proxy.stats()

    assert (reply.status, reply.app, reply.body) == (503, "flaky", b"flaky failing\n"), reply
    assert m.flaky.requests == 1 + MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", "upstream_rq_retry")) == MAX_RETRIES
    assert grew(before, after, m.cluster_stat("flaky", "upstream_rq_503")) == 1 + MAX_RETRIES


def test_retry_policy_retries_a_connection_closed_without_response(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    m.flaky.configure(close_first=MAX_RETRIES)
    reply = m.proxy.egress(RETRY, "/flaky")
    assert (reply.status, reply.app) == (200, "flaky"), reply
    assert m.flaky.requests == 1 + MAX_RETRIES

    m.flaky.reset()
    m.flaky.configure(close_first=100)
    reply = m.proxy.egress(RETRY, "/flaky")
    assert reply.status == 503 and reply.body.startswith(RESET_BODY_PREFIX), reply
    assert m.flaky.requests == 1 + MAX_RETRIES


# --- App Mesh's default retry policy ------------------------------------------------------------------------


def test_default_policy_retries_503_twice(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    m.flaky.configure(fail_first=2, fail_status=503)
    reply = m.proxy.egress(DEFAULT, "/d")
    assert (reply.status, reply.app) == (200, "flaky"), reply
    assert m.flaky.requests == 3

    m.flaky.reset()
    m.flaky.configure(fail_first=100, fail_status=503)
    reply = m.proxy.egress(DEFAULT, "/d")
    assert (reply.status, reply.app) == (503, "flaky"), reply
    assert m.flaky.requests == 3


def test_default_policy_does_not_retry_500(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    m.flaky.configure(fail_first=1, fail_status=500)
    before = m.proxy.stats()
    reply = m.proxy.egress(DEFAULT, "/d")
    assert (reply.status, reply.app) == (500, "flaky"), reply
    assert m.flaky.requests == 1
    assert grew(before, m.proxy.stats(), m.cluster_stat("flaky", "upstream_rq_retry")) == 0


def test_default_policy_retries_a_reset(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    m.flaky.configure(close_first=2)
    reply = m.proxy.egress(DEFAULT, "/d")
    assert (reply.status, reply.app) == (200, "flaky"), reply
    assert m.flaky.requests == 3


# --- refused connections ------------------------------------------------------------------------------------


def test_refused_upstream_gives_503_uf_after_the_default_retries(resilience_mesh: ResilienceMesh) -> None:
    m = resilience_mesh
    before = m.proxy.stats()
    reply = m.proxy.egress(GONE, "/g")
    after = m.proxy.stats()

    assert (reply.status, reply.body, reply.app) == (503, UF_BODY, None), reply
    # The implicit route of a virtual-node provider carries the default policy: 2 retries on connect failure.
    assert grew(before, after, m.cluster_stat("gone", "upstream_cx_connect_fail")) == 3
    assert grew(before, after, m.cluster_stat("gone", "upstream_rq_retry")) == 2
