"""Mesh TLS interoperability with real Envoy, both directions (issue 13).

Every server node exists twice: served by a meshproxy sidecar (`*-mp`, on 127.0.0.2) and by Envoy (`*-ev`,
on 127.0.0.3), Envoy running meshproxy's rendering of what App Mesh configured (tests/e2e/envoy_sidecar.py):
STRICT listeners with client validation (mTLS). Two client sidecars, meshproxy and Envoy, call all of them
with the same client policy (a trust bundle, a client certificate, SANs defaulting to the discovery name),
over HTTP/1.1, HTTP/2 (ALPN h2 between the sidecars) and gRPC. Then each side refuses what it must: a
client certificate with the wrong name or from an unknown CA, a server certificate with the wrong name or
from an unknown CA, counted under the same stat names on meshproxy and on Envoy.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .apps import AppLoop, ColourApp
from .envoy_sidecar import EnvoySidecar, merged, node_resources
from .grpc_apps.echo import EchoClient, EchoServer
from .grpc_apps.h2_app import H2App
from .grpc_apps.h2_client import H2Client
from .harness import MeshProxy, free_ports, grew, wait_for
from .resources import mesh, node_arn, service_via_node
from .tls_mesh import Certificates, TlsApp, client_policy, listener_tls, server_sidecar, tls_node

MP, EV = "127.0.0.2", "127.0.0.3"  # server sidecars: meshproxy, Envoy
PROTOCOLS = {"web": "http", "h2": "http2", "grpc": "grpc"}
SERVERS = [f"{kind}-{side}" for kind in PROTOCOLS for side in ("mp", "ev")]


@dataclass
class Interop:
    certs: Certificates
    clients: dict[str, tuple[int, object]]  # "mp" / "ev" -> (egress port, the sidecar)
    mp_servers: dict[str, MeshProxy]
    envoy_server: EnvoySidecar
    ports: dict[str, int]  # kind -> the app's port (= each server sidecar's listener port)
    impostor: TlsApp
    stranger: TlsApp

    def stats(self, side: str) -> dict[str, int]:
        sidecar = self.clients[side][1]
        assert isinstance(sidecar, MeshProxy | EnvoySidecar)
        return sidecar.stats()

    def server_stats(self, node: str) -> dict[str, int]:
        return self.envoy_server.stats() if node.endswith("-ev") else self.mp_servers[node].stats()


def _resources(
    certs: Certificates, ports: dict[str, int], impostor: TlsApp, stranger: TlsApp
) -> list[dict[str, object]]:
    trust = certs.file_trust()
    servers = [
        tls_node(
            f"{kind}-{side}",
            address,
            ports[kind],
            protocol=protocol,
            tls=listener_tls(
                "STRICT", certs.file_certificate(f"{kind}-{side}"), trust, sans=("front.demo.local",)
            ),
        )
        for kind, protocol in PROTOCOLS.items()
        for side, address in (("mp", MP), ("ev", EV))
    ]
    names = (*SERVERS, "impostor", "stranger")
    policy = client_policy(trust, certificate=certs.file_certificate("front"))
    return [
        mesh(),
        tls_node(
            "front",
            "127.0.0.1",
            free_ports(1)[0],
            backends=tuple(f"{n}.demo.local" for n in names),
            backend_defaults=policy,
        ),
        *servers,
        tls_node("impostor", "127.0.0.4", impostor.port),
        tls_node("stranger", "127.0.0.5", stranger.port),
        *(service_via_node(f"{n}.demo.local", n) for n in names),
    ]


@pytest.fixture(scope="module")
def interop(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    base = tmp_path_factory.mktemp("tls-envoy")
    certs = Certificates(base / "certs")
    web_app: ColourApp = app_loop.colour_app("web")
    h2_app = H2App("h2")
    app_loop.call(h2_app.start())
    grpc_app = EchoServer("grpc").start()
    ports = {"web": web_app.port, "h2": h2_app.port, "grpc": grpc_app.port}
    for kind in PROTOCOLS:
        certs.issue(f"{kind}-mp", f"{kind}-mp.demo.local", MP)
        certs.issue(f"{kind}-ev", f"{kind}-ev.demo.local", EV)
    certs.issue("front", "front.demo.local")
    impostor = TlsApp("impostor", "127.0.0.4", certs.ca.issue_cert("someone-else.demo.local"))
    stranger = TlsApp("stranger", "127.0.0.5", certs.stranger.issue_cert("127.0.0.5"))
    for app in (impostor, stranger):
        app_loop.call(app.start())
    resources = _resources(certs, ports, impostor, stranger)
    running: list[MeshProxy | EnvoySidecar] = []
    try:
        mp_servers = {}
        for kind in PROTOCOLS:
            proxy = server_sidecar(resources, f"{kind}-mp", base / f"{kind}-mp", MP, ports[kind])
            running.append(proxy.start())
            mp_servers[f"{kind}-mp"] = proxy
        egress_ev, envoy_admin, envoy_client_admin = free_ports(3)
        server_parts = [
            node_resources(
                resources, f"{kind}-ev", EV, ingress_port=ports[kind], egress_port=egress_ev, ingress=True
            )
            for kind in PROTOCOLS
        ]
        envoy_server = EnvoySidecar(merged(server_parts), base / "envoy-server", envoy_admin)
        running.append(envoy_server.start())
        front_mp = MeshProxy(resources, node_arn("front"), base / "front-mp")
        running.append(front_mp.start())
        client_part = node_resources(
            resources, "front", "127.0.0.1", ingress_port=0, egress_port=egress_ev, ingress=False
        )
        front_ev = EnvoySidecar(
            client_part, base / "envoy-client", envoy_client_admin, node_id=node_arn("front")
        )
        running.append(front_ev.start())
        yield Interop(
            certs,
            {"mp": (front_mp.egress_port, front_mp), "ev": (egress_ev, front_ev)},
            mp_servers,
            envoy_server,
            ports,
            impostor,
            stranger,
        )
    finally:
        for sidecar in reversed(running):
            sidecar.stop()
        grpc_app.stop()
        app_loop.call(h2_app.stop())
        for app in (impostor, stranger):
            app_loop.call(app.stop())


@pytest.mark.parametrize(("client", "server"), list(itertools.product(("mp", "ev"), ("mp", "ev"))))
def test_http1_over_mtls(interop: Interop, client: str, server: str) -> None:
    port = interop.clients[client][0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/interop", headers={"Host": f"web-{server}.demo.local"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200 and b'"name": "web"' in body, (response.status, body[:300])


@pytest.mark.parametrize(("client", "server"), list(itertools.product(("mp", "ev"), ("mp", "ev"))))
def test_http2_over_mtls(interop: Interop, client: str, server: str) -> None:
    port = interop.clients[client][0]
    with H2Client(port) as h2:
        response = h2.request("/interop-h2", f"h2-{server}.demo.local")
    assert response.status == 200, response
    assert b'"protocol": "HTTP/2"' in response.body


@pytest.mark.parametrize(("client", "server"), list(itertools.product(("mp", "ev"), ("mp", "ev"))))
def test_grpc_over_mtls(interop: Interop, client: str, server: str) -> None:
    port = interop.clients[client][0]
    with EchoClient(port, f"grpc-{server}.demo.local") as echo:
        assert echo.unary("demo.Echo/Unary", b"hi") == b"grpc:hi"
        assert echo.stream("demo.Echo/Stream", b"3") == [b"grpc:0", b"grpc:1", b"grpc:2"]


def test_http2_travels_as_http2_between_the_sidecars(interop: Interop) -> None:
    """Both server sidecars saw HTTP/2 connections from both clients (ALPN h2 over TLS: the clients'
    HTTP/2 pools offer it, the listeners select it; tests/e2e/test_mesh_tls.py checks the selection)."""
    for server in (interop.mp_servers["h2-mp"].stats(), interop.envoy_server.stats()):
        assert server["http.ingress.downstream_cx_http2_total"] >= 2, server


def _client_context(certs: Certificates, certificate: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.trust))
    context.check_hostname = False
    if certificate is not None:
        context.load_cert_chain(str(certs.chain(certificate)), str(certs.key(certificate)))
    return context


@pytest.mark.parametrize("side", ["mp", "ev"])
@pytest.mark.parametrize(("sent", "seen"), [(None, "https"), ("http", "http")])
def test_x_forwarded_proto_behind_a_tls_listener_alike(
    interop: Interop, side: str, sent: str | None, seen: str
) -> None:
    """A client straight to a server sidecar's STRICT listener: `https` is set, a client's own value kept."""
    address = MP if side == "mp" else EV
    conn = http.client.HTTPSConnection(
        address, interop.ports["web"], context=_client_context(interop.certs, "front"), timeout=10
    )
    try:
        conn.request("GET", "/proto", headers={"Host": "x", **({"X-Forwarded-Proto": sent} if sent else {})})
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["headers"]["x-forwarded-proto"] == seen
    finally:
        conn.close()


def _bad_client(certs: Certificates, address: str, port: int, certificate: str | None) -> None:
    context = _client_context(certs, certificate)
    conn = http.client.HTTPSConnection(address, port, context=context, timeout=10)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            conn.request("GET", "/refused")
            conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.parametrize("side", ["mp", "ev"])
@pytest.mark.parametrize(
    ("certificate", "stat"),
    [("mallory", "fail_verify_san"), ("eve", "fail_verify_error"), (None, "fail_verify_no_cert")],
)
def test_servers_refuse_bad_client_certificates_alike(
    interop: Interop, side: str, certificate: str | None, stat: str
) -> None:
    certs = interop.certs
    certs.issue("mallory", "mallory.demo.local")
    certs.issue("eve", "front.demo.local", ca=certs.stranger)
    node, address = f"web-{side}", MP if side == "mp" else EV
    listener = f"listener.{address}_{interop.ports['web']}.ssl.{stat}"
    before = interop.server_stats(node)
    _bad_client(certs, address, interop.ports["web"], certificate)
    assert wait_for(lambda: grew(before, interop.server_stats(node), listener) == 1, 5), {
        k: v for k, v in interop.server_stats(node).items() if ".ssl." in k and address in k
    }


@pytest.mark.parametrize("side", ["mp", "ev"])
@pytest.mark.parametrize(
    ("server", "stat"), [("impostor", "fail_verify_san"), ("stranger", "fail_verify_error")]
)
def test_clients_refuse_bad_server_certificates_alike(
    interop: Interop, side: str, server: str, stat: str
) -> None:
    port = interop.clients[side][0]
    app = interop.impostor if server == "impostor" else interop.stranger
    before = interop.stats(side)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/refused", headers={"Host": f"{server}.demo.local"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 503, body
    assert response.getheader("server") == "envoy"
    cluster = f"cluster.cds_egress_demo_{server}_http_{app.port}.ssl.{stat}"
    assert grew(before, interop.stats(side), cluster) >= 1, {
        k: v for k, v in interop.stats(side).items() if server in k and ".ssl." in k
    }
    assert app.requests == 0


def _ssl_prometheus(text: str) -> set[tuple[str, frozenset[str]]]:
    """(metric name, label names) of the ssl metrics in a /stats/prometheus page."""
    found = set()
    for line in text.splitlines():
        match = re.match(r"(envoy_(?:listener|cluster)_ssl_\w+)(?:\{([^}]*)\})? ", line)
        if match:
            labels = frozenset(part.split("=", 1)[0] for part in (match.group(2) or "").split(",") if part)
            found.add((match.group(1), labels))
    return found


def test_ssl_stats_have_envoys_names_and_tags(interop: Interop) -> None:
    """The ssl metrics meshproxy exports are ones Envoy exports, with the same labels."""
    envoy = _ssl_prometheus(interop.envoy_server.admin("/stats/prometheus").body.decode())
    envoy |= _ssl_prometheus(interop.clients["ev"][1].admin("/stats/prometheus").body.decode())  # type: ignore[attr-defined]
    ours = _ssl_prometheus(interop.mp_servers["web-mp"].admin("/stats/prometheus").body.decode())
    ours |= _ssl_prometheus(interop.clients["mp"][1].admin("/stats/prometheus").body.decode())  # type: ignore[attr-defined]
    missing = {name for name, _ in ours} - {name for name, _ in envoy}
    assert not missing, sorted(missing)
    envoy_labels = dict(envoy)
    for name, labels in ours:
        assert labels == envoy_labels[name], (name, labels, envoy_labels[name])
