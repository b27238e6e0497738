"""SDS (issue 13): secrets from a Secret Discovery Service on a unix socket, as App Mesh fetched them from a
SPIRE agent over APPMESH_SDS_SOCKET_PATH (spec §1.8).

The SDS server is grpcio serving Envoy's generated service (tests/e2e/sds_server.py); real Envoy loading a
secret from it (and rotating) proves it speaks the protocol. Then two meshproxy sidecars take every
certificate and trust bundle from it: mTLS works, a push rotates without dropping a request or a
connection, a bad push is NACKed and the last good secret keeps serving, and the socket going away or
being absent at start is survived.
"""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from .apps import AppLoop, ColourApp
from .envoy_sidecar import EnvoySidecar
from .harness import MeshProxy, free_ports, grew, http_request, run_meshproxy, wait_for
from .resources import mesh, node_arn, service_via_node
from .sds_server import SdsServer
from .tls_mesh import (
    Leaf,
    LoadLoop,
    client_policy,
    listener_tls,
    serial_of,
    server_sidecar,
    tls_node,
    uri_leaf,
)

pytestmark = pytest.mark.usefixtures("envoy_protos")
TYPES = "type.googleapis.com/envoy.extensions"
SDS_CLUSTER = "static_cluster_sds_unix_socket"

WEB, WEB_ADDRESS = "web.demo.local", "127.0.0.2"
SPIFFE = "spiffe://demo.local/ns/default/sa"


def sds(name: str) -> dict[str, dict[str, str]]:
    return {"sds": {"secretName": name}}


def pem(leaf: trustme.LeafCert) -> tuple[bytes, bytes]:
    return b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def presented_serial(address: str, port: int, ca: trustme.CA, client: Leaf | None = None) -> str:
    """The serial of the certificate a TLS listener presents to a new connection."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    if client is not None:
        with tempfile.NamedTemporaryFile() as both:
            both.write(client.chain + client.key)
            both.flush()
            context.load_cert_chain(both.name)
    with socket.create_connection((address, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        peer = tls.getpeercert()
    return str(peer["serialNumber"])


# ------------------------------------------------------------------------------------------ the server


def test_envoy_loads_and_rotates_a_secret_from_the_test_sds_server(tmp_path: Path) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert("envoy.demo.local"), ca.issue_cert("envoy.demo.local")
    server = SdsServer(tmp_path / "sds.sock").start()
    port, admin = free_ports(2)
    bootstrap = {
        "node": {"id": "mesh/demo/virtualNode/envoy", "cluster": "envoy"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [
                {
                    "name": SDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": SDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"pipe": {"path": str(server.socket_path)}}}}
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": f"{TYPES}.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ],
            "listeners": [
                {
                    "name": "tls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": f"{TYPES}.filters.network.tcp_proxy.v3.TcpProxy",
                                        "stat_prefix": "tls",
                                        "cluster": SDS_CLUSTER,
                                    },
                                }
                            ],
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": {
                                    "@type": f"{TYPES}.transport_sockets.tls.v3.DownstreamTlsContext",
                                    "common_tls_context": {
                                        "tls_certificate_sds_secret_configs": [
                                            {
                                                "name": "envoy-cert",
                                                "sds_config": {
                                                    "resource_api_version": "V3",
                                                    "api_config_source": {
                                                        "api_type": "GRPC",
                                                        "transport_api_version": "V3",
                                                        "grpc_services": [
                                                            {"envoy_grpc": {"cluster_name": SDS_CLUSTER}}
                                                        ],
                                                    },
                                                },
                                            }
                                        ]
                                    },
                                },
                            },
                        }
                    ],
                }
            ],
        },
    }
    server.set_certificate("envoy-cert", "v1", *pem(first))
    envoy = EnvoySidecar(None, tmp_path / "envoy", admin, raw=bootstrap)
    try:
        envoy.start()
        assert presented_serial("127.0.0.1", port, ca) == serial_of(first)
        assert wait_for(lambda: server.acked("envoy-cert", "v1"), 5), server.requests
        assert server.requests[0].node_id == "mesh/demo/virtualNode/envoy"
        server.set_certificate("envoy-cert", "v2", *pem(second))
        assert wait_for(lambda: presented_serial("127.0.0.1", port, ca) == serial_of(second), 10)
        assert wait_for(lambda: server.acked("envoy-cert", "v2"), 5)
    finally:
        envoy.stop()
        server.stop()


# ------------------------------------------------------------------------------------------ meshproxy


@dataclass
class SdsMesh:
    ca: trustme.CA
    server: SdsServer
    front: MeshProxy
    web: MeshProxy
    web_app: ColourApp
    web_leaf: Leaf
    front_leaf: Leaf

    def direct_serial(self) -> str:
        return presented_serial(WEB_ADDRESS, self.web_app.port, self.ca, self.front_leaf)


@pytest.fixture(scope="module")
def sds_mesh(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdsMesh]:
    base = tmp_path_factory.mktemp("sds")
    ca = trustme.CA()
    web_leaf, front_leaf = uri_leaf(ca, f"{SPIFFE}/web"), uri_leaf(ca, f"{SPIFFE}/front")
    server = SdsServer(base / "agent.sock").start()
    server.set_certificate("web", "w1", web_leaf.chain, web_leaf.key)
    server.set_certificate("front", "f1", front_leaf.chain, front_leaf.key)
    server.set_trust("ROOTCA", "r1", ca.cert_pem.bytes())
    web_app = app_loop.colour_app("web")
    front_port = free_ports(1)[0]
    resources = [
        mesh(),
        tls_node(
            "front",
            "127.0.0.1",
            front_port,
            backends=(WEB,),
            backend_defaults=client_policy(sds("ROOTCA"), certificate=sds("front"), sans=(f"{SPIFFE}/web",)),
        ),
        tls_node(
            "web",
            WEB_ADDRESS,
            web_app.port,
            tls=listener_tls("STRICT", sds("web"), sds("ROOTCA"), sans=(f"{SPIFFE}/front",)),
        ),
        service_via_node(WEB, "web"),
    ]
    env = {"APPMESH_SDS_SOCKET_PATH": str(server.socket_path)}
    web = server_sidecar(resources, "web", base / "web", WEB_ADDRESS, web_app.port, env)
    front = MeshProxy(resources, node_arn("front"), base / "front", env=env)
    try:
        web.start()
        front.start()
        yield SdsMesh(ca, server, front, web, web_app, web_leaf, front_leaf)
    finally:
        front.stop()
        web.stop()
        server.stop()


def test_mtls_with_every_secret_from_sds(sds_mesh: SdsMesh) -> None:
    reply = sds_mesh.front.egress(WEB, "/spiffe")
    assert reply.status == 200 and reply.app == "web", reply
    server = sds_mesh.server
    for name, version in (("web", "w1"), ("front", "f1"), ("ROOTCA", "r1")):
        assert server.acked(name, version), (name, server.requests)
    assert {r.node_id for r in server.requests if r.node_id} == {
        node_arn("web"),
        node_arn("front"),
    }  # first requests
    assert sds_mesh.direct_serial() == sds_mesh.web_leaf.serial


def test_a_push_rotates_under_load_without_a_failed_request(sds_mesh: SdsMesh) -> None:
    before, before_front = sds_mesh.web.stats(), sds_mesh.front.stats()
    with LoadLoop(sds_mesh.front, WEB) as load:
        assert load.more()
        new_web, new_front = uri_leaf(sds_mesh.ca, f"{SPIFFE}/web"), uri_leaf(sds_mesh.ca, f"{SPIFFE}/front")
        sds_mesh.server.set_certificate("web", "w2", new_web.chain, new_web.key)
        sds_mesh.server.set_certificate("front", "f2", new_front.chain, new_front.key)
        assert wait_for(lambda: sds_mesh.direct_serial() == new_web.serial, 10)
        assert wait_for(lambda: sds_mesh.server.acked("front", "f2"), 10)
        assert load.more()
    assert load.failures == [] and load.count > 40
    after = sds_mesh.web.stats()
    factory = f"listener.{WEB_ADDRESS}_{sds_mesh.web_app.port}.server_ssl_socket_factory"
    assert grew(before, after, f"{factory}.ssl_context_update_by_sds") >= 1
    # the pooled TLS connection from front to web was not dropped by either rotation
    cluster = f"cluster.cds_egress_demo_web_http_{sds_mesh.web_app.port}"
    assert grew(before_front, sds_mesh.front.stats(), f"{cluster}.upstream_cx_destroy") == 0
    sds_mesh.web_leaf, sds_mesh.front_leaf = new_web, new_front


def test_a_bad_push_is_nacked_and_the_last_good_secret_keeps_serving(sds_mesh: SdsMesh) -> None:
    current = sds_mesh.direct_serial()
    mismatched, other = uri_leaf(sds_mesh.ca, f"{SPIFFE}/web"), uri_leaf(sds_mesh.ca, f"{SPIFFE}/other")
    sds_mesh.server.set_certificate("web", "w-bad", mismatched.chain, other.key)
    assert wait_for(lambda: any(r.version_info != "w-bad" for r in sds_mesh.server.nacks()), 10)
    (nack,) = [r for r in sds_mesh.server.nacks() if "web" in r.names]
    assert "does not match" in nack.error, nack
    assert sds_mesh.direct_serial() == current
    assert sds_mesh.front.egress(WEB, "/still").status == 200
    stderr = sds_mesh.web.stderr_text()
    assert "rejected an update of secret 'web'" in stderr and "does not match" in stderr, stderr[-2000:]


def test_the_sds_agent_going_away_and_coming_back(sds_mesh: SdsMesh) -> None:
    server = sds_mesh.server
    server.stop()
    assert wait_for(lambda: "SDS: connection to" in sds_mesh.web.stderr_text(), 10)
    for _ in range(3):  # new connections keep getting the last secrets
        reply = sds_mesh.front.egress(WEB, "/no-agent")
        assert reply.status == 200, reply
    seen = len(server.requests)
    server.start()
    # reconnected: each proxy asks again, stating the version it already has
    assert wait_for(lambda: any(r.names == ("web",) and r.version_info for r in server.requests[seen:]), 15)
    assert sds_mesh.front.egress(WEB, "/agent-back").status == 200


def test_an_absent_agent_is_waited_for_and_named(app_loop: AppLoop, tmp_path: Path) -> None:
    ca = trustme.CA()
    app = app_loop.colour_app("late")
    server = SdsServer(tmp_path / "late.sock")
    resources = [
        mesh(),
        tls_node("late", "127.0.0.7", app.port, tls=listener_tls("STRICT", sds("late"))),
    ]
    env = {"APPMESH_SDS_SOCKET_PATH": str(server.socket_path)}
    proxy = server_sidecar(resources, "late", tmp_path / "late", "127.0.0.7", app.port, env)
    proxy.spawn()
    try:
        assert wait_for(lambda: "SDS: cannot reach" in proxy.stderr_text(), 10), proxy.output_tail()
        assert str(server.socket_path) in proxy.stderr_text() and "'late'" in proxy.stderr_text()
        assert http_request(proxy.admin_port, "GET", "/ready").status != 200  # waiting for its secret
        server.set_certificate("late", "l1", *pem(ca.issue_cert("late.demo.local")))
        server.start()
        proxy.wait_ready(timeout=15)
        assert presented_serial("127.0.0.7", app.port, ca) != ""
    finally:
        proxy.stop()
        server.stop()


def test_sds_without_the_socket_variable_is_refused(tmp_path: Path) -> None:
    resources = [mesh(), tls_node("web", "127.0.0.1", 8080, tls=listener_tls("STRICT", sds("web")))]
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps(resources))
    env = {**MeshProxy(resources, node_arn("web"), tmp_path / "p").environment()}
    env.pop("APPMESH_SDS_SOCKET_PATH", None)
    done = run_meshproxy(["run", "--config", str(config)], env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "SDS secret 'web' needs APPMESH_SDS_SOCKET_PATH" in done.stderr, done.stderr


def test_every_worker_process_fetches_its_secrets(app_loop: AppLoop, tmp_path: Path) -> None:
    """ENVOY_CONCURRENCY=2: each worker has its own SDS stream (as each Envoy process would), and the admin
    port reports the listener's TLS stats summed over the workers."""
    ca = trustme.CA()
    app = app_loop.colour_app("busy")
    server = SdsServer(tmp_path / "workers.sock").start()
    server.set_certificate("busy", "b1", *pem(ca.issue_cert("busy.demo.local")))
    resources = [mesh(), tls_node("busy", "127.0.0.8", app.port, tls=listener_tls("STRICT", sds("busy")))]
    env = {"APPMESH_SDS_SOCKET_PATH": str(server.socket_path), "ENVOY_CONCURRENCY": "2"}
    proxy = server_sidecar(resources, "busy", tmp_path / "busy", "127.0.0.8", app.port, env)
    try:
        proxy.start()
        assert wait_for(lambda: sum(1 for r in server.requests if r.node_id) == 2, 10), server.requests
        for _ in range(6):
            assert presented_serial("127.0.0.8", app.port, ca) != ""
        handshakes = f"listener.127.0.0.8_{app.port}.ssl.handshake"
        assert wait_for(lambda: proxy.stats().get(handshakes, 0) == 6, 10), proxy.stats()
    finally:
        proxy.stop()
        server.stop()
