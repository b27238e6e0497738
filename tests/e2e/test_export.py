"""`meshproxy export` against moto's App Mesh server, and the export's round trip through validate and run.

moto's server (`moto_server`, from moto[server]) runs as a subprocess on a free loopback port; the test
creates resources in it with boto3 and dummy credentials. It implements meshes, virtual nodes, virtual
routers, routes, virtual gateways and gateway routes, but not virtual services: the export skips that kind
with a warning. The round-trip mesh therefore routes without virtual services: the node under test, `blue`,
receives on its ingress listener and forwards to its local app.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apps import AppLoop, ColourApp
from .aws import REGION, aws_environ, moto_server
from .harness import MeshProxy, clean_environ, free_ports, http_request, run_meshproxy
from .resources import node_arn

ROUND_TRIP = "roundtrip"
GATEWAYS = "gateways"


def node_spec(port: int) -> dict[str, Any]:
    return {
        "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
    }


def http_route(targets: list[tuple[str, int]], prefix: str) -> dict[str, Any]:
    return {
        "httpRoute": {
            "match": {"prefix": prefix},
            "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets]},
        }
    }


@pytest.fixture(scope="module")
def blue(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("blue")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, blue: ColourApp) -> Iterator[str]:
    """moto's server, holding the round-trip mesh and a mesh with a gateway and gateway routes."""
    import boto3

    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        client = boto3.client(
            "appmesh",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_mesh(meshName=ROUND_TRIP, spec={"egressFilter": {"type": "DROP_ALL"}})
        ports = {"blue": blue.port, "green": free_ports(1)[0], "red": free_ports(1)[0]}
        for name, port in ports.items():
            client.create_virtual_node(meshName=ROUND_TRIP, virtualNodeName=name, spec=node_spec(port))
        client.create_virtual_router(
            meshName=ROUND_TRIP,
            virtualRouterName="color-router",
            spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
        )
        for index, (targets, prefix) in enumerate(
            [([("blue", 50), ("green", 50)], "/"), ([("red", 100)], "/red"), ([("green", 100)], "/green")]
        ):
            client.create_route(
                meshName=ROUND_TRIP,
                virtualRouterName="color-router",
                routeName=f"route-{index}",
                spec={**http_route(targets, prefix), "priority": index},
            )

        client.create_mesh(meshName=GATEWAYS)
        client.create_virtual_gateway(
            meshName=GATEWAYS,
            virtualGatewayName="ingress-gw",
            spec={"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]},
        )
        for name, prefix in (("to-color", "/color"), ("to-shape", "/shape")):
            client.create_gateway_route(
                meshName=GATEWAYS,
                virtualGatewayName="ingress-gw",
                gatewayRouteName=name,
                spec={
                    "httpRoute": {
                        "match": {"prefix": prefix},
                        "action": {"target": {"virtualService": {"virtualServiceName": f"{name}.local"}}},
                    }
                },
            )
        yield url


def export(
    endpoint: str, mesh: str, output: str, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_meshproxy(
        [
            "export",
            "--mesh",
            mesh,
            "--endpoint-url",
            endpoint,
            "--region",
            REGION,
            "--output",
            output,
            *extra,
        ],
        env=aws_environ(),
        cwd=tmp_path,
        timeout=60.0,
    )


def kinds(document: list[dict[str, Any]]) -> list[str]:
    return [next(iter(item)) for item in document]


class ExportedConfigProxy(MeshProxy):
    """A proxy that runs the exported file as written (MeshProxy would rewrite its config file)."""

    def write_config(self) -> Path:
        return self.config_path


def test_export_round_trips_through_validate_and_run(endpoint: str, blue: ColourApp, tmp_path: Path) -> None:
    proxy = ExportedConfigProxy([], node_arn("blue", mesh=ROUND_TRIP), tmp_path / "proxy")
    # --page-size 2: three nodes and three routes take two pages each
    done = export(endpoint, ROUND_TRIP, str(proxy.config_path), tmp_path, "--page-size", "2")
    assert done.returncode == 0, done
    document = json.loads(proxy.config_path.read_text())

    assert kinds(document) == ["mesh", *["virtualNode"] * 3, "virtualRouter", *["route"] * 3]
    nodes = {item["virtualNode"]["virtualNodeName"] for item in document if "virtualNode" in item}
    routes = {item["route"]["routeName"] for item in document if "route" in item}
    assert nodes == {"blue", "green", "red"} and routes == {"route-0", "route-1", "route-2"}
    route_1 = next(item["route"] for item in document if item.get("route", {}).get("routeName") == "route-1")
    assert route_1["spec"]["httpRoute"]["action"]["weightedTargets"] == [
        {"virtualNode": "red", "weight": 100}
    ]
    assert "does not implement ListVirtualServices; virtual services skipped" in done.stderr
    assert "virtual nodes 3" in done.stderr and "routes 3" in done.stderr

    validated = run_meshproxy(["validate", str(proxy.config_path)], env=clean_environ(), cwd=tmp_path)
    assert validated.returncode == 0, validated
    assert "ok: 8 resources" in validated.stdout

    proxy.start()
    try:
        info = proxy.admin("/server_info").json()
        reply = http_request(proxy.ingress_port, "GET", "/through-the-export", host="blue.local")
    finally:
        proxy.stop()
    assert info["state"] == "LIVE"
    assert (reply.status, reply.app) == (200, "blue"), reply


def test_export_walks_gateway_routes_per_gateway_to_stdout(endpoint: str, tmp_path: Path) -> None:
    done = export(endpoint, GATEWAYS, "-", tmp_path, "--page-size", "1")
    assert done.returncode == 0, done
    document = json.loads(done.stdout)
    assert kinds(document) == ["mesh", "virtualGateway", "gatewayRoute", "gatewayRoute"]
    names = [item["gatewayRoute"]["gatewayRouteName"] for item in document if "gatewayRoute" in item]
    assert sorted(names) == ["to-color", "to-shape"]
    assert all(item["gatewayRoute"]["virtualGatewayName"] == "ingress-gw" for item in document[2:])
    # metadata timestamps are written as ISO 8601 text
    assert isinstance(document[0]["mesh"]["metadata"]["createdAt"], str)
    # the routes' target services were skipped with their kind, and the export says it will not validate
    assert "virtual services skipped" in done.stderr
    assert "the export does not validate" in done.stderr


def test_export_of_a_missing_mesh_fails_clearly_and_writes_nothing(endpoint: str, tmp_path: Path) -> None:
    output = tmp_path / "never.json"
    done = export(endpoint, "no-such-mesh", str(output), tmp_path)
    assert done.returncode == 1, done
    assert "DescribeMesh" in done.stderr and "no-such-mesh" in done.stderr, done
    assert not output.exists()
    assert not list(tmp_path.glob(".meshproxy-export-*"))


def test_export_to_an_unreachable_endpoint_fails_clearly(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_ports(1)[0]}"
    done = export(nobody, ROUND_TRIP, str(tmp_path / "x.json"), tmp_path)
    assert done.returncode == 1, done
    assert "Could not connect to the endpoint URL" in done.stderr, done


def test_export_without_a_region_names_the_fix(tmp_path: Path) -> None:
    done = run_meshproxy(
        ["export", "--mesh", "m", "--output", "-"], env=aws_environ(), cwd=tmp_path, timeout=30.0
    )
    assert done.returncode == 1, done
    assert "pass --region or set AWS_REGION" in done.stderr, done


@pytest.mark.parametrize("size", ["0", "101", "many"])
def test_export_rejects_a_bad_page_size(size: str, tmp_path: Path) -> None:
    done = run_meshproxy(
        ["export", "--mesh", "m", "--output", "-", "--page-size", size], env=aws_environ(), cwd=tmp_path
    )
    assert done.returncode == 2, done
    assert "--page-size" in done.stderr, done
