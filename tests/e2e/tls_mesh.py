"""Shared pieces of the mesh-TLS e2e tests: certificates as files, App Mesh TLS resource members, and sidecars
on distinct loopback addresses so that two of them can be chained without iptables.

Two sidecars on one machine: the server node's app listens on 127.0.0.1:P, its sidecar on 127.0.0.X:P (its
ingress port is the app's port, on another loopback address), and the node's service discovery names
127.0.0.X, so a client sidecar's cluster for the node reaches the server sidecar, which forwards to the app.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from .harness import Http1Client, MeshProxy, wait_for
from .resources import MESH, Resource, node_arn


@dataclass
class Certificates:
    """A mesh CA and a stranger's CA; certificates written as `<name>.pem` / `<name>.key` in `directory`."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    stranger: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.trust))
        self.stranger.cert_pem.write_to_path(str(self.directory / "stranger-ca.pem"))

    @property
    def trust(self) -> Path:
        return self.directory / "ca.pem"

    def issue(
        self,
        name: str,
        *identities: str,
        ca: trustme.CA | None = None,
        not_after: datetime.datetime | None = None,
    ) -> trustme.LeafCert:
        """Issue a leaf for `identities` (DNS names, IPs, spiffe:// URIs) and write it as `name`.pem/.key."""
        issuer = ca or self.ca
        kwargs: dict[str, Any] = {}
        if not_after is not None:
            kwargs = {"not_before": not_after - datetime.timedelta(days=2), "not_after": not_after}
        leaf = issuer.issue_cert(*identities, **kwargs)
        write_leaf(leaf, self.chain(name), self.key(name))
        return leaf

    def chain(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def file_certificate(self, name: str) -> dict[str, Any]:
        return {"file": {"certificateChain": str(self.chain(name)), "privateKey": str(self.key(name))}}

    def file_trust(self) -> dict[str, Any]:
        return {"file": {"certificateChain": str(self.trust)}}


def write_leaf(leaf: trustme.LeafCert, chain: Path, key: Path) -> None:
    """Replace both files atomically (rename), as a secret volume or a rotation job would."""
    for path, pem in (
        (chain, b"".join(p.bytes() for p in leaf.cert_chain_pems)),
        (key, leaf.private_key_pem.bytes()),
    ):
        partial = path.with_suffix(path.suffix + ".tmp")
        partial.write_bytes(pem)
        partial.replace(path)


def listener_tls(
    mode: str, certificate: dict[str, Any], trust: dict[str, Any] | None = None, sans: tuple[str, ...] = ()
) -> dict[str, Any]:
    tls: dict[str, Any] = {"mode": mode, "certificate": certificate}
    if trust is not None:
        tls["validation"] = {"trust": trust}
        if sans:
            tls["validation"]["subjectAlternativeNames"] = {"match": {"exact": list(sans)}}
    return tls


def client_policy(
    trust: dict[str, Any],
    *,
    certificate: dict[str, Any] | None = None,
    sans: tuple[str, ...] = (),
    enforce: bool | None = None,
    ports: tuple[int, ...] = (),
) -> dict[str, Any]:
    tls: dict[str, Any] = {"validation": {"trust": trust}}
    if sans:
        tls["validation"]["subjectAlternativeNames"] = {"match": {"exact": list(sans)}}
    if certificate is not None:
        tls["certificate"] = certificate
    if enforce is not None:
        tls["enforce"] = enforce
    if ports:
        tls["ports"] = list(ports)
    return {"tls": tls}


def tls_node(
    name: str,
    address: str,
    port: int,
    *,
    protocol: str = "http",
    tls: dict[str, Any] | None = None,
    backends: tuple[str, ...] = (),
    backend_defaults: dict[str, Any] | None = None,
    backend_policies: dict[str, dict[str, Any]] | None = None,
) -> Resource:
    """A virtual node found at `address` with one listener on `port`; TLS members as given."""
    listener: dict[str, Any] = {"portMapping": {"port": port, "protocol": protocol}}
    if tls is not None:
        listener["tls"] = tls
    spec: dict[str, Any] = {"listeners": [listener], "serviceDiscovery": {"dns": {"hostname": address}}}
    policies = backend_policies or {}
    if backends:
        spec["backends"] = [
            {
                "virtualService": {
                    "virtualServiceName": b,
                    **({"clientPolicy": policies[b]} if b in policies else {}),
                }
            }
            for b in backends
        ]
    if backend_defaults is not None:
        spec["backendDefaults"] = {"clientPolicy": backend_defaults}
    return {"virtualNode": {"meshName": MESH, "virtualNodeName": name, "spec": spec}}


class TlsApp:
    """An HTTPS server standing in for a backend that terminates TLS itself (no sidecar): it answers with
    its name and the serial and SANs of the client certificate it saw (`client_serial`), asking for one when
    `trust` is given. `close` answers with `Connection: close`, so every request is a new TLS connection."""

    def __init__(
        self, name: str, address: str, leaf: trustme.LeafCert, trust: trustme.CA | None = None, port: int = 0
    ) -> None:
        self.name = name
        self.address = address
        self.leaf = leaf
        self.trust = trust
        self.port = port
        self.requests = 0
        self.close = False
        self._runner: Any = None

    def __repr__(self) -> str:
        return f"<TlsApp {self.name} {self.address}:{self.port} requests={self.requests}>"

    async def start(self) -> None:
        import ssl

        from aiohttp import web

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaf.configure_cert(context)
        if self.trust is not None:
            self.trust.configure_trust(context)
            context.verify_mode = ssl.CERT_OPTIONAL
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=context, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: Any) -> Any:
        import json as json_module

        from aiohttp import web

        self.requests += 1
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        document = {
            "name": self.name,
            "client_serial": peer.get("serialNumber") if peer else None,
            "client_sans": [value for _, value in peer.get("subjectAltName", ())] if peer else [],
        }
        headers = {"x-app-name": self.name, **({"connection": "close"} if self.close else {})}
        return web.Response(
            text=json_module.dumps(document), content_type="application/json", headers=headers
        )


def serial_of(leaf: trustme.LeafCert) -> str:
    """The serial number as OpenSSL prints it (`getpeercert()["serialNumber"]`)."""
    import ssl

    from cryptography import x509

    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    text = f"{x509.load_der_x509_certificate(der).serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


@dataclass(frozen=True)
class Leaf:
    """A certificate and key as PEM, for identities trustme cannot write (URI SANs: SPIFFE IDs)."""

    chain: bytes
    key: bytes
    serial: str


def uri_leaf(ca: trustme.CA, uri: str) -> Leaf:
    """A leaf whose only SAN is the URI `uri` (a SPIRE SVID's shape), signed by `ca`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    issuer: x509.Certificate = ca._certificate  # trustme keeps its CA here
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca._private_key, hashes.SHA256())
    )
    text = f"{certificate.serial_number:X}"
    return Leaf(
        chain=certificate.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        serial=text if len(text) % 2 == 0 else "0" + text,
    )


def server_sidecar(
    resources: Any, node: str, workdir: Path, address: str, port: int, env: dict[str, str] | None = None
) -> MeshProxy:
    """A node's sidecar on its own loopback `address`, its ingress port the app's `port` (see the top)."""
    proxy = MeshProxy(
        resources, node_arn(node), workdir, env={**(env or {}), "MESHPROXY_LISTEN_ADDRESS": address}
    )
    proxy.ingress_port = port
    return proxy


class LoadLoop:
    """Requests to `host` through a client sidecar's egress while a test rotates certificates: one on a
    keep-alive connection, one on a new connection, in turn, until stopped (at most 20 s or 5000 requests).
    `failures` holds every answer that was not 200."""

    def __init__(self, proxy: MeshProxy, host: str) -> None:
        self.proxy = proxy
        self.host = host
        self.count = 0
        self.failures: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + 20
        with Http1Client(self.proxy.egress_port) as keepalive:
            while not self._done.is_set() and time.monotonic() < deadline and self.count < 5000:
                for reply in (keepalive.get("/load", host=self.host), self.proxy.egress(self.host, "/fresh")):
                    self.count += 1
                    if reply.status != 200:
                        self.failures.append(repr(reply))

    def more(self, requests: int = 20, timeout: float = 10.0) -> bool:
        """Wait until `requests` more have been answered."""
        target = self.count + requests
        return wait_for(lambda: self.count >= target, timeout)
