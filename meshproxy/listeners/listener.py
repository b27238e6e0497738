"""Listeners: a bound socket, its Envoy-named stats, its connections, and the policy that serves them.

Names follow App Mesh: `lds_ingress_0.0.0.0_15000`, `lds_egress_0.0.0.0_15001` (spec §2.4); listener stats
live under `listener.<ip>_<port>.` and HTTP connection-manager stats under `http.ingress.` / `http.egress.`.
An `HttpListener` is the `RequestContext` of its requests and the `ConnectionContext` of its connections;
what differs by direction is its policy (listeners/ingress.py, egress.py, gateway.py).
"""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Callable
from typing import Protocol

from meshproxy.codec.h1 import ServerCodec
from meshproxy.config.snapshot import GatewayListener, IngressListener, Snapshot
from meshproxy.core.clock import Clock
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.events import Event, RequestHead
from meshproxy.downstream.context import ClientConnection, UpgradeSource
from meshproxy.listeners.egress import EgressPolicy
from meshproxy.listeners.gateway import GatewayPolicy
from meshproxy.listeners.h2c import upgrade_to_h2c
from meshproxy.listeners.ingress import IngressPolicy
from meshproxy.listeners.policy import ListenerPolicy, PendingConnection, PolicyListener
from meshproxy.net.descriptors import DescriptorGuard
from meshproxy.net.listen import ACCEPTS_PER_TURN, Acceptor, listening_socket
from meshproxy.net.tls_contexts import TlsContexts, TlsContextSource, TlsKey
from meshproxy.router.context import RequestObserver, Tracer
from meshproxy.telemetry.stats import StatsStore
from meshproxy.upstream.cluster import ClusterManager, ClusterRuntime


class ListenerHost(Protocol):
    """What listeners share: the data plane (dataplane.py)."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def clusters(self) -> ClusterManager: ...

    @property
    def store(self) -> StatsStore: ...

    @property
    def tracer(self) -> Tracer | None: ...

    @property
    def observer(self) -> RequestObserver | None: ...

    @property
    def draining(self) -> bool: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def tls(self) -> TlsContexts: ...


class ListenerState(enum.Enum):
    CREATED = "created"
    LISTENING = "listening"
    CLOSED = "closed"


def _policy_for(direction: ListenerDirection) -> ListenerPolicy:
    if direction is ListenerDirection.INGRESS:
        return IngressPolicy()
    if direction is ListenerDirection.EGRESS:
        return EgressPolicy()
    return GatewayPolicy()


class HttpListener(PolicyListener):
    """An HTTP listener (ingress 15000, egress 15001, or a gateway port)."""

    def __init__(
        self,
        direction: ListenerDirection,
        address: str,
        port: int,
        host: ListenerHost,
        server_codec_factory: Callable[[], ServerCodec],
        descriptors: DescriptorGuard | None = None,
    ) -> None:
        """`descriptors`: the process's guard against running out of file descriptors, told of every
        accepted connection (it pauses this listener's acceptor when they run short)."""
        self.direction = direction
        self.address = address
        self.port = port
        # App Mesh names a virtual gateway's listeners as ingress ones (lds_ingress_..., http.ingress.)
        self.stat_prefix = "ingress" if direction is ListenerDirection.GATEWAY else direction.value
        self.name = f"lds_{self.stat_prefix}_{address}_{port}"
        self.host = host
        self.new_server_codec = server_codec_factory
        self.policy = _policy_for(direction)
        # what does not change while the process runs, as attributes (read on every request)
        self.clock: Clock = host.clock
        self.tracer: Tracer | None = host.tracer
        self.observer: RequestObserver | None = host.observer
        self.listener_stats = host.store.listener(f"{address}_{port}")
        self.http_stats = host.store.http_conn_manager(self.stat_prefix)
        self.tcp_stats = host.store.tcp_proxy(self.stat_prefix)
        self.requests_active = 0  # this listener's own count (http stats may be shared by several listeners)
        self.connections: set[ClientConnection] = set()
        self.pending: set[PendingConnection] = set()  # accepted, protocol not known yet
        self.state = ListenerState.CREATED
        self.acceptor: Acceptor | None = None
        self.descriptors = descriptors
        self.socket: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<HttpListener {self.name} {self.state.value} connections={len(self.connections)}>"

    # ---------------------------------------------------------------- RequestContext
    @property
    def local_address(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def snapshot(self) -> Snapshot:
        return self.host.snapshot

    @property
    def draining(self) -> bool:
        return self.host.draining

    @property
    def clusters(self) -> ClusterManager:
        return self.host.clusters

    def cluster(self, name: str) -> ClusterRuntime | None:
        return self.host.clusters.clusters.get(name)  # the manager's current map (replaced whole on a swap)

    def passthrough_cluster(self, address: str, port: int, http2: bool) -> ClusterRuntime:
        return self.host.clusters.passthrough(address, port, http2=http2)

    def admit_request(self) -> bool:
        return self.policy.admit_request(self)

    # ---------------------------------------------------------------- what the policies look up
    def ingress_listener(self, original_port: int | None) -> IngressListener | None:
        """The virtual-node listener for a redirected connection's original port; without a redirect, the
        first listener (a direct connection to the ingress port, as in tests and plain-host setups)."""
        listeners = self.host.snapshot.ingress
        if original_port is not None and original_port != self.port:
            for listener in listeners:
                if listener.port == original_port:
                    return listener
            return None
        return listeners[0] if listeners else None

    def gateway_listener(self) -> GatewayListener | None:
        """The virtual-gateway listener on this port."""
        for gateway in self.host.snapshot.gateway:
            if gateway.port == self.port:
                return gateway
        return None

    def tls_source(self, key: TlsKey) -> TlsContextSource | None:
        return self.host.tls.source(key)

    # ---------------------------------------------------------------- socket
    def bind(self) -> None:
        self.socket = listening_socket(self.address, self.port)
        self.port = self.socket.getsockname()[1]

    async def start(self) -> None:
        if self.socket is None:
            self.bind()
        assert self.socket is not None
        self.acceptor = Acceptor(self.socket, self.accept, ACCEPTS_PER_TURN)
        await self.acceptor.start()
        if self.descriptors is not None:
            self.descriptors.watch(self.acceptor)
        self.state = ListenerState.LISTENING

    def accept(self) -> asyncio.Protocol:
        """The protocol for a newly accepted connection."""
        if self.descriptors is not None:
            self.descriptors.on_accept()
        return self.policy.accept(self)

    async def stop_accepting(self) -> int:
        """Close the listening socket; the connections already queued on it are accepted and served first
        (closing would reset them). Returns how many there were."""
        self.state = ListenerState.CLOSED
        if self.acceptor is None:
            return 0
        return await self.acceptor.close()

    # ---------------------------------------------------------------- ConnectionContext (stats are integers)
    def connection_opened(self, connection: ClientConnection, http2: bool) -> None:
        # TCP sessions are counted by the tcp_proxy stats; listener totals count every accepted connection
        # that reached an HTTP connection manager.
        self.connections.add(connection)
        stats = self.listener_stats
        stats.downstream_cx_total += 1
        stats.downstream_cx_active += 1
        http = self.http_stats
        http.downstream_cx_total += 1
        http.downstream_cx_active += 1
        if http2:
            http.downstream_cx_http2_total += 1
        else:
            http.downstream_cx_http1_total += 1

    def connection_upgraded(self, old: ClientConnection, new: ClientConnection) -> None:
        self.connections.discard(old)
        self.connections.add(new)
        self.http_stats.downstream_cx_http2_total += 1
        self.http_stats.downstream_cx_upgrades_total += 1

    def connection_closed(self, connection: ClientConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.listener_stats.downstream_cx_active -= 1
            self.listener_stats.downstream_cx_destroy += 1
            http = self.http_stats
            http.downstream_cx_active -= 1
            http.downstream_cx_length_ms.record((self.host.clock.now() - connection.opened) * 1000.0)

    def h2c_upgrade(
        self, connection: UpgradeSource, head: RequestHead, settings: bytes, rest: list[Event]
    ) -> bool:
        return upgrade_to_h2c(self, connection, head, settings, rest)

    def request_started(self, http2: bool) -> None:
        self.requests_active += 1
        http = self.http_stats
        http.downstream_rq_total += 1
        http.downstream_rq_active += 1
        if http2:
            http.downstream_rq_http2_total += 1
        else:
            http.downstream_rq_http1_total += 1

    def request_finished(self, status: int, started: float) -> None:
        self.requests_active -= 1
        http = self.http_stats
        http.downstream_rq_active -= 1
        http.downstream_rq_completed += 1
        if status:
            http.count_response(status)
        http.downstream_rq_time.record((self.host.clock.now() - started) * 1000.0)

    # ---------------------------------------------------------------- sweeps (called once a second)
    def close_idle_connections(self, idle_for: float | None = None) -> int:
        now = self.host.clock.now()
        closed = 0
        for connection in list(self.connections):
            expired = idle_for is None or now - connection.last_activity >= idle_for
            if expired and connection.close_if_idle():
                closed += 1
        return closed

    def drain_connections(self, now: float, idle_for: float, fresh_for: float | None) -> int:
        """While the proxy drains: close connections quiet for `idle_for` seconds between requests (every
        response of the drain says `Connection: close`, so these are connections idle since before it), and
        connections still to send their first request only once quiet for `fresh_for` (None: never; a client
        that has just connected is about to send). HTTP/2 connections get their GOAWAY first."""
        closed = 0
        for connection in list(self.connections):
            limit = idle_for if connection.requests else fresh_for
            if limit is not None and now - connection.last_activity >= limit and connection.close_if_idle():
                closed += 1
        if fresh_for is not None:
            for pending in list(self.pending):
                if now - pending.opened >= fresh_for and pending.close():
                    closed += 1
        return closed

    @property
    def open_connections(self) -> int:
        return len(self.connections) + len(self.pending)

    def expire_slow_heads(self, now: float, timeout: float) -> int:
        """Envoy's request_headers_timeout: connections whose request head has been arriving for `timeout`
        seconds get 408 and are closed (counted downstream_rq_header_timeout)."""
        expired = 0
        for connection in list(self.connections):
            started = connection.head_started
            if started and now - started >= timeout and connection.on_headers_timeout():
                expired += 1
        return expired

    def expire_idle_streams(self, now: float) -> int:
        """Time out requests that moved no bytes for their idle timeout (Envoy's stream idle timeout)."""
        expired = 0
        for connection in list(self.connections):
            for request in list(connection.active_requests()):
                if request.idle_expired(now):
                    request.on_idle_timeout()
                    expired += 1
        return expired
