"""The ingress policy (port 15000): traffic redirected to the application's ports goes to the local app.

The connection's original port picks the virtual-node listener (spec §2.4); its protocol picks the handler:
`tcp` -> the TCP proxy at once; `http2`/`grpc` -> h2c (prior knowledge) or HTTP/1.1 by the first bytes (an
HTTP/1.1 client may then ask `Upgrade: h2c`); `http` -> the HTTP/1.1 connection manager at once.

A listener with `tls` terminates it first (listeners/terminate.py): STRICT at once, PERMISSIVE when the
first bytes are a TLS ClientHello (anything else, or silence, is served in plaintext). Inside TLS the same
handlers serve, and ALPN `h2` goes straight to the HTTP/2 connection manager.
"""

from __future__ import annotations

import asyncio
from typing import cast

from meshproxy.config.snapshot import IngressListener, ListenerProtocol, TlsTermination
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.downstream.h2 import H2ConnectionManager
from meshproxy.listeners.detect import Detected, Detection
from meshproxy.listeners.dispatch import ConnectionDispatcher
from meshproxy.listeners.h2c import PrefaceSniffer
from meshproxy.listeners.policy import PolicyListener
from meshproxy.listeners.terminate import tls_session
from meshproxy.net.tls import TlsMode

SNIFF_TIMEOUT_S = 15.0  # Envoy's listener-filter timeout: a silent http2/grpc client is then served HTTP/1.1
_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)


def _ingress_of(dispatcher: ConnectionDispatcher) -> IngressListener | None:
    listener = dispatcher.listener
    # With one listener the original port changes nothing: don't pay for reading it.
    port = dispatcher.original_port if len(listener.snapshot.ingress) > 1 else None
    return listener.ingress_listener(port)


class _TcpAfterHandshake(asyncio.Protocol):
    """A tcp listener's TLS connection: once decrypted, bridged to the local app like plaintext."""

    __slots__ = ("dispatcher", "ingress")

    def __init__(self, dispatcher: ConnectionDispatcher, ingress: IngressListener) -> None:
        self.dispatcher = dispatcher
        self.ingress = ingress

    def __repr__(self) -> str:
        return f"<TcpAfterHandshake {self.ingress.port}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        plain = cast(asyncio.Transport, transport)
        cluster = self.dispatcher.listener.cluster(self.ingress.cluster)
        if cluster is None:
            plain.close()
            return
        self.dispatcher.start_tcp(cluster, self.ingress.idle_timeout, None, plain)


class IngressPolicy:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<IngressPolicy>"

    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        return ConnectionDispatcher(listener, self)

    def admit_request(self, listener: PolicyListener) -> bool:
        return True

    def on_connect(self, dispatcher: ConnectionDispatcher) -> None:
        ingress = _ingress_of(dispatcher)
        tls = None if ingress is None else ingress.tls
        if ingress is not None and tls is not None:
            if tls.mode == TlsMode.STRICT:
                dispatcher.hand_to(self._terminate(dispatcher, ingress, tls))
            else:
                dispatcher.sniff(SNIFF_TIMEOUT_S)  # PERMISSIVE: a ClientHello, or plaintext
            return
        self._plain(dispatcher, ingress)

    def _plain(self, dispatcher: ConnectionDispatcher, ingress: IngressListener | None) -> None:
        """A new plaintext connection (or a PERMISSIVE tcp listener's, once its first bytes are not TLS)."""
        if ingress is not None and ingress.protocol is ListenerProtocol.TCP:
            cluster = dispatcher.listener.cluster(ingress.cluster)
            if cluster is not None:
                dispatcher.start_tcp(cluster, idle=ingress.idle_timeout, retry=None)
                return
        if ingress is not None and ingress.protocol in _HTTP2_PROTOCOLS:
            dispatcher.sniff(SNIFF_TIMEOUT_S)
            return
        dispatcher.hand_to_http()

    def on_detected(self, dispatcher: ConnectionDispatcher, detection: Detection) -> None:
        ingress = _ingress_of(dispatcher)
        if ingress is not None and ingress.tls is not None:  # PERMISSIVE
            if detection.kind is Detected.TLS:
                dispatcher.hand_to(self._terminate(dispatcher, ingress, ingress.tls))
                return
            if ingress.protocol is ListenerProtocol.TCP:
                self._plain(dispatcher, ingress)
                return
        if detection.kind is Detected.HTTP2:
            dispatcher.hand_to_h2()
        else:
            dispatcher.hand_to_http()  # HTTP/1.1, or bytes the HTTP/1.1 manager will answer 400

    def on_silence(self, dispatcher: ConnectionDispatcher) -> None:
        ingress = _ingress_of(dispatcher)
        if ingress is not None and ingress.protocol is ListenerProtocol.TCP:
            self._plain(dispatcher, ingress)  # a PERMISSIVE tcp listener's server-first protocol
            return
        dispatcher.hand_to_http()

    @staticmethod
    def _terminate(
        dispatcher: ConnectionDispatcher, ingress: IngressListener, tls: TlsTermination
    ) -> asyncio.Protocol:
        listener = dispatcher.listener

        def serve(alpn: str | None) -> asyncio.Protocol:
            if ingress.protocol is ListenerProtocol.TCP:
                return _TcpAfterHandshake(dispatcher, ingress)
            if alpn == "h2":
                return H2ConnectionManager(listener, dispatcher.redirect)
            if ingress.protocol in _HTTP2_PROTOCOLS:
                return PrefaceSniffer(listener, dispatcher.redirect)
            return Http1ConnectionManager(listener, dispatcher.redirect)

        return tls_session(listener, tls, ingress.protocol, serve)
