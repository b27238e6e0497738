"""Per-connection dispatch on the redirected listeners (ingress 15000, egress 15001), spec §2.4.

A `ConnectionDispatcher` holds a new connection until its policy knows what it is: at once from the original
destination (ingress tcp listeners), or from the first bytes (listeners/detect.py), or from silence (a
server-first protocol). Then it hands the connection over: to an HTTP/1.1 or HTTP/2 connection manager, or to
the TCP proxy, or closes it. What each case means is the policy's (listeners/ingress.py, egress.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Protocol, cast

from meshproxy.config.snapshot import RetryPolicy
from meshproxy.core.clock import Timer
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.downstream.h2 import H2ConnectionManager
from meshproxy.listeners.detect import Detected, Detection, detect
from meshproxy.listeners.policy import PolicyListener
from meshproxy.net.accepted import AcceptedConnection
from meshproxy.net.delayed_close import DelayedClose
from meshproxy.net.original_dst import Redirect
from meshproxy.tcp.proxy import TcpProxySession
from meshproxy.upstream.cluster import ClusterRuntime

log = logging.getLogger("meshproxy.listener")

MAX_SNIFF_BYTES = 16 * 1024 + 5  # one TLS record
_OPAQUE = Detection(Detected.OPAQUE)


class SniffingPolicy(Protocol):
    """The decisions a dispatcher asks its policy for."""

    def on_connect(self, dispatcher: ConnectionDispatcher) -> None:
        """A new connection: hand it over now, or `sniff` its first bytes."""
        ...

    def on_detected(self, dispatcher: ConnectionDispatcher, detection: Detection) -> None: ...

    def on_silence(self, dispatcher: ConnectionDispatcher) -> None:
        """Nothing arrived within the sniff timeout."""
        ...


class DispatchState(enum.Enum):
    WAITING = "waiting"  # accepted, policy not asked yet
    SNIFFING = "sniffing"
    HANDED_OVER = "handed-over"
    CLOSING = "closing"  # half-closed: what arrives is dropped (net/delayed_close.py)
    CLOSED = "closed"


class ConnectionDispatcher(AcceptedConnection, asyncio.Protocol):
    """Holds a new connection until its policy knows what it is, then hands it over. A connection handed to
    an HTTP connection manager after its first bytes were read keeps the dispatcher as its protocol, which
    passes every call on to `manager`: uvloop's `set_protocol` on a reading transport stops and restarts
    reading, one more epoll change (one more io_uring_enter) for every new connection."""

    __slots__ = ("buffer", "listener", "manager", "opened", "policy", "state", "timer", "transport")

    def __init__(self, listener: PolicyListener, policy: SniffingPolicy) -> None:
        super().__init__(None)  # the redirect is known once the transport is
        self.listener = listener
        self.policy = policy
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.state = DispatchState.WAITING
        self.timer: Timer | None = None
        self.opened = 0.0
        self.manager: asyncio.Protocol | None = None  # the HTTP connection manager it was handed to

    def __repr__(self) -> str:
        return f"<ConnectionDispatcher {self.listener.local_address} {self.state.value} {self.redirect!r}>"

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.redirect = Redirect(transport, self.listener.port)
        self.opened = self.listener.clock.now()
        self.listener.pending.add(self)
        self.policy.on_connect(self)

    def data_received(self, data: bytes) -> None:
        manager = self.manager
        if manager is not None:
            manager.data_received(data)
            return
        if self.closing is not None:
            self.closing.discard(len(data))
            return
        self.buffer += data
        detection = detect(self.buffer)
        if detection.kind is Detected.NEED_MORE and len(self.buffer) < MAX_SNIFF_BYTES:
            return
        self._cancel_timer()
        self.policy.on_detected(self, detection)

    def eof_received(self) -> bool | None:
        if self.manager is not None:
            return self.manager.eof_received()
        if self.state is DispatchState.SNIFFING and self.buffer:
            self._cancel_timer()
            detection = detect(self.buffer)
            self.policy.on_detected(self, _OPAQUE if detection.kind is Detected.NEED_MORE else detection)
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.manager is not None:
            self.manager.connection_lost(exc)
            return
        self._cancel_timer()
        if self.closing is not None:
            self.closing.cancel()
        self.state = DispatchState.CLOSED
        self.listener.pending.discard(self)

    def pause_writing(self) -> None:
        if self.manager is not None:
            self.manager.pause_writing()

    def resume_writing(self) -> None:
        if self.manager is not None:
            self.manager.resume_writing()

    # ---------------------------------------------------------------- called by the policy
    def sniff(self, timeout: float) -> None:
        """Wait for the first bytes; `on_silence` if none arrive within `timeout` seconds."""
        self.state = DispatchState.SNIFFING
        self.timer = self.listener.clock.call_later(timeout, self._sniff_timeout)

    def hand_to_http(self) -> None:
        self._hand_to_manager(Http1ConnectionManager(self.listener, self.redirect))

    def hand_to_h2(self) -> None:
        """h2c with prior knowledge (RFC 9113 §3.3) goes to the HTTP/2 connection manager."""
        self._hand_to_manager(H2ConnectionManager(self.listener, self.redirect))

    def start_tcp(
        self,
        cluster: ClusterRuntime,
        idle: float | None,
        retry: RetryPolicy | None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        """Bridge the connection to `cluster` (`transport`: the decrypted side of a TLS connection)."""
        transport = transport or self.transport
        assert transport is not None
        self.state = DispatchState.HANDED_OVER
        self.listener.pending.discard(self)
        self.listener.listener_stats.downstream_cx_total += 1
        session = TcpProxySession(transport, self.buffer, cluster, self.listener.tcp_stats, retry, idle)
        self.buffer = b""
        transport.set_protocol(session.protocol)
        session.start()

    def hand_to(self, protocol: asyncio.Protocol) -> None:
        """Hand the connection, with the bytes read so far, to `protocol` (a TLS session, say)."""
        self._hand_over(protocol)

    def passthrough(self) -> None:
        """To the original destination, bytes untouched (ALLOW_ALL, or TLS to an AWS API under DROP_ALL)."""
        destination = self.original_destination
        assert destination is not None
        cluster = self.listener.passthrough_cluster(*destination, http2=False)
        self.start_tcp(cluster, idle=3600.0, retry=None)

    def close(self) -> bool:
        """Close with a delayed close (a request that crosses the close is dropped, not answered with a
        reset); it stays pending until it is gone, so a drain waits for it. False if closing already."""
        if self.state is DispatchState.CLOSING or self.state is DispatchState.CLOSED:
            return False
        self._cancel_timer()
        transport = self.transport
        if transport is None:
            self.state = DispatchState.CLOSED
            self.listener.pending.discard(self)
            return True
        self.state = DispatchState.CLOSING
        self.closing = DelayedClose(transport, self.listener.clock)
        return True

    # ---------------------------------------------------------------- internals
    def _hand_to_manager(self, manager: asyncio.Protocol) -> None:
        # Sniffing means uvloop is reading (it starts after `connection_made`, where a policy that knows at
        # once hands over): then the dispatcher stays the transport's protocol (see the class docstring).
        self._hand_over(manager, keep=self.state is DispatchState.SNIFFING)

    def _hand_over(self, protocol: asyncio.Protocol, *, keep: bool = False) -> None:
        """`keep`: the transport keeps calling the dispatcher, which passes every call on to `protocol` (an
        HTTP connection manager; one that switches to HTTP/2 installs that one on the transport itself)."""
        transport = self.transport
        assert transport is not None
        self.state = DispatchState.HANDED_OVER
        self.listener.pending.discard(self)
        if keep:
            self.manager = protocol
        else:
            transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.buffer:
            data, self.buffer = self.buffer, b""
            protocol.data_received(data)

    def _sniff_timeout(self) -> None:
        self.timer = None
        if self.state is DispatchState.SNIFFING:
            self.policy.on_silence(self)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
