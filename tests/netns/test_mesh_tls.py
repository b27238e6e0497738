"""Two meshproxy sidecars with STRICT mTLS between them, behind real interception (issue 13), and what the
wire between them carries.

    front pod 10.250.1.1: the app (UID 1000) calls blue.m.local:8080 and plain.m.local:8081;
                          meshproxy (UID 1337) originates mTLS to blue (its client policy)
    blue pod  10.250.1.2: meshproxy (UID 1337) on 15000 terminates STRICT mTLS for port 8080 (http) and
                          7000 (tcp) and forwards to the apps on 127.0.0.1; port 8081 is a plaintext server
                          that the unenforced client policy reaches without TLS (no TLS on its listener)

A wiretap on front's veth records every TCP payload: what crosses to blue's 8080 is TLS records only (no
request line, no header, no body the apps wrote), while the plaintext control on 8081 shows its request,
so the tap would have seen plaintext on 8080 too.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest
import trustme

from .conftest import (
    APP_UID,
    MESHPROXY,
    NOWHERE_V4,
    PEER_V4,
    PROXY_UID,
    READY_TIMEOUT_S,
    Netns,
    PodPair,
    meshproxy_iptables,
    pod_pair_context,
    stop_process,
    wait_for_line,
)
from .test_proxy_interception import ADMIN_PORT, EGRESS_PORT, INGRESS_PORT, curl

MESH = "m"
BLUE_PORT, PLAIN_PORT, DB_PORT = 8080, 8081, 7000
WIRETAP = Path(__file__).resolve().parent / "wiretap.py"


def rules(app_ports: str) -> dict[str, str]:
    return {
        "APPMESH_IGNORE_UID": str(PROXY_UID),
        "APPMESH_ENVOY_INGRESS_PORT": str(INGRESS_PORT),
        "APPMESH_ENVOY_EGRESS_PORT": str(EGRESS_PORT),
        "APPMESH_APP_PORTS": app_ports,
        "APPMESH_EGRESS_IGNORED_PORTS": "22",
    }


def node(name: str, port: int, hostname: str, protocol: str = "http", **spec: Any) -> dict[str, Any]:
    listener: dict[str, Any] = {"portMapping": {"port": port, "protocol": protocol}}
    if "tls" in spec:
        listener["tls"] = spec.pop("tls")
    body = {"listeners": [listener], "serviceDiscovery": {"dns": {"hostname": hostname}}, **spec}
    return {"virtualNode": {"meshName": MESH, "virtualNodeName": name, "spec": body}}


def service(name: str, provider: str) -> dict[str, Any]:
    spec = {"provider": {"virtualNode": {"virtualNodeName": provider}}}
    return {"virtualService": {"meshName": MESH, "virtualServiceName": name, "spec": spec}}


def mesh_resources(certs: Path) -> list[dict[str, Any]]:
    trust = {"file": {"certificateChain": str(certs / "ca.pem")}}

    def certificate(name: str) -> dict[str, Any]:
        return {
            "file": {"certificateChain": str(certs / f"{name}.pem"), "privateKey": str(certs / f"{name}.key")}
        }

    strict: dict[str, Any] = {
        "mode": "STRICT",
        "certificate": certificate("blue"),
        "validation": {"trust": trust, "subjectAlternativeNames": {"match": {"exact": ["front.m.local"]}}},
    }
    blue = node("blue", BLUE_PORT, PEER_V4, tls=strict)
    # blue's second listener: tcp on 7000, STRICT mTLS too (blue's sidecar picks it by the original port)
    blue["virtualNode"]["spec"]["listeners"].append(
        {"portMapping": {"port": DB_PORT, "protocol": "tcp"}, "tls": strict}
    )
    return [
        {"mesh": {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}},
        node(
            "front",
            9000,
            "front.m.local",
            backends=[{"virtualService": {"virtualServiceName": f"{n}.m.local"}} for n in ("blue", "plain")],
            backendDefaults={
                "clientPolicy": {
                    "tls": {
                        "enforce": False,
                        "validation": {"trust": trust},
                        "certificate": certificate("front"),
                    }
                }
            },
        ),
        blue,
        node("plain", PLAIN_PORT, PEER_V4),
        service("blue.m.local", "blue"),
        service("plain.m.local", "plain"),
    ]


@dataclass
class TlsPods:
    pair: PodPair
    workdir: Path
    logs: dict[str, Path]

    def stats(self, ns: Netns) -> dict[str, int]:
        reply = curl(ns, f"http://127.0.0.1:{ADMIN_PORT}/stats", uid=None)
        values: dict[str, int] = {}
        for line in reply.body.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                values[name.strip()] = int(value)
        return values


def _sidecar(ns: Netns, node_name: str, config: Path, log: TextIO) -> Any:
    env = {
        "APPMESH_RESOURCE_ARN": f"mesh/{MESH}/virtualNode/{node_name}",
        "ENVOY_ADMIN_ACCESS_PORT": str(ADMIN_PORT),
        "APPMESH_ENVOY_INGRESS_PORT": str(INGRESS_PORT),
        "APPMESH_ENVOY_EGRESS_PORT": str(EGRESS_PORT),
        "LISTENER_DRAIN_WAIT_TIME_S": "5",
    }
    proxy = ns.spawn([*MESHPROXY, "run", "--config", str(config)], uid=PROXY_UID, env=env, output=log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while curl(ns, f"http://127.0.0.1:{ADMIN_PORT}/ready", uid=None).status != 200:
        assert proxy.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
        time.sleep(0.1)
    return proxy


@pytest.fixture(scope="module")
def tls_pods() -> Iterator[TlsPods]:
    # Files UID 1337 must read: pytest's tmp_path lives under a root-only directory.
    workdir = Path(tempfile.mkdtemp(prefix="meshproxy-netns-tls-"))
    workdir.chmod(0o755)
    logs: list[TextIO] = []
    try:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        for name, identities in (("blue", ("blue.m.local", PEER_V4)), ("front", ("front.m.local",))):
            leaf = ca.issue_cert(*identities)
            leaf.cert_chain_pems[0].write_to_path(str(workdir / f"{name}.pem"))
            leaf.private_key_pem.write_to_path(str(workdir / f"{name}.key"))
        config = workdir / "mesh.json"
        config.write_text(json.dumps(mesh_resources(workdir)))
        for path in workdir.iterdir():
            path.chmod(0o644)
        with pod_pair_context(ipv6=False) as pair:
            front, blue = pair.pod, pair.peer
            pair.start_probe(
                blue, "http", "--name", "blue", "--host", "127.0.0.1", str(BLUE_PORT), uid=APP_UID
            )
            pair.start_probe(blue, "http", "--name", "plain", "--host", PEER_V4, str(PLAIN_PORT), uid=APP_UID)
            pair.start_probe(blue, "echo", "--host", "127.0.0.1", str(DB_PORT), uid=APP_UID)
            for ns, ports in ((front, "9000"), (blue, f"{BLUE_PORT},{DB_PORT}")):
                applied = meshproxy_iptables(ns, "apply", rules(ports))
                assert applied.returncode == 0, applied.stderr
            paths = {}
            for ns, name in ((blue, "blue"), (front, "front")):
                paths[name] = workdir / f"{name}.log"
                logs.append(paths[name].open("w"))
                _sidecar(ns, name, config, logs[-1])
            yield TlsPods(pair, workdir, paths)
            for ns in (front, blue):
                curl(ns, f"http://127.0.0.1:{ADMIN_PORT}/quitquitquit", uid=None, extra=("-X", "POST"))
    finally:
        for log in logs:
            log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def wiretap(pair: PodPair, workdir: Path, port: int) -> Iterator[dict[str, bytes]]:
    """Record the TCP payloads to and from `port` on the front pod's veth while the block runs."""
    out = workdir / f"tap-{port}.json"
    tap = pair.pod.spawn(pair.pod.python(str(WIRETAP), pair.veth_pod, str(port), str(out)))
    wait_for_line(tap, "READY")
    captured: dict[str, bytes] = {}
    try:
        yield captured
    finally:
        time.sleep(0.3)  # the last segments reach the tap
        stop_process(tap)
        captured.update({k: bytes.fromhex(v) for k, v in json.loads(out.read_text()).items()})


def test_the_bytes_between_two_strict_mtls_sidecars_are_tls(tls_pods: TlsPods) -> None:
    pair = tls_pods.pair
    before = tls_pods.stats(pair.peer)
    with wiretap(pair, tls_pods.workdir, BLUE_PORT) as tls_bytes:
        reply = curl(
            pair.pod,
            "http://blue.m.local:8080/secret-path?token=s3cr3t",
            extra=("-H", "x-marker: visible-if-plaintext", "--resolve", f"blue.m.local:8080:{NOWHERE_V4}"),
        )
    assert reply.status == 200, (reply, tls_pods.logs["front"].read_text()[-3000:])
    assert reply.json()["server"] == "blue" and reply.json()["path"] == "/secret-path?token=s3cr3t"
    sent, received = tls_bytes["to_port"], tls_bytes["from_port"]
    assert sent[:1] == b"\x16" and received[:1] == b"\x16", (sent[:16], received[:16])  # TLS handshakes
    # (the names in the certificates do cross in clear: TLS 1.2 sends certificates unencrypted)
    for needle in (b"secret-path", b"s3cr3t", b"visible-if-plaintext", b"HTTP/1.1", b"x-request-id"):
        assert needle not in sent and needle not in received, needle
    after = tls_pods.stats(pair.peer)
    handshakes = f"listener.0.0.0.0_{INGRESS_PORT}.ssl.handshake"
    assert after[handshakes] > before.get(handshakes, 0)
    assert after[f"listener.0.0.0.0_{INGRESS_PORT}.ssl.no_certificate"] == 0  # front showed its certificate


def test_the_tap_sees_plaintext_where_there_is_no_tls(tls_pods: TlsPods) -> None:
    """The control: the unenforced policy sends plaintext to a backend without TLS, and the tap sees it."""
    pair = tls_pods.pair
    with wiretap(pair, tls_pods.workdir, PLAIN_PORT) as plain_bytes:
        reply = curl(
            pair.pod,
            "http://plain.m.local:8081/plain-path",
            extra=("--resolve", f"plain.m.local:8081:{NOWHERE_V4}"),
        )
    assert reply.status == 200 and reply.json()["server"] == "plain", reply
    assert b"GET /plain-path HTTP/1.1" in plain_bytes["to_port"]


def test_tcp_between_the_sidecars_is_mtls_too(tls_pods: TlsPods) -> None:
    """A tcp listener: the app's connection to blue:7000 follows the egress tcp route, TLS is originated by
    front's TCP proxy and terminated by blue's tcp listener, which bridges to its app in plaintext."""
    pair = tls_pods.pair
    handshakes = f"listener.0.0.0.0_{INGRESS_PORT}.ssl.handshake"
    before = tls_pods.stats(pair.peer)
    with wiretap(pair, tls_pods.workdir, DB_PORT) as tcp_bytes:
        result = pair.connect(pair.pod, PEER_V4, DB_PORT, uid=APP_UID, send="tcp secret ping")
    assert result.get("raw") == "tcp secret ping", (result, tls_pods.logs["front"].read_text()[-2000:])
    assert tcp_bytes["to_port"][:1] == b"\x16"
    assert b"tcp secret ping" not in tcp_bytes["to_port"] and b"tcp secret ping" not in tcp_bytes["from_port"]
    assert tls_pods.stats(pair.peer)[handshakes] > before[handshakes]
