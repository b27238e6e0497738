"""Envoy's router control headers from a client, through a real sidecar (router/overrides.py).

Envoy without use_remote_address (App Mesh's setting) honours `x-envoy-retry-on`, `x-envoy-max-retries`,
`x-envoy-upstream-rq-timeout-ms`... for an internal request only: one x-forwarded-for address, an internal
one. An application's own call (no x-forwarded-for) is external: its connection manager strips them unread.
Either way they never reach the upstream. `front`'s sidecar calls `flaky` through a route with no retry
policy (App Mesh's default: 2 retries on 503 only), and serves its own app `local` on the ingress side (a
listener without any retry policy). The gateway side, where they are stripped and ignored whatever the
x-forwarded-for, is in test_gateway.py; the same requests against Envoy 1.40 in test_router_headers_envoy.py;
the merge rules on the fake clock in tests/component/router/test_router_overrides.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, grew, http_request, running_proxy
from .resources import (
    Resource,
    egress_cluster,
    mesh,
    node_arn,
    route,
    service_via_router,
    virtual_node,
    virtual_router,
)

FLAKY = "flaky.demo.local"
INTERNAL = {"x-forwarded-for": "10.0.3.7"}  # what makes a request internal to Envoy
CONTROL = (
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
)


@dataclass(frozen=True, slots=True)
class Sidecar:
    proxy: MeshProxy
    flaky: ColourApp
    local: ColourApp

    def retries(self, before: dict[str, int]) -> int:
        name = f"cluster.{egress_cluster('flaky', self.flaky.port)}.upstream_rq_retry"
        return grew(before, self.proxy.stats(), name)


@pytest.fixture(scope="module")
def sidecar(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    flaky, local = app_loop.colour_app("flaky"), app_loop.colour_app("local")
    resources = front_resources(flaky, local)
    with running_proxy(resources, node_arn("front"), tmp_path_factory.mktemp("router-headers")) as proxy:
        yield Sidecar(proxy, flaky, local)


def front_resources(flaky: ColourApp, local: ColourApp) -> list[Resource]:
    """`front` (its app: `local`) calling `flaky` through a route without a retry policy, timeout 10 s."""
    return [
        mesh(),
        virtual_node("flaky", flaky.port),
        virtual_node("front", local.port, backends=[FLAKY]),
        virtual_router("flaky-router"),
        route("flaky-router", "no-policy", [("flaky", 1)], timeout_s=10),
        service_via_router(FLAKY, "flaky-router"),
    ]


def fresh(*apps: ColourApp) -> Iterator[None]:
    """For an autouse fixture: `apps` forget their counters and failure modes before and after a test."""
    for app in apps:
        app.reset()
    yield
    for app in apps:
        app.reset()


@pytest.fixture(autouse=True)
def _fresh_apps(sidecar: Sidecar) -> Iterator[None]:
    yield from fresh(sidecar.flaky, sidecar.local)


def test_the_route_alone_does_not_retry_a_500(sidecar: Sidecar) -> None:
    sidecar.flaky.configure(fail_first=1, fail_status=500)
    reply = sidecar.proxy.egress(FLAKY, "/plain")
    assert reply.status == 500 and sidecar.flaky.requests == 1, reply


def test_retry_on_and_max_retries_turn_a_flaky_upstream_into_success(sidecar: Sidecar) -> None:
    sidecar.flaky.configure(fail_first=3, fail_status=500)
    before = sidecar.proxy.stats()
    headers = {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3", **INTERNAL}
    reply = sidecar.proxy.egress(FLAKY, "/flaky", headers=headers)

    assert (reply.status, reply.app) == (200, "flaky"), reply
    assert sidecar.flaky.requests == 4
    assert sidecar.retries(before) == 3
    assert not [name for seen in sidecar.flaky.seen for name in seen.headers if name in CONTROL]


def test_max_retries_alone_changes_the_routes_count(sidecar: Sidecar) -> None:
    sidecar.flaky.configure(
        fail_first=4, fail_status=503
    )  # the route's policy (503) gives up after 2 retries
    reply = sidecar.proxy.egress(FLAKY, "/few", headers={"x-envoy-max-retries": "4", **INTERNAL})
    assert (reply.status, sidecar.flaky.requests) == (200, 5), reply


def test_a_slow_upstream_times_out_at_the_clients_timeout_with_504_ut(sidecar: Sidecar) -> None:
    sidecar.flaky.configure(delay_s=2.0, delay_first=1)
    headers = {"x-envoy-upstream-rq-timeout-ms": "300", "x-envoy-retry-on": "not-a-policy", **INTERNAL}
    before = sidecar.proxy.stats()
    reply = sidecar.proxy.egress(FLAKY, "/slow", headers=headers)

    assert (reply.status, reply.body, reply.app) == (504, b"upstream request timeout", None), reply
    timeout = f"cluster.{egress_cluster('flaky', sidecar.flaky.port)}.upstream_rq_timeout"
    assert grew(before, sidecar.proxy.stats(), timeout) == 1
    seen = sidecar.flaky.seen[0].headers
    assert seen["x-envoy-expected-rq-timeout-ms"] == "300"  # the effective timeout, told upstream
    assert not [name for name in seen if name in CONTROL]


def test_invalid_values_are_ignored(sidecar: Sidecar) -> None:
    headers = {
        "x-envoy-upstream-rq-timeout-ms": "-1",
        "x-envoy-max-retries": "lots",
        "x-envoy-upstream-rq-per-try-timeout-ms": "1.5",
        **INTERNAL,
    }
    reply = sidecar.proxy.egress(FLAKY, "/odd", headers=headers)
    assert reply.status == 200, reply
    assert reply.json()["headers"]["x-envoy-expected-rq-timeout-ms"] == "10000"  # the route's


def test_the_ingress_listener_honours_them_too(sidecar: Sidecar) -> None:
    """The local app's listener has no retry policy: `x-envoy-retry-on` gets Envoy's default of one retry."""
    sidecar.local.configure(fail_first=5, fail_status=502)
    port = sidecar.proxy.ingress_port
    headers = {"x-envoy-retry-on": "gateway-error", **INTERNAL}
    reply = http_request(port, "GET", "/in", host="front.demo.local", headers=headers)
    assert (reply.status, sidecar.local.requests) == (502, 2), reply
    assert not [name for seen in sidecar.local.seen for name in seen.headers if name in CONTROL]


def test_an_applications_own_call_has_them_stripped_and_ignored(sidecar: Sidecar) -> None:
    """No x-forwarded-for: external to Envoy, whose connection manager drops them before the router."""
    sidecar.flaky.configure(fail_first=1, fail_status=500, delay_s=0.5, delay_first=1)
    headers = {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3", "x-envoy-upstream-rq-timeout-ms": "100"}
    reply = sidecar.proxy.egress(FLAKY, "/mine", headers=headers)
    assert (reply.status, sidecar.flaky.requests) == (500, 1), reply  # not timed out, not retried
    seen = sidecar.flaky.seen[0].headers
    assert seen["x-envoy-expected-rq-timeout-ms"] == "10000"
    assert not [name for name in seen if name in CONTROL]
