"""The gateway policy: a virtual gateway's listener ports, bound directly (nothing redirects to them).

A connection is TLS-terminated first when the gateway listener has `tls` (STRICT: TLS only; PERMISSIVE: TLS
or plaintext by the first byte, spec §4.6; listeners/terminate.py), then served as HTTP/1.1, or as h2c or
HTTP/1.1 on an http2/grpc listener; over TLS, ALPN `h2` picks HTTP/2 on any of them. New requests are
admitted while the listener's `connectionPool` has room: App Mesh applied it to the gateway's self-redirect
cluster, i.e. to the requests in flight through this listener.
"""

from __future__ import annotations

import asyncio

from meshproxy.config.snapshot import GatewayListener, ListenerProtocol
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.downstream.h2 import H2ConnectionManager
from meshproxy.listeners.h2c import PrefaceSniffer
from meshproxy.listeners.policy import PolicyListener
from meshproxy.listeners.terminate import PermissiveTls, tls_session
from meshproxy.net.tls import TlsMode

_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)
_UNLIMITED = 2147483647


def gateway_capacity(gateway: GatewayListener) -> int:
    """Requests in flight the listener's connectionPool allows (http: connections + pending)."""
    limits = gateway.limits
    if gateway.protocol is ListenerProtocol.HTTP:
        return min(limits.max_connections + limits.max_pending_requests, _UNLIMITED)
    return limits.max_requests


class GatewayPolicy:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<GatewayPolicy>"

    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        gateway = listener.gateway_listener()
        tls = None if gateway is None else gateway.tls
        if gateway is None or tls is None:
            return self._plain(listener)

        def serve(alpn: str | None) -> asyncio.Protocol:
            return H2ConnectionManager(listener) if alpn == "h2" else self._plain(listener)

        if tls.mode == TlsMode.STRICT:
            return tls_session(listener, tls, gateway.protocol, serve)
        return PermissiveTls(listener, tls, gateway.protocol, serve, lambda: self._plain(listener))

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
