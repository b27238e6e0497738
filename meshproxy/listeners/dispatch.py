"""Per-connection dispatch on the ingress and egress listeners (spec §2.4).

Ingress: the original destination port picks the virtual-node listener; its protocol picks HTTP or TCP.
Egress: the first bytes say what the application speaks (listeners/detect.py). HTTP/1.x goes to the HTTP
connection manager (routed by Host); TLS is passed through untouched when the mesh allows it (ALLOW_ALL, or an
`*.amazonaws.com` SNI under DROP_ALL, as App Mesh did); other bytes follow the TCP route for the original
port, or pass through to the original destination under ALLOW_ALL. What is not allowed is closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, cast

from meshproxy.config.snapshot import EgressFilter, ListenerProtocol, RetryPolicy
from meshproxy.downstream.h1 import DownstreamConnection
from meshproxy.downstream.h2 import H2DownstreamConnection
from meshproxy.listeners.detect import Detected, detect
from meshproxy.net.original_dst import Redirect
from meshproxy.net.tls import CertificateStore, TlsTerminator
from meshproxy.router.match import pick_weighted
from meshproxy.tcp.proxy import TcpProxySession
from meshproxy.upstream.cluster import ClusterRuntime

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.listener")

SNIFF_TIMEOUT_S = 1.0  # server-first protocols (MySQL, SMTP) send nothing: treat them as opaque TCP
_MAX_SNIFF_BYTES = 16 * 1024 + 5  # one TLS record
AWS_API_SUFFIX = ".amazonaws.com"
_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)


class DispatchState(enum.Enum):
    SNIFFING = "sniffing"
    HANDED_OVER = "handed-over"
    CLOSED = "closed"


class ConnectionDispatcher(asyncio.Protocol):
    __slots__ = ("buffer", "listener", "redirect", "state", "timer", "transport")

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.redirect: Redirect | None = None
        self.buffer = b""
        self.state = DispatchState.SNIFFING
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ConnectionDispatcher {self.listener.name} {self.state.value} {self.redirect!r}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.redirect = Redirect(transport, self.listener.port)
        listener = self.listener
        if listener.ingress:
            snapshot = listener.dataplane.snapshot
            # With one listener the original port changes nothing: don't pay for reading it.
            port = self._original_port() if len(snapshot.ingress) > 1 else None
            ingress = listener.ingress_listener(snapshot, port)
            if ingress is not None and ingress.protocol is ListenerProtocol.TCP:
                cluster = listener.clusters.get(ingress.cluster)
                if cluster is not None:
                    self._start_tcp(cluster, idle=ingress.idle_timeout, retry=None)
                    return
            if ingress is not None and ingress.protocol in _HTTP2_PROTOCOLS:
                # HTTP/2 hook: an http2/grpc listener takes h2c (prior knowledge) and HTTP/1.1 (which may ask
                # `Upgrade: h2c`), told apart by the first bytes like egress
                self.timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT_S, self._sniff_timeout)
                return
            self._hand_to_http()
            return
        self.timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT_S, self._sniff_timeout)

    @property
    def original(self) -> tuple[str, int] | None:
        return self.redirect.destination if self.redirect is not None else None

    def _original_port(self) -> int | None:
        return self.redirect.port if self.redirect is not None else None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        detection = detect(self.buffer)
        kind = detection.kind
        if kind is Detected.NEED_MORE and len(self.buffer) < _MAX_SNIFF_BYTES:
            return
        self._cancel_timer()
        if kind is Detected.HTTP1:
            self._hand_to_http()
        elif kind is Detected.HTTP2:
            self._hand_to_h2()  # HTTP/2 hook: the h2c preface goes to the HTTP/2 connection manager
        elif self.listener.ingress:
            self._hand_to_http()  # HTTP/2 hook: an http2/grpc ingress listener answers the rest as HTTP/1
        elif kind is Detected.TLS:
            snapshot = self.listener.dataplane.snapshot
            allowed = snapshot.egress_filter is EgressFilter.ALLOW_ALL or (
                detection.sni is not None and detection.sni.endswith(AWS_API_SUFFIX)
            )
            if allowed and self.original is not None:
                self._passthrough()
            else:
                self._opaque()
        else:
            self._opaque()

    def _sniff_timeout(self) -> None:
        self.timer = None
        if self.state is DispatchState.SNIFFING:
            if self.listener.ingress:
                self._hand_to_http()  # HTTP/2 hook: a silent client of an http2/grpc ingress listener
                return
            self._opaque()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def eof_received(self) -> bool | None:
        if self.state is DispatchState.SNIFFING and self.buffer:
            self._cancel_timer()
            self._opaque()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.state = DispatchState.CLOSED

    # ------------------------------------------------------------------ hand-over
    def _hand_to_http(self) -> None:
        transport = self.transport
        assert transport is not None
        self.state = DispatchState.HANDED_OVER
        connection = DownstreamConnection(self.listener, self.redirect)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        if self.buffer:
            data, self.buffer = self.buffer, b""
            connection.data_received(data)

    def _hand_to_h2(self) -> None:
        """HTTP/2 hook: h2c with prior knowledge (RFC 9113 §3.3) goes to the HTTP/2 connection manager."""
        transport = self.transport
        assert transport is not None
        self.state = DispatchState.HANDED_OVER
        connection = H2DownstreamConnection(self.listener, self.redirect)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        data, self.buffer = self.buffer, b""
        connection.data_received(data)

    def _opaque(self) -> None:
        """Non-HTTP egress: the TCP route of the original port, else passthrough (ALLOW_ALL), else close."""
        snapshot = self.listener.dataplane.snapshot
        port = self._original_port()
        route = snapshot.tcp_routes.get(port) if port is not None else None
        if route is not None:
            target = pick_weighted(route)
            cluster = self.listener.clusters.get(target.cluster) if target is not None else None
            if cluster is not None:
                self._start_tcp(cluster, idle=route.idle_timeout, retry=route.retry)
                return
        if snapshot.egress_filter is EgressFilter.ALLOW_ALL and self.original is not None:
            self._passthrough()
            return
        self.listener.tcp_stats.downstream_cx_no_route += 1
        self._close()

    def _passthrough(self) -> None:
        assert self.original is not None
        self._start_tcp(self.listener.clusters.passthrough(*self.original), idle=3600.0, retry=None)

    def _start_tcp(self, cluster: ClusterRuntime, idle: float | None, retry: RetryPolicy | None) -> None:
        transport = self.transport
        assert transport is not None
        self.state = DispatchState.HANDED_OVER
        self.listener.stats.downstream_cx_total += 1
        session = TcpProxySession(transport, self.buffer, cluster, self.listener.tcp_stats, retry, idle)
        self.buffer = b""
        transport.set_protocol(session.protocol)
        session.start()

    def _close(self) -> None:
        self.state = DispatchState.CLOSED
        if self.transport is not None:
            self.transport.close()


class PermissiveTlsDispatcher(asyncio.Protocol):
    """A PERMISSIVE listener: TLS when the first byte starts a handshake record, plaintext otherwise."""

    __slots__ = ("listener", "store", "transport")

    def __init__(self, listener: HttpListener, store: CertificateStore) -> None:
        self.listener = listener
        self.store = store
        self.transport: asyncio.Transport | None = None

    def __repr__(self) -> str:
        return f"<PermissiveTlsDispatcher {self.listener.name}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        connection = DownstreamConnection(self.listener)
        if data[:1] == b"\x16":  # TLS handshake record (RFC 8446 §5.1)
            TlsTerminator(self.store.context, connection, self.listener.stats, initial=data).attach(transport)
            return
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(data)
