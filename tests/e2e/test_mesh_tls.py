"""Mesh TLS between meshproxy sidecars on loopback (issue 13): client policies, listener TLS with client
validation (mTLS), STRICT / PERMISSIVE, enforce, ports, SAN defaults, validation failures as 503 UF.

Sidecars sit on their own loopback addresses (tests/e2e/tls_mesh.py): `front` (the client, 127.0.0.1)
calls `web` (STRICT mTLS, its sidecar on 127.0.0.2) and `mixed` (PERMISSIVE, 127.0.0.3); `legacy` is a
plaintext app with no sidecar; `impostor` (wrong name) and `stranger` (another CA) are HTTPS servers
without sidecars whose certificates the client must refuse; `recorder` answers with the client
certificate it was shown.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import Http1Client, MeshProxy, free_ports, grew, recv_until_closed, wait_for
from .resources import mesh, node_arn, service_via_node
from .tls_mesh import Certificates, TlsApp, client_policy, listener_tls, server_sidecar, tls_node

WEB, MIXED, LEGACY, PLAIN_ENFORCED = (
    "web.demo.local",
    "mixed.demo.local",
    "legacy.demo.local",
    "plain.demo.local",
)
IMPOSTOR, STRANGER, RECORDER = "impostor.demo.local", "stranger.demo.local", "recorder.demo.local"
WEB_ADDRESS, MIXED_ADDRESS = "127.0.0.2", "127.0.0.3"


@dataclass
class TlsMesh:
    certs: Certificates
    front: MeshProxy
    web: MeshProxy
    mixed: MeshProxy
    web_app: ColourApp
    mixed_app: ColourApp
    legacy_app: ColourApp
    impostor: TlsApp
    stranger: TlsApp
    recorder: TlsApp

    def cluster_ssl(self, node: str, port: int, stat: str) -> str:
        return f"cluster.cds_egress_demo_{node}_http_{port}.ssl.{stat}"

    def web_listener(self, stat: str) -> str:
        return f"listener.{WEB_ADDRESS}_{self.web_app.port}.ssl.{stat}"


@pytest.fixture(scope="module")
def tls_mesh(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    base = tmp_path_factory.mktemp("mesh-tls")
    certs = Certificates(base / "certs")
    certs.issue("web", "web.demo.local", WEB_ADDRESS)
    certs.issue("mixed", "mixed.demo.local", MIXED_ADDRESS)
    certs.issue("front", "front.demo.local")
    web_app, mixed_app, legacy_app = (app_loop.colour_app(n) for n in ("web", "mixed", "legacy"))
    impostor = TlsApp("impostor", "127.0.0.4", certs.ca.issue_cert("someone-else.demo.local"))
    stranger = TlsApp("stranger", "127.0.0.5", certs.stranger.issue_cert("127.0.0.5"))
    recorder = TlsApp("recorder", "127.0.0.6", certs.ca.issue_cert("127.0.0.6"), trust=certs.ca)
    for app in (impostor, stranger, recorder):
        app_loop.call(app.start())
    trust, front_cert = certs.file_trust(), certs.file_certificate("front")
    enforced = client_policy(trust, certificate=front_cert)
    front_port, dummy = free_ports(2)
    resources = [
        mesh(),
        tls_node(
            "front",
            "127.0.0.1",
            front_port,
            backends=(WEB, MIXED, LEGACY, PLAIN_ENFORCED, IMPOSTOR, STRANGER, RECORDER),
            # unenforced by default: TLS where the backend's listener has it, plaintext to `legacy`
            backend_defaults=client_policy(trust, certificate=front_cert, enforce=False),
            backend_policies={
                PLAIN_ENFORCED: enforced,
                IMPOSTOR: enforced,
                STRANGER: enforced,
                RECORDER: enforced,
            },
        ),
        tls_node(
            "web",
            WEB_ADDRESS,
            web_app.port,
            tls=listener_tls("STRICT", certs.file_certificate("web"), trust, sans=("front.demo.local",)),
        ),
        tls_node(
            "mixed",
            MIXED_ADDRESS,
            mixed_app.port,
            tls=listener_tls("PERMISSIVE", certs.file_certificate("mixed"), trust),
        ),
        tls_node("legacy", "127.0.0.1", legacy_app.port),
        tls_node("plain", "127.0.0.1", legacy_app.port),
        tls_node("impostor", "127.0.0.4", impostor.port),
        tls_node("stranger", "127.0.0.5", stranger.port),
        tls_node("recorder", "127.0.0.6", recorder.port),
        *(service_via_node(f"{n}.demo.local", n) for n in ("web", "mixed", "legacy", "impostor", "stranger")),
        service_via_node(PLAIN_ENFORCED, "plain"),
        service_via_node(RECORDER, "recorder"),
    ]
    del dummy
    web = server_sidecar(resources, "web", base / "web", WEB_ADDRESS, web_app.port)
    mixed = server_sidecar(resources, "mixed", base / "mixed", MIXED_ADDRESS, mixed_app.port)
    front = MeshProxy(resources, node_arn("front"), base / "front")
    try:
        for proxy in (web, mixed, front):
            proxy.start()
        yield TlsMesh(certs, front, web, mixed, web_app, mixed_app, legacy_app, impostor, stranger, recorder)
    finally:
        for proxy in (front, web, mixed):
            proxy.stop()
        for app in (impostor, stranger, recorder):
            app_loop.call(app.stop())


def _client_context(certs: Certificates, certificate: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.trust))
    context.check_hostname = False
    if certificate is not None:
        context.load_cert_chain(str(certs.chain(certificate)), str(certs.key(certificate)))
    return context


def _https(address: str, port: int, context: ssl.SSLContext, host: str = "x") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(address, port, context=context, timeout=10)
    try:
        conn.request("GET", "/direct", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_strict_mtls_between_two_sidecars(tls_mesh: TlsMesh) -> None:
    before_front, before_web = tls_mesh.front.stats(), tls_mesh.web.stats()
    reply = tls_mesh.front.egress(WEB, "/hello")
    assert reply.status == 200 and reply.app == "web", reply
    front, web = tls_mesh.front.stats(), tls_mesh.web.stats()
    port = tls_mesh.web_app.port
    assert grew(before_front, front, tls_mesh.cluster_ssl("web", port, "handshake")) == 1
    assert grew(before_web, web, tls_mesh.web_listener("handshake")) == 1
    assert grew(before_web, web, tls_mesh.web_listener("no_certificate")) == 0  # front showed its certificate
    assert front[f"cluster.cds_egress_demo_web_http_{port}.ssl.versions.TLSv1.2"] >= 1  # Envoy's client max
    assert not any(name.startswith("cluster.cds_ingress") and ".ssl." in name for name in web)


def test_pooled_tls_connections_are_reused(tls_mesh: TlsMesh) -> None:
    port = tls_mesh.web_app.port
    before = tls_mesh.front.stats()
    with Http1Client(tls_mesh.front.egress_port) as client:
        for index in range(20):
            reply = client.get(f"/n/{index}", host=WEB)
            assert reply.status == 200, reply
    after = tls_mesh.front.stats()
    assert grew(before, after, f"cluster.cds_egress_demo_web_http_{port}.upstream_rq_total") == 20
    assert grew(before, after, f"cluster.cds_egress_demo_web_http_{port}.upstream_cx_total") <= 1
    assert grew(before, after, tls_mesh.cluster_ssl("web", port, "handshake")) <= 1


def test_plaintext_and_certificate_failures_are_refused_by_a_strict_listener(tls_mesh: TlsMesh) -> None:
    certs, port = tls_mesh.certs, tls_mesh.web_app.port
    stats = tls_mesh.web.stats
    before = stats()
    with socket.create_connection((WEB_ADDRESS, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        data, closed = recv_until_closed(sock)
    assert closed and not data.startswith(b"HTTP/"), data
    assert wait_for(lambda: grew(before, stats(), tls_mesh.web_listener("connection_error")) == 1, 5)
    certs.issue("mallory", "mallory.demo.local")
    certs.issue("eve", "front.demo.local", ca=certs.stranger)
    cases = [(None, "fail_verify_no_cert"), ("mallory", "fail_verify_san"), ("eve", "fail_verify_error")]
    for certificate, stat in cases:
        before = stats()
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _https(WEB_ADDRESS, port, _client_context(certs, certificate))
        name = tls_mesh.web_listener(stat)
        assert wait_for(lambda name=name, before=before: grew(before, stats(), name) == 1, 5), stat
        assert grew(before, stats(), tls_mesh.web_listener("handshake")) == 0
    assert tls_mesh.web_app.requests == len([r for r in tls_mesh.web_app.seen if r.path != "/direct"])


def test_a_server_the_client_cannot_validate_is_503_uf_and_counted(tls_mesh: TlsMesh) -> None:
    for server, stat in (
        (tls_mesh.impostor, "fail_verify_san"),  # a trusted CA, but not the name the client expects
        (tls_mesh.stranger, "fail_verify_error"),  # the expected name, from a CA the client does not trust
    ):
        before = tls_mesh.front.stats()
        reply = tls_mesh.front.egress(f"{server.name}.demo.local", "/secret")
        assert reply.status == 503, reply
        assert b"upstream connect error" in reply.body, reply
        after = tls_mesh.front.stats()
        cluster = f"cluster.cds_egress_demo_{server.name}_http_{server.port}"
        assert grew(before, after, f"{cluster}.ssl.{stat}") >= 1, {
            k: v for k, v in after.items() if cluster in k
        }
        assert grew(before, after, f"{cluster}.ssl.handshake") == 0
        assert grew(before, after, f"{cluster}.upstream_cx_connect_fail") >= 1
        assert server.requests == 0  # nothing was sent to a server that failed validation


def test_enforced_tls_never_falls_back_to_plaintext(tls_mesh: TlsMesh) -> None:
    seen = tls_mesh.legacy_app.requests
    reply = tls_mesh.front.egress(PLAIN_ENFORCED, "/must-be-tls")
    assert reply.status == 503, reply
    assert tls_mesh.legacy_app.requests == seen  # the plaintext app never saw the request
    stats = tls_mesh.front.stats()
    assert stats[f"cluster.cds_egress_demo_plain_http_{tls_mesh.legacy_app.port}.ssl.connection_error"] >= 1


def test_unenforced_policy_uses_tls_when_the_backend_has_it_and_plaintext_when_not(tls_mesh: TlsMesh) -> None:
    reply = tls_mesh.front.egress(LEGACY, "/plain")
    assert reply.status == 200 and reply.app == "legacy", reply
    assert not any(".ssl." in n for n in tls_mesh.front.stats() if "_legacy_" in n)
    # `web` is STRICT: the same unenforced defaults originate TLS to it (test_strict_mtls_...)


def test_permissive_accepts_tls_and_plaintext(tls_mesh: TlsMesh) -> None:
    certs, port = tls_mesh.certs, tls_mesh.mixed_app.port
    reply = tls_mesh.front.egress(MIXED, "/via-mesh")  # mTLS from the client sidecar
    assert reply.status == 200 and reply.app == "mixed", reply
    plain = http.client.HTTPConnection(MIXED_ADDRESS, port, timeout=10)
    plain.request("GET", "/plaintext")
    response = plain.getresponse()
    assert response.status == 200 and b"mixed" in response.read()
    plain.close()
    before = tls_mesh.mixed.stats()
    status, body = _https(MIXED_ADDRESS, port, _client_context(certs))  # TLS without a client certificate
    assert status == 200 and b"mixed" in body
    after = tls_mesh.mixed.stats()
    listener = f"listener.{MIXED_ADDRESS}_{port}.ssl"
    assert grew(before, after, f"{listener}.handshake") == 1
    assert grew(before, after, f"{listener}.no_certificate") == 1  # PERMISSIVE lets it in, and counts it


def _forwarded_proto(address: str, port: int, context: ssl.SSLContext | None, **headers: str) -> str:
    """What the app behind `address`:`port` saw as x-forwarded-proto, over TLS (`context`) or in plaintext."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(address, port, context=context, timeout=10)
        if context is not None
        else http.client.HTTPConnection(address, port, timeout=10)
    )
    try:
        conn.request("GET", "/proto", headers={"Host": "x", **headers})
        response = conn.getresponse()
        assert response.status == 200
        return str(json.loads(response.read())["headers"]["x-forwarded-proto"])
    finally:
        conn.close()


def test_x_forwarded_proto_says_https_behind_a_tls_listener(tls_mesh: TlsMesh) -> None:
    """Envoy's connection manager without use_remote_address: the client's own x-forwarded-proto is kept,
    else the downstream connection's scheme is set (App Mesh's sidecars always said `http` before)."""
    certs = tls_mesh.certs
    assert _forwarded_proto(MIXED_ADDRESS, tls_mesh.mixed_app.port, _client_context(certs)) == "https"
    assert _forwarded_proto(WEB_ADDRESS, tls_mesh.web_app.port, _client_context(certs, "front")) == "https"
    assert _forwarded_proto(MIXED_ADDRESS, tls_mesh.mixed_app.port, None) == "http"  # PERMISSIVE, plaintext
    kept = _forwarded_proto(
        MIXED_ADDRESS, tls_mesh.mixed_app.port, _client_context(certs), **{"X-Forwarded-Proto": "http"}
    )
    assert kept == "http"
    # Through the mesh, the client sidecar's egress (plaintext from the app) said `http`, and the server
    # sidecar keeps what its client sent, as App Mesh's Envoy did.
    reply = tls_mesh.front.egress(WEB, "/via-mesh")
    assert reply.status == 200 and reply.json()["headers"]["x-forwarded-proto"] == "http", reply


def test_h2_over_tls_is_offered_by_alpn(tls_mesh: TlsMesh) -> None:
    context = _client_context(tls_mesh.certs, "front")
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection((WEB_ADDRESS, tls_mesh.web_app.port), timeout=10)
    with context.wrap_socket(raw) as tls:
        assert tls.selected_alpn_protocol() == "h2"
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frame = tls.recv(9)
        assert frame[3] == 0x04  # the server's SETTINGS: an HTTP/2 connection manager answers


def test_the_client_certificate_is_what_the_policy_names(tls_mesh: TlsMesh) -> None:
    reply = tls_mesh.front.egress(RECORDER, "/who")
    assert reply.status == 200, reply
    document = reply.json()
    assert document["client_sans"] == ["front.demo.local"]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_a_tcp_listener_terminates_tls(
    mode: str, app_loop: AppLoop, tls_mesh: TlsMesh, tmp_path: Path
) -> None:
    """A tcp listener with TLS: the decrypted bytes are bridged to the local app; PERMISSIVE takes a
    plaintext client too, STRICT refuses it."""

    async def start_echo() -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", 0)

    echo = app_loop.call(start_echo())
    port = echo.sockets[0].getsockname()[1]
    certs = tls_mesh.certs
    certs.issue("db", "db.demo.local", "127.0.0.9")
    resources = [
        mesh(),
        tls_node(
            "db", "127.0.0.9", port, protocol="tcp", tls=listener_tls(mode, certs.file_certificate("db"))
        ),
    ]
    proxy = server_sidecar(resources, "db", tmp_path / "db", "127.0.0.9", port)
    try:
        proxy.start()
        context = _client_context(certs)
        with (
            socket.create_connection(("127.0.0.9", port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"over tls\n")
            assert tls.recv(100) == b"over tls\n"
        with socket.create_connection(("127.0.0.9", port), timeout=10) as plain:
            plain.sendall(b"in plaintext\n")
            data, _ = recv_until_closed(plain, timeout=3)
        assert data == (b"in plaintext\n" if mode == "PERMISSIVE" else b""), data
        assert proxy.stats()[f"listener.127.0.0.9_{port}.ssl.handshake"] == 1
    finally:
        proxy.stop()
        echo.close()
