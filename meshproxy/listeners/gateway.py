"""The gateway policy: a virtual gateway's listener ports, bound directly (nothing redirects to them).

A connection is TLS-terminated first when the gateway listener has `tls` (STRICT: TLS only; PERMISSIVE: TLS
or plaintext by the first byte, spec §4.6), then served as HTTP/1.1, or as h2c or HTTP/1.1 on an http2/grpc
listener. New requests are admitted while the listener's `connectionPool` has room: App Mesh applied it to
the gateway's self-redirect cluster, i.e. to the requests in flight through this listener.
"""

from __future__ import annotations

import asyncio
from typing import cast

from meshproxy.config.snapshot import GatewayListener, ListenerProtocol
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.listeners.h2c import PrefaceSniffer
from meshproxy.listeners.policy import PolicyListener
from meshproxy.net.tls import CertificateStore, TlsMode, TlsTerminator

_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)
_UNLIMITED = 2147483647


def gateway_capacity(gateway: GatewayListener) -> int:
    """Requests in flight the listener's connectionPool allows (http: connections + pending)."""
    limits = gateway.limits
    if gateway.protocol is ListenerProtocol.HTTP:
        return min(limits.max_connections + limits.max_pending_requests, _UNLIMITED)
    return limits.max_requests


class GatewayPolicy:
    __slots__ = ("certificates",)

    def __init__(self) -> None:
        self.certificates: CertificateStore | None = None  # reloads its files when they change

    def __repr__(self) -> str:
        return f"<GatewayPolicy certificates={self.certificates!r}>"

    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        tls = listener.tls_termination()
        if tls is None:
            return self._plain(listener)
        store = self.certificates
        if store is None or store.termination != tls:
            store = self.certificates = CertificateStore(tls)
        if tls.mode == TlsMode.STRICT:
            return TlsTerminator(store.context, self._plain(listener), listener.listener_stats)
        return PermissiveTlsDispatcher(listener, store)

    def admit_request(self, listener: PolicyListener) -> bool:
        gateway = listener.gateway_listener()
        if gateway is not None and listener.requests_active > gateway_capacity(gateway):
            listener.listener_stats.downstream_cx_overflow += 1
            return False
        return True

    @staticmethod
    def _plain(listener: PolicyListener) -> asyncio.Protocol:
        gateway = listener.gateway_listener()
        if gateway is not None and gateway.protocol in _HTTP2_PROTOCOLS:
            return PrefaceSniffer(listener)  # h2c (prior knowledge) or HTTP/1.1
        return Http1ConnectionManager(listener)


class PermissiveTlsDispatcher(asyncio.Protocol):
    """A PERMISSIVE listener: TLS when the first byte starts a handshake record, plaintext otherwise."""

    __slots__ = ("listener", "store", "transport")

    def __init__(self, listener: PolicyListener, store: CertificateStore) -> None:
        self.listener = listener
        self.store = store
        self.transport: asyncio.Transport | None = None

    def __repr__(self) -> str:
        return f"<PermissiveTlsDispatcher {self.listener.local_address}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        connection = GatewayPolicy._plain(self.listener)
        if data[:1] == b"\x16":  # TLS handshake record (RFC 8446 §5.1)
            terminator = TlsTerminator(
                self.store.context, connection, self.listener.listener_stats, initial=data
            )
            terminator.attach(transport)
            return
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(data)
