"""Egress routing through a real proxy, on both HTTP/1.1 parsers (issue 2).

One mesh, one proxy per parser, shared by every test here. The node under test is `front`; it calls
`color.demo.local` (a router with one route per match kind, in explicit priority order, and a weighted
catch-all), `prio.demo.local` and `longest.demo.local` (priority vs. match-length ordering) and
`white.demo.local` (a virtual-node provider whose DNS hostname is "localhost"). Each upstream node is a
`ColourApp` on its own loopback port, so the app that answered names the route that matched.
"""

from __future__ import annotations

import asyncio
import collections
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from .apps import AppLoop, ColourApp
from .harness import Http1Client, MeshProxy, clean_environ, grew, http_request, running_proxy
from .resources import (
    egress_cluster,
    ingress_cluster,
    mesh,
    node_arn,
    route,
    service_via_node,
    service_via_router,
    virtual_node,
    virtual_router,
)

COLOR = "color.demo.local"
SPLIT = ("blue", "green")  # what the weighted catch-all answers with (zero has weight 0)
APP_NAMES = (
    "blue", "green", "zero", "red", "purple", "yellow", "orange", "pink", "cyan", "brown", "gold", "teal",
    "olive", "white", "hidden", "front",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ColourMesh:
    proxy: MeshProxy
    apps: dict[str, ColourApp]

    def port(self, app: str) -> int:
        return self.apps[app].port


def colour_mesh_resources(apps: dict[str, ColourApp]) -> list[dict[str, object]]:
    def node(name: str, hostname: str = "127.0.0.1") -> dict[str, object]:
        return virtual_node(name, apps[name].port, hostname=hostname)

    r = "color-router"
    return [
        mesh(egress="DROP_ALL"),
        *(node(name) for name in APP_NAMES if name not in ("white", "front")),
        node("white", hostname="localhost"),
        virtual_node(
            "front",
            apps["front"].port,
            backends=[COLOR, "prio.demo.local", "longest.demo.local", "white.demo.local"],
        ),
        virtual_router(r),
        route(r, "exact", [("red", 1)], path_exact="/exact/only", priority=0),
        route(r, "regex", [("purple", 1)], path_regex="/re/[0-9]+", priority=1),
        route(r, "prefix", [("yellow", 1)], prefix="/prefix/", priority=2),
        route(r, "header-exact", [("orange", 1)], headers=[_header("x-colour", exact="orange")], priority=3),
        route(
            r,
            "header-both",
            [("pink", 1)],
            headers=[_header("x-user", prefix="beta-"), _header("x-env", suffix="-test")],
            priority=4,
        ),
        route(
            r,
            "header-range",
            [("cyan", 1)],
            headers=[{"name": "x-version", "match": {"range": {"start": 10, "end": 20}}}],
            priority=5,
        ),
        route(r, "header-regex", [("brown", 1)], headers=[_header("x-shade", regex="br[a-z]+n")], priority=6),
        route(
            r,
            "header-invert",
            [("gold", 1)],
            prefix="/tier/",
            headers=[{"name": "x-tier", "invert": True, "match": {"exact": "free"}}],
            priority=7,
        ),
        route(r, "method", [("teal", 1)], method="POST", priority=8),
        route(
            r, "query", [("olive", 1)], query=[{"name": "colour", "match": {"exact": "olive"}}], priority=9
        ),
        route(r, "split", [("blue", 50), ("green", 50), ("zero", 0)], priority=100),
        service_via_router(COLOR, r),
        # A priority-0 catch-all listed after a more specific priority-1 route: the catch-all must win.
        virtual_router("prio-router"),
        route("prio-router", "specific", [("red", 1)], prefix="/specific", priority=1),
        route("prio-router", "catch-all", [("blue", 1)], prefix="/", priority=0),
        service_via_router("prio.demo.local", "prio-router"),
        # No priorities, catch-all listed first: ordering by match length must still pick the specific one.
        virtual_router("longest-router"),
        route("longest-router", "catch-all", [("blue", 1)], prefix="/"),
        route("longest-router", "specific", [("red", 1)], prefix="/specific"),
        service_via_router("longest.demo.local", "longest-router"),
        service_via_node("white.demo.local", "white"),
        # A virtual service that exists in the mesh but is not one of front's backends.
        service_via_node("hidden.demo.local", "hidden"),
    ]


def _header(name: str, **match: str) -> dict[str, object]:
    return {"name": name, "match": match}


@pytest.fixture(scope="module")
def apps(app_loop: AppLoop) -> dict[str, ColourApp]:
    return {name: app_loop.colour_app(name, dual_stack=name == "white") for name in APP_NAMES}


@pytest.fixture(scope="module")
def colour_mesh(
    apps: dict[str, ColourApp], http1_parser: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ColourMesh]:
    workdir = tmp_path_factory.mktemp(f"routing-{http1_parser}")
    with running_proxy(colour_mesh_resources(apps), node_arn("front"), workdir, parser=http1_parser) as proxy:
        yield ColourMesh(proxy, apps)


@pytest.fixture(autouse=True)
def _fresh_apps(apps: dict[str, ColourApp]) -> None:
    for app in apps.values():
        app.reset()


def _answered_by(reply_app: str | None, expected: str | None) -> bool:
    return reply_app in SPLIT if expected is None else reply_app == expected


# --- weighted targets ---------------------------------------------------------------------------------------


async def _spread(port: int, requests: int, connections: int) -> collections.Counter[tuple[int, str | None]]:
    counts: collections.Counter[tuple[int, str | None]] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            url = f"http://127.0.0.1:{port}/split/{i}"
            async with session.get(url, headers={"Host": COLOR}) as response:
                await response.read()
                counts[(response.status, response.headers.get("x-app-name"))] += 1

        await asyncio.gather(*(one(i) for i in range(requests)))
    return counts


def test_weighted_split_is_within_a_binomial_band_and_weight_zero_gets_nothing(
    colour_mesh: ColourMesh,
) -> None:
    proxy, n = colour_mesh.proxy, 400
    before = proxy.stats()
    counts = asyncio.run(_spread(proxy.egress_port, n, connections=8))
    after = proxy.stats()

    assert sum(counts.values()) == n
    assert set(counts) <= {(200, "blue"), (200, "green")}, counts
    blue = counts[(200, "blue")]
    # 50/50 over n requests: mean n/2, sigma sqrt(n/4); 5 sigma makes a false failure ~1 in 1.7 million.
    assert abs(blue - n / 2) <= 5 * math.sqrt(n / 4), counts
    assert colour_mesh.apps["zero"].requests == 0
    # The proxy's own accounting agrees with what the apps saw.
    assert (
        grew(before, after, f"cluster.{egress_cluster('blue', colour_mesh.port('blue'))}.upstream_rq_total")
        == blue
    )
    assert grew(
        before, after, f"cluster.{egress_cluster('green', colour_mesh.port('green'))}.upstream_rq_2xx"
    ) == (n - blue)
    assert (
        grew(before, after, f"cluster.{egress_cluster('zero', colour_mesh.port('zero'))}.upstream_rq_total")
        == 0
    )
    assert grew(before, after, "http.egress.downstream_rq_total") == n


# --- match kinds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/exact/only", "red"),
        ("/exact/only?x=1", "red"),  # the query is not part of the path
        ("/exact/only/", None),
        ("/exact", None),
        ("/re/123", "purple"),
        ("/re/12a", None),  # the regex must match the whole path
        ("/re/", None),
        ("/prefix/a/b", "yellow"),
        ("/prefix", None),
    ],
)
def test_path_routes(colour_mesh: ColourMesh, target: str, expected: str | None) -> None:
    reply = colour_mesh.proxy.egress(COLOR, target)
    assert reply.status == 200, reply
    assert _answered_by(reply.app, expected), reply
    assert reply.json()["path"] == target


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        ("/h", {"x-colour": "orange"}, "orange"),
        ("/h", {"x-colour": "Orange"}, None),  # header values are matched case-sensitively
        ("/h", {"x-user": "beta-7", "x-env": "qa-test"}, "pink"),
        ("/h", {"x-user": "beta-7"}, None),  # every listed header must match
        ("/h", {"x-user": "alpha-7", "x-env": "qa-test"}, None),
        ("/h", {"x-version": "10"}, "cyan"),  # range start is inclusive
        ("/h", {"x-version": "19"}, "cyan"),
        ("/h", {"x-version": "20"}, None),  # range end is exclusive
        ("/h", {"x-version": "ten"}, None),
        ("/h", {"x-shade": "brown"}, "brown"),
        ("/h", {"x-shade": "brownish"}, None),  # regex matches the whole value
        ("/tier/x", {"x-tier": "gold"}, "gold"),
        ("/tier/x", {"x-tier": "free"}, None),  # inverted exact match
    ],
)
def test_header_routes(
    colour_mesh: ColourMesh, target: str, headers: dict[str, str], expected: str | None
) -> None:
    reply = colour_mesh.proxy.egress(COLOR, target, headers=headers)
    assert reply.status == 200, reply
    assert _answered_by(reply.app, expected), reply


def test_method_route(colour_mesh: ColourMesh) -> None:
    proxy = colour_mesh.proxy
    post = proxy.egress(COLOR, "/things", method="POST", body=b"hello")
    assert (post.status, post.app) == (200, "teal"), post
    assert post.json()["body_bytes"] == 5
    for method in ("GET", "PUT", "DELETE"):
        reply = proxy.egress(COLOR, "/things", method=method)
        assert reply.status == 200 and reply.app in SPLIT, (method, reply)
    assert colour_mesh.apps["teal"].requests == 1


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/q?colour=olive", "olive"),
        ("/q?a=1&colour=olive", "olive"),
        ("/q?colour=olivex", None),
        ("/q?colours=olive", None),
        ("/q", None),
    ],
)
def test_query_parameter_route(colour_mesh: ColourMesh, target: str, expected: str | None) -> None:
    reply = colour_mesh.proxy.egress(COLOR, target)
    assert reply.status == 200, reply
    assert _answered_by(reply.app, expected), reply


def test_priority_zero_catch_all_shadows_a_more_specific_route(colour_mesh: ColourMesh) -> None:
    for target in ("/specific", "/specific/x", "/other"):
        reply = colour_mesh.proxy.egress("prio.demo.local", target)
        assert (reply.status, reply.app) == (200, "blue"), (target, reply)
    assert colour_mesh.apps["red"].requests == 0


def test_without_priorities_the_more_specific_route_wins(colour_mesh: ColourMesh) -> None:
    proxy = colour_mesh.proxy
    for target in ("/specific", "/specific/x"):
        reply = proxy.egress("longest.demo.local", target)
        assert (reply.status, reply.app) == (200, "red"), (target, reply)
    reply = proxy.egress("longest.demo.local", "/other")
    assert (reply.status, reply.app) == (200, "blue"), reply


def test_virtual_node_provider_found_by_localhost_dns(colour_mesh: ColourMesh) -> None:
    reply = colour_mesh.proxy.egress("white.demo.local", "/w")
    assert (reply.status, reply.app) == (200, "white"), reply
    cluster = egress_cluster("white", colour_mesh.port("white"))
    assert colour_mesh.proxy.stats().get(f"cluster.{cluster}.upstream_rq_total", 0) >= 1


# --- host forms ---------------------------------------------------------------------------------------------


def test_host_with_the_router_port_and_absolute_form(colour_mesh: ColourMesh) -> None:
    proxy = colour_mesh.proxy
    reply = proxy.egress(f"{COLOR}:8080", "/exact/only")
    assert (reply.status, reply.app) == (200, "red"), reply
    # Absolute-form, as an application using HTTP_PROXY sends it: http.client puts the URI's host in Host.
    with Http1Client(proxy.egress_port) as client:
        reply = client.get(f"http://{COLOR}/prefix/abc?k=v")
    assert (reply.status, reply.app) == (200, "yellow"), reply
    assert reply.json()["path"] == "/prefix/abc?k=v"  # forwarded in origin-form


def _curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-D", "-", *args],
        env=clean_environ(),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_curl_through_the_egress_listener(colour_mesh: ColourMesh) -> None:
    egress = colour_mesh.proxy.egress_port
    # curl -x: absolute-form request to the proxy
    status, headers, _ = _curl("-x", f"http://127.0.0.1:{egress}", f"http://{COLOR}/exact/only")
    assert (status, headers.get("x-app-name")) == (200, "red"), headers
    # curl with an explicit Host, origin-form
    status, headers, body = _curl("-H", f"Host: {COLOR}:8080", f"http://127.0.0.1:{egress}/re/42")
    assert (status, headers.get("x-app-name")) == (200, "purple"), headers
    assert headers.get("server") == "envoy"
    assert b'"name": "purple"' in body


# --- egress filter ------------------------------------------------------------------------------------------


def test_drop_all_answers_404_for_anything_outside_the_backends(colour_mesh: ColourMesh) -> None:
    proxy = colour_mesh.proxy
    before = proxy.stats()
    hosts = ("unknown.demo.local", f"127.0.0.1:{colour_mesh.port('blue')}", "hidden.demo.local")
    for host in hosts:
        reply = proxy.egress(host, "/x")
        assert (reply.status, reply.body, reply.app) == (404, b"", None), (host, reply)
    assert colour_mesh.apps["blue"].requests == 0
    assert colour_mesh.apps["hidden"].requests == 0
    assert grew(before, proxy.stats(), "http.egress.no_route") == len(hosts)


# --- what the upstream sees, what the client gets -----------------------------------------------------------


def test_forwarding_headers_and_hop_by_hop_headers(colour_mesh: ColourMesh) -> None:
    with Http1Client(colour_mesh.proxy.egress_port) as client:
        reply = client.get(
            "/exact/only",
            host=COLOR,
            headers={
                "X-Request-Id": "keep-me-123",
                "X-Forwarded-For": "203.0.113.7",
                "Connection": "keep-alive, X-Hop",
                "Keep-Alive": "timeout=5",
                "Proxy-Connection": "keep-alive",
                "X-Custom": "custom value",
            },
        )
        first = client.get("/exact/only", host=COLOR)
        second = client.get("/exact/only", host=COLOR)

    assert (reply.status, reply.app) == (200, "red"), reply
    seen = reply.json()["headers"]
    assert seen["x-request-id"] == "keep-me-123"
    assert seen["x-forwarded-for"] == "203.0.113.7"  # egress: passed on, nothing appended (as App Mesh)
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-envoy-expected-rq-timeout-ms"] == "15000"  # App Mesh's default route timeout
    assert seen["x-custom"] == "custom value"
    assert seen["host"] == COLOR
    assert "keep-alive" not in seen and "proxy-connection" not in seen, seen
    assert "x-hop" not in seen.get("connection", "").lower(), seen
    assert reply.headers["server"] == "envoy"
    assert reply.headers["x-envoy-upstream-service-time"].isdigit(), reply.headers

    generated = [r.json()["headers"].get("x-request-id", "") for r in (first, second)]
    assert all(generated) and generated[0] != generated[1], generated
    assert "x-forwarded-for" not in first.json()["headers"]


def test_ingress_forwards_to_the_local_app(colour_mesh: ColourMesh) -> None:
    proxy, port = colour_mesh.proxy, colour_mesh.port("front")
    before = proxy.stats()
    reply = http_request(proxy.ingress_port, "GET", "/inbound?x=1", host="front.demo.local")
    assert (reply.status, reply.app) == (200, "front"), reply
    seen = reply.json()
    assert seen["path"] == "/inbound?x=1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert "x-forwarded-for" not in seen["headers"]  # App Mesh's Envoy appended the caller nowhere
    assert seen["headers"]["x-request-id"]
    assert seen["headers"]["x-envoy-expected-rq-timeout-ms"] == "15000"  # listener default perRequest
    assert reply.headers["server"] == "envoy"
    assert grew(before, proxy.stats(), f"cluster.{ingress_cluster('front', port)}.upstream_rq_total") == 1


def test_upstream_connections_are_kept_alive(colour_mesh: ColourMesh) -> None:
    proxy, red = colour_mesh.proxy, colour_mesh.apps["red"]
    before = proxy.stats()
    with Http1Client(proxy.egress_port) as client:
        for _ in range(100):
            assert client.get("/exact/only", host=COLOR).status == 200
            sock = client.sock
        assert client.sock is sock  # the downstream connection was reused too
    for _ in range(100):  # a new downstream connection each time, closed by the client
        reply = proxy.egress(COLOR, "/exact/only", headers={"Connection": "close"})
        assert reply.status == 200, reply
    after = proxy.stats()

    assert red.requests == 200
    assert len(red.peers) <= 10, f"{len(red.peers)} upstream connections for 200 requests"
    cluster = f"cluster.{egress_cluster('red', colour_mesh.port('red'))}"
    # Connections opened by earlier tests may be reused, so the proxy may have opened fewer than red saw.
    assert grew(before, after, f"{cluster}.upstream_cx_total") <= len(red.peers)
    assert grew(before, after, f"listener.127.0.0.1_{proxy.egress_port}.downstream_cx_total") == 101
