"""TLS origination on the connector seam, over the in-memory network: the `TlsConnector` composes with any
`Connector` (here the component tier's `MemoryConnector`), so the handshake, the checks and the failures are
exercised with real OpenSSL at both ends and no socket."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from meshproxy.config.snapshot import CertificateSource, PeerValidation, TlsOrigination
from meshproxy.net.connector import ConnectFailure
from meshproxy.net.secrets import SecretStore
from meshproxy.net.tls import TlsSession
from meshproxy.net.tls_connector import TlsConnector
from meshproxy.net.tls_contexts import TlsContextSource, TlsKey
from meshproxy.telemetry.stats import TlsStats

from ..memory import Accept, MemoryNetwork, Peer, Run

UPSTREAM = ("10.1.0.5", 8443)


def client_source(tmp_path: Path, ca: trustme.CA, names: tuple[str, ...]) -> TlsContextSource:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("front.demo.local")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "front.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "front.key"))
    origination = TlsOrigination(
        validation=PeerValidation(trust_file=str(tmp_path / "ca.pem"), subject_alternative_names=names),
        certificate=CertificateSource(str(tmp_path / "front.pem"), str(tmp_path / "front.key")),
    )
    source = TlsContextSource(TlsKey.client(origination, ("http/1.1",)), SecretStore())
    source.load()
    return source


def server_context(leaf: trustme.LeafCert, client_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def tls_server(leaf: trustme.LeafCert, client_ca: trustme.CA, peer: Peer, stats: TlsStats) -> TlsSession:
    return TlsSession.server(server_context(leaf, client_ca), lambda alpn: peer, stats)


def test_mtls_over_the_memory_network(run: Run, net: MemoryNetwork, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_peer, client_peer = Peer(), Peer()
    server_stats, client_stats = TlsStats(), TlsStats()
    context = server_context(ca.issue_cert("blue.demo.local"), ca)  # one server: its session tickets hold
    peers = [server_peer, Peer()]
    net.connector.route(
        UPSTREAM, Accept(lambda: TlsSession.server(context, lambda alpn: peers.pop(0), server_stats))
    )
    connector = TlsConnector(net.connector, client_source(tmp_path, ca, ("blue.demo.local",)), client_stats)

    async def scenario() -> None:
        await connector.connect(client_peer, *UPSTREAM, timeout=1.0)
        assert client_peer.transport is not None
        assert client_peer.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        client_peer.send(b"ping")
        await net.settle()
        assert bytes(server_peer.received) == b"ping"
        server_peer.send(b"pong")
        await net.settle()
        assert bytes(client_peer.received) == b"pong"
        assert (client_stats.handshake, server_stats.handshake, server_stats.no_certificate) == (1, 1, 0)
        assert client_stats.versions == {"TLSv1.2": 1}  # Envoy's client default: TLS 1.2 only
        client_peer.close()
        await net.settle()
        assert server_peer.eof or server_peer.lost  # close_notify, then the close

        await connector.connect(Peer(), *UPSTREAM, timeout=1.0)  # a reconnection resumes the session
        await net.settle()
        assert client_stats.session_reused == 1

    run(scenario())


@pytest.mark.parametrize(
    ("names", "issuer", "stat"),
    [
        (("green.demo.local",), "mesh", "fail_verify_san"),
        (("blue.demo.local",), "stranger", "fail_verify_error"),
    ],
)
def test_a_server_that_fails_validation_is_a_connect_failure_and_gets_no_data(
    run: Run, net: MemoryNetwork, tmp_path: Path, names: tuple[str, ...], issuer: str, stat: str
) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    leaf = (ca if issuer == "mesh" else stranger).issue_cert("blue.demo.local")
    server_peer, stats = Peer(), TlsStats()
    net.connector.route(UPSTREAM, Accept(lambda: tls_server(leaf, ca, server_peer, TlsStats())))
    connector = TlsConnector(net.connector, client_source(tmp_path, ca, names), stats)
    client_peer = Peer()

    async def scenario() -> None:
        with pytest.raises(ConnectFailure, match=stat):
            await connector.connect(client_peer, *UPSTREAM, timeout=1.0)
        await net.settle()

    run(scenario())
    assert getattr(stats, stat) == 1 and stats.handshake == 0
    assert client_peer.transport is None  # the pool's connection never saw a transport
    assert server_peer.received == bytearray()


def test_a_plaintext_upstream_only_ever_sees_a_client_hello(
    run: Run, net: MemoryNetwork, tmp_path: Path
) -> None:
    ca = trustme.CA()
    plaintext = Peer()
    net.connector.route(UPSTREAM, Accept(lambda: plaintext))
    stats = TlsStats()
    connector = TlsConnector(net.connector, client_source(tmp_path, ca, ()), stats)

    async def scenario() -> None:
        task = asyncio.ensure_future(connector.connect(Peer(), *UPSTREAM, timeout=1.0))
        await net.settle()
        assert bytes(plaintext.received[:1]) == b"\x16"  # a handshake record, nothing else
        plaintext.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # what a plaintext server answers
        await net.settle()
        with pytest.raises(ConnectFailure, match="connection_error"):
            await task

    run(scenario())
    assert stats.connection_error == 1
