"""A proxy for an ALLOW_ALL mesh, named by a full ARN: egress passthrough, first-listener ingress, and the
admin interface (spec §3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, http_request, running_proxy, wait_for
from .resources import egress_cluster, listener, mesh, service_via_node, virtual_node

MESH = "open"
ARN = "arn:aws:appmesh:us-west-2:111122223333:mesh/open/virtualNode/front"
BLUE = "blue.open.local"
POST_ONLY = ("/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/quitquitquit")


@dataclass(frozen=True, slots=True)
class OpenMesh:
    proxy: MeshProxy
    apps: dict[str, ColourApp]


@pytest.fixture(scope="module")
def apps(app_loop: AppLoop) -> dict[str, ColourApp]:
    return {name: app_loop.colour_app(name) for name in ("blue", "outside", "front-a", "front-b")}


@pytest.fixture(scope="module")
def open_mesh(apps: dict[str, ColourApp], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenMesh]:
    resources = [
        mesh(MESH, egress="ALLOW_ALL"),
        virtual_node("blue", apps["blue"].port, mesh=MESH),
        virtual_node(
            "front",
            [listener(apps["front-a"].port), listener(apps["front-b"].port)],
            backends=[BLUE],
            mesh=MESH,
        ),
        service_via_node(BLUE, "blue", mesh=MESH),
    ]
    with running_proxy(resources, ARN, tmp_path_factory.mktemp("open-mesh")) as proxy:
        yield OpenMesh(proxy, apps)


@pytest.fixture(autouse=True)
def _fresh_apps(apps: dict[str, ColourApp]) -> None:
    for app in apps.values():
        app.reset()


def test_allow_all_forwards_an_unknown_host_to_its_address(open_mesh: OpenMesh) -> None:
    outside = open_mesh.apps["outside"]
    reply = open_mesh.proxy.egress(f"127.0.0.1:{outside.port}", "/out?q=1")
    assert (reply.status, reply.app) == (200, "outside"), reply
    assert reply.json()["path"] == "/out?q=1"
    # Mesh services are still routed by their routes.
    reply = open_mesh.proxy.egress(BLUE, "/in-mesh")
    assert (reply.status, reply.app) == (200, "blue"), reply


def test_ingress_goes_to_the_first_listener(open_mesh: OpenMesh) -> None:
    reply = http_request(open_mesh.proxy.ingress_port, "GET", "/hi", host="front.open.local")
    assert (reply.status, reply.app) == (200, "front-a"), reply
    assert open_mesh.apps["front-b"].requests == 0


def test_server_info_and_ready(open_mesh: OpenMesh) -> None:
    info = open_mesh.proxy.admin("/server_info")
    assert info.status == 200, info
    document = info.json()
    assert document["state"] == "LIVE"
    assert document["node"]["id"] == ARN
    # What ECS and Kubernetes health checks run: curl ... | grep state | grep -q LIVE
    assert any("state" in line and "LIVE" in line for line in info.body.decode().splitlines())
    ready = open_mesh.proxy.admin("/ready")
    assert (ready.status, ready.body) == (200, b"LIVE\n"), ready


def test_stats_clusters_listeners_and_config_dump(open_mesh: OpenMesh) -> None:
    proxy, port = open_mesh.proxy, open_mesh.apps["blue"].port
    assert proxy.egress(BLUE, "/count-me").status == 200
    cluster = egress_cluster("blue", port, mesh=MESH)

    stats = proxy.admin("/stats")
    assert stats.status == 200
    lines = [line for line in stats.body.decode().splitlines() if line]
    assert lines and all(re.fullmatch(r"[^:\s]+: .+", line) for line in lines), [
        line for line in lines if not re.fullmatch(r"[^:\s]+: .+", line)
    ][:5]
    assert proxy.stats()[f"cluster.{cluster}.upstream_rq_total"] >= 1
    assert f"listener.127.0.0.1_{proxy.egress_port}.downstream_cx_total" in proxy.stats()

    clusters = proxy.admin("/clusters").body.decode()
    rq_total = re.search(rf"^{re.escape(cluster)}::127\.0\.0\.1:{port}::rq_total::(\d+)$", clusters, re.M)
    assert rq_total and int(rq_total.group(1)) >= 1, clusters[:2000]

    listeners = proxy.admin("/listeners").body.decode()
    for port_ in (proxy.egress_port, proxy.ingress_port):
        assert f"127.0.0.1:{port_}" in listeners, listeners

    dump = proxy.admin("/config_dump")
    assert dump.status == 200
    assert isinstance(dump.json(), dict)


@pytest.mark.parametrize("path", POST_ONLY)
def test_admin_mutations_need_post(open_mesh: OpenMesh, path: str) -> None:
    proxy = open_mesh.proxy
    reply = proxy.admin(path)
    assert reply.status in (400, 405), reply
    assert proxy.process is not None and proxy.process.poll() is None
    assert proxy.admin("/ready").status == 200
    assert proxy.admin("/server_info").json()["state"] == "LIVE"
    assert proxy.egress(BLUE, "/still-serving").status == 200


def test_healthcheck_fail_and_ok(open_mesh: OpenMesh) -> None:
    proxy = open_mesh.proxy
    try:
        assert proxy.admin("/healthcheck/fail", method="POST").status == 200
        assert proxy.admin("/ready").status == 503
        # Failing health checks only changes what probes see: traffic is still served.
        assert proxy.egress(BLUE, "/while-failed").status == 200
    finally:
        assert proxy.admin("/healthcheck/ok", method="POST").status == 200
    ready = proxy.admin("/ready")
    assert (ready.status, ready.body) == (200, b"LIVE\n"), ready


def test_admin_requests_are_written_to_the_admin_access_log(open_mesh: OpenMesh) -> None:
    """ENVOY_ADMIN_ACCESS_LOG_FILE (the harness points it into the proxy's work dir)."""
    proxy = open_mesh.proxy
    assert proxy.admin("/server_info").status == 200
    assert proxy.admin("/nowhere").status == 404
    log = proxy.workdir / "admin_access.log"
    assert wait_for(lambda: log.exists() and '"GET /nowhere HTTP/1.1" 404' in log.read_text(), 5.0)
    assert '"GET /server_info HTTP/1.1" 200' in log.read_text()
