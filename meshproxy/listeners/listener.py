"""Listeners: a bound socket, its Envoy-named stats, and what its connections route by.

Names follow App Mesh: `lds_ingress_0.0.0.0_15000`, `lds_egress_0.0.0.0_15001` (spec §2.4); listener stats
live under `listener.<ip>_<port>.` and HTTP connection-manager stats under `http.ingress.` / `http.egress.`.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from meshproxy.codec.h1 import ServerCodec
from meshproxy.config.snapshot import (
    GatewayListener,
    IngressListener,
    ListenerProtocol,
    Snapshot,
    TlsTermination,
)
from meshproxy.core.direction import ListenerDirection
from meshproxy.downstream.h1 import DownstreamConnection
from meshproxy.downstream.h2 import PrefaceSniffer
from meshproxy.listeners.dispatch import ConnectionDispatcher, PermissiveTlsDispatcher
from meshproxy.net.tls import CertificateStore, TlsMode, TlsTerminator
from meshproxy.router.request import UpstreamRequest
from meshproxy.upstream.cluster import ClusterManager

_HTTP2_PROTOCOLS = (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)

if TYPE_CHECKING:
    from meshproxy.dataplane import Dataplane


class ClientConnection(Protocol):
    """What a listener tracks of a client connection, whatever its protocol (HTTP/1.1 or HTTP/2)."""

    @property
    def peer(self) -> str: ...

    @property
    def last_activity(self) -> float: ...

    @property
    def opened(self) -> float: ...

    def close_if_idle(self) -> bool: ...

    def active_requests(self) -> Iterable[UpstreamRequest]:
        """Requests in flight on this connection (for the stream idle timeout sweep)."""
        ...


class ListenerState(enum.Enum):
    CREATED = "created"
    LISTENING = "listening"
    CLOSED = "closed"


def listening_socket(address: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A non-blocking TCP listening socket; SO_REUSEPORT lets several worker processes share the port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class HttpListener:
    """An HTTP/1.1 listener (ingress 15000, egress 15001, or a gateway port)."""

    def __init__(
        self,
        direction: ListenerDirection,
        address: str,
        port: int,
        dataplane: Dataplane,
        server_codec_factory: Callable[[], ServerCodec],
    ) -> None:
        self.direction = direction
        self.address = address
        self.port = port
        # App Mesh names a virtual gateway's listeners as ingress ones (lds_ingress_..., http.ingress.)
        self.stat_prefix = "ingress" if direction is ListenerDirection.GATEWAY else direction.value
        self.name = f"lds_{self.stat_prefix}_{address}_{port}"
        self.dataplane = dataplane
        self.server_codec_factory = server_codec_factory
        self.ingress = direction is ListenerDirection.INGRESS
        self.redirectable = direction is not ListenerDirection.GATEWAY
        self.stats = dataplane.store.listener(f"{address}_{port}")
        self.http_stats = dataplane.store.http_conn_manager(self.stat_prefix)
        self.tcp_stats = dataplane.store.tcp_proxy(self.stat_prefix)
        self.requests_active = 0  # this listener's own count (http stats may be shared by several listeners)
        self.connections: set[ClientConnection] = set()
        self.state = ListenerState.CREATED
        self.server: asyncio.Server | None = None
        self._certificates: CertificateStore | None = None
        self.socket: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<HttpListener {self.name} {self.state.value} connections={len(self.connections)}>"

    @property
    def clusters(self) -> ClusterManager:
        return self.dataplane.clusters

    def bind(self) -> None:
        self.socket = listening_socket(self.address, self.port)
        self.port = self.socket.getsockname()[1]

    async def start(self) -> None:
        if self.socket is None:
            self.bind()
        assert self.socket is not None
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.accept, sock=self.socket)
        self.state = ListenerState.LISTENING

    def accept(self) -> asyncio.Protocol:
        """The protocol for a newly accepted connection."""
        if self.redirectable:
            return ConnectionDispatcher(self)
        tls = self._tls_termination()
        if tls is None:
            # HTTP/2 hook: http2/grpc gateway listeners take h2c (prior knowledge) as well as HTTP/1.1
            gateway = self.gateway_listener(self.dataplane.snapshot)
            if gateway is not None and gateway.protocol in _HTTP2_PROTOCOLS:
                return PrefaceSniffer(self)
            return DownstreamConnection(self)
        store = self._certificates
        if store is None or store.termination != tls:
            store = self._certificates = CertificateStore(tls)
        if tls.mode == TlsMode.STRICT:
            return TlsTerminator(store.context, DownstreamConnection(self), self.stats)
        return PermissiveTlsDispatcher(self, store)

    def _tls_termination(self) -> TlsTermination | None:
        for gateway in self.dataplane.snapshot.gateway:
            if gateway.port == self.port and gateway.tls is not None and gateway.tls.mode != TlsMode.DISABLED:
                return gateway.tls
        return None

    def ingress_listener(self, snapshot: Snapshot, original_port: int | None) -> IngressListener | None:
        """The virtual-node listener for a redirected connection's original port; without a redirect, the
        first listener (a direct connection to the ingress port, as in tests and plain-host setups)."""
        listeners = snapshot.ingress
        if original_port is not None and original_port != self.port:
            for listener in listeners:
                if listener.port == original_port:
                    return listener
            return None
        return listeners[0] if listeners else None

    def gateway_listener(self, snapshot: Snapshot) -> GatewayListener | None:
        """The virtual-gateway listener on this port."""
        for gateway in snapshot.gateway:
            if gateway.port == self.port:
                return gateway
        return None

    # connection bookkeeping (stats are plain integer updates)
    def on_connection_open(self, connection: ClientConnection, http2: bool = False) -> None:
        # TCP sessions are counted by the tcp_proxy stats; listener totals count every accepted connection
        # that reached an HTTP connection manager.
        self.connections.add(connection)
        stats = self.stats
        stats.downstream_cx_total += 1
        stats.downstream_cx_active += 1
        http = self.http_stats
        http.downstream_cx_total += 1
        http.downstream_cx_active += 1
        if http2:
            http.downstream_cx_http2_total += 1
        else:
            http.downstream_cx_http1_total += 1

    def on_connection_upgraded(self, old: ClientConnection, new: ClientConnection) -> None:
        """HTTP/1.1 `Upgrade: h2c`: the same client connection, now served by the HTTP/2 manager."""
        self.connections.discard(old)
        self.connections.add(new)
        self.http_stats.downstream_cx_http2_total += 1
        self.http_stats.downstream_cx_upgrades_total += 1

    def on_connection_closed(self, connection: ClientConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.stats.downstream_cx_active -= 1
            self.stats.downstream_cx_destroy += 1
            http = self.http_stats
            http.downstream_cx_active -= 1
            http.downstream_cx_length_ms.record((time.monotonic() - connection.opened) * 1000.0)

    def on_request_done(self, connection: ClientConnection, stream: UpstreamRequest) -> None:
        self.requests_active -= 1
        http = self.http_stats
        http.downstream_rq_active -= 1
        http.downstream_rq_completed += 1
        status = stream.response_status
        if status:
            http.count_response(status)
        http.downstream_rq_time.record((time.monotonic() - stream.start) * 1000.0)
        self.dataplane.request_done(self, connection, stream)

    def close_idle_connections(self, idle_for: float | None = None) -> int:
        now = time.monotonic()
        closed = 0
        for connection in list(self.connections):
            expired = idle_for is None or now - connection.last_activity >= idle_for
            if expired and connection.close_if_idle():
                closed += 1
        return closed

    def expire_idle_streams(self, now: float) -> int:
        """Time out requests that moved no bytes for their idle timeout (Envoy's stream idle timeout)."""
        expired = 0
        for connection in list(self.connections):
            for request in list(connection.active_requests()):
                if request.idle_expired(now):
                    request.on_idle_timeout()
                    expired += 1
        return expired

    async def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        self.state = ListenerState.CLOSED
