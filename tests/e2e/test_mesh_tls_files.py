"""Certificate files while the proxy runs (issue 13): rotation under load, client certificates and trust
bundles re-read on change, and bad input (an expired certificate, a key that does not match, a missing
file) answered with a log line naming the file while the last good certificate keeps serving; a
configuration update whose certificates cannot load is rejected whole, and a first one stops start-up.

`front` (127.0.0.1) calls `web` (STRICT mTLS behind its sidecar on 127.0.0.2) and `recorder`, an HTTPS
server without a sidecar that closes every connection and answers with the client certificate it saw.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, free_ports, grew, run_meshproxy, wait_for
from .resources import mesh, node_arn, service_via_node
from .tls_mesh import (
    Certificates,
    LoadLoop,
    TlsApp,
    client_policy,
    listener_tls,
    serial_of,
    server_sidecar,
    tls_node,
)

WEB, RECORDER, WEB_ADDRESS = "web.demo.local", "recorder.demo.local", "127.0.0.2"
REFRESH_S = 0.2
CDS_REJECTED_STAT = "cluster_manager.cds.update_rejected"


@dataclass
class FileMesh:
    certs: Certificates
    front: MeshProxy
    web: MeshProxy
    web_app: ColourApp
    recorder: TlsApp
    resources: list[dict[str, object]]

    def web_serial(self) -> str:
        """The serial `web`'s listener presents to a new connection."""
        context = ssl.create_default_context(cafile=str(self.certs.trust))
        context.check_hostname = False
        context.load_cert_chain(str(self.certs.chain("front")), str(self.certs.key("front")))
        raw = socket.create_connection((WEB_ADDRESS, self.web_app.port), timeout=10)
        with context.wrap_socket(raw) as tls:
            return str(tls.getpeercert()["serialNumber"])

    def recorded_client_serial(self) -> str | None:
        reply = self.front.egress(RECORDER, "/who")
        assert reply.status == 200, reply
        serial = reply.json()["client_serial"]
        return None if serial is None else str(serial)


@pytest.fixture(scope="module")
def file_mesh(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileMesh]:
    base = tmp_path_factory.mktemp("tls-files")
    certs = Certificates(base / "certs")
    certs.issue("web", "web.demo.local", WEB_ADDRESS)
    certs.issue("front", "front.demo.local")
    web_app = app_loop.colour_app("web")
    recorder = TlsApp("recorder", "127.0.0.6", certs.ca.issue_cert("127.0.0.6"), trust=certs.ca)
    recorder.close = True  # every request on a new TLS connection: the client certificate is read afresh
    app_loop.call(recorder.start())
    trust, front_cert = certs.file_trust(), certs.file_certificate("front")
    resources = [
        mesh(),
        tls_node(
            "front",
            "127.0.0.1",
            free_ports(1)[0],
            backends=(WEB, RECORDER),
            backend_defaults=client_policy(trust, certificate=front_cert),
        ),
        tls_node(
            "web",
            WEB_ADDRESS,
            web_app.port,
            tls=listener_tls("STRICT", certs.file_certificate("web"), trust, sans=("front.demo.local",)),
        ),
        tls_node("recorder", "127.0.0.6", recorder.port),
        service_via_node(WEB, "web"),
        service_via_node(RECORDER, "recorder"),
    ]
    refresh = {"MESHPROXY_CONFIG_REFRESH_S": str(REFRESH_S)}
    web = server_sidecar(resources, "web", base / "web", WEB_ADDRESS, web_app.port, refresh)
    front = MeshProxy(
        resources, node_arn("front"), base / "front", env={"MESHPROXY_CONFIG_REFRESH_S": str(REFRESH_S)}
    )
    files = FileMesh(certs, front, web, web_app, recorder, resources)
    try:
        web.start()
        front.start()
        yield files
    finally:
        front.stop()
        web.stop()
        app_loop.call(files.recorder.stop())  # the one serving now (a test replaces it)


def test_server_certificate_rotated_under_load_without_a_failed_request(file_mesh: FileMesh) -> None:
    cluster = f"cluster.cds_egress_demo_web_http_{file_mesh.web_app.port}"
    before = file_mesh.front.stats()
    with LoadLoop(file_mesh.front, WEB) as load:
        assert load.more()
        rotated = file_mesh.certs.issue("web", "web.demo.local", WEB_ADDRESS)
        assert wait_for(lambda: file_mesh.web_serial() == serial_of(rotated), 10)
        assert load.more()
    assert load.failures == [] and load.count > 40
    assert "TLS: reloaded" in file_mesh.web.stderr_text()
    assert grew(before, file_mesh.front.stats(), f"{cluster}.upstream_cx_destroy") == 0  # none dropped


def test_client_certificate_files_are_reread(file_mesh: FileMesh) -> None:
    first = file_mesh.recorded_client_serial()
    rotated = file_mesh.certs.issue("front", "front.demo.local")
    assert wait_for(lambda: file_mesh.recorded_client_serial() == serial_of(rotated), 10)
    assert first != serial_of(rotated)


def test_trust_bundles_are_reread(file_mesh: FileMesh, app_loop: AppLoop) -> None:
    """A CA rotation: the server moves to a new CA's certificate (refused: the client's bundle does not
    have it), then the bundle file gains the new CA and new connections validate again."""
    certs, new_ca, old = file_mesh.certs, trustme.CA(), file_mesh.recorder
    app_loop.call(old.stop())
    moved = TlsApp("recorder", old.address, new_ca.issue_cert(old.address), trust=certs.ca, port=old.port)
    moved.close = True
    app_loop.call(moved.start())
    file_mesh.recorder = moved
    try:
        assert file_mesh.front.egress(RECORDER, "/new-ca").status == 503  # unknown CA: refused
        bundle = certs.ca.cert_pem.bytes() + new_ca.cert_pem.bytes()
        partial = certs.trust.with_suffix(".tmp")
        partial.write_bytes(bundle)
        partial.replace(certs.trust)
        assert wait_for(lambda: file_mesh.front.egress(RECORDER, "/new-ca").status == 200, 10)
        assert moved.requests >= 1
    finally:
        certs.ca.cert_pem.write_to_path(str(certs.trust))


def test_bad_files_keep_the_last_good_certificate_and_name_the_file(file_mesh: FileMesh) -> None:
    certs, web = file_mesh.certs, file_mesh.web
    good = file_mesh.web_serial()
    chain, key = certs.chain("web"), certs.key("web")
    saved_chain, saved_key = chain.read_bytes(), key.read_bytes()
    past = datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)
    try:
        certs.issue("web", "web.demo.local", WEB_ADDRESS, not_after=past)  # expired
        assert wait_for(lambda: "expired on 2021-01-01" in web.stderr_text(), 10), web.output_tail()
        assert f"file {chain}" in web.stderr_text()
        assert file_mesh.web_serial() == good and file_mesh.front.egress(WEB, "/expired").status == 200

        other = certs.ca.issue_cert("web.demo.local", WEB_ADDRESS)
        chain.write_bytes(saved_chain)
        key.write_bytes(other.private_key_pem.bytes())  # a key that belongs to another certificate
        assert wait_for(lambda: "does not match" in web.stderr_text(), 10), web.output_tail()
        assert file_mesh.web_serial() == good and file_mesh.front.egress(WEB, "/mismatch").status == 200

        chain.unlink()  # gone
        assert wait_for(lambda: "No such file or directory" in web.stderr_text(), 10), web.output_tail()
        assert file_mesh.web_serial() == good and file_mesh.front.egress(WEB, "/missing").status == 200
    finally:
        chain.write_bytes(saved_chain)
        key.write_bytes(saved_key)


def test_an_update_whose_certificates_cannot_load_is_rejected_whole(file_mesh: FileMesh) -> None:
    web = file_mesh.web
    before = web.stats()
    broken = json.loads(json.dumps(file_mesh.resources))
    listener = broken[2]["virtualNode"]["spec"]["listeners"][0]
    listener["tls"]["certificate"]["file"]["certificateChain"] = "/nonexistent/web.pem"
    listener["timeout"] = {"http": {"perRequest": {"value": 1, "unit": "s"}}}  # would change routing too
    web.config_path.write_text(json.dumps(broken))
    try:
        assert wait_for(lambda: web.stats()[CDS_REJECTED_STAT] > before[CDS_REJECTED_STAT], 10)
        assert "/nonexistent/web.pem" in web.stderr_text()
        assert file_mesh.front.egress(WEB, "/after-rejection").status == 200
        dump = web.admin("/config_dump?format=meshproxy").body.decode()
        assert "/nonexistent/web.pem" not in dump  # nothing of the update was applied
    finally:
        web.write_config()


def test_a_first_configuration_whose_certificates_cannot_load_stops_start_up(tmp_path: Path) -> None:
    resources = [
        mesh(),
        tls_node(
            "web",
            "127.0.0.1",
            8080,
            tls=listener_tls(
                "STRICT",
                {
                    "file": {
                        "certificateChain": str(tmp_path / "gone.pem"),
                        "privateKey": str(tmp_path / "gone.key"),
                    }
                },
            ),
        ),
    ]
    proxy = MeshProxy(resources, node_arn("web"), tmp_path / "p")
    proxy.write_config()
    done = run_meshproxy(["run", "--config", str(proxy.config_path)], env=proxy.environment(), cwd=tmp_path)
    assert done.returncode == 1
    assert f"TLS: file {tmp_path / 'gone.pem'}: No such file or directory" in done.stderr, done.stderr
