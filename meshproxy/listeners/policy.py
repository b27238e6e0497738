"""What a listener's policy is, and what it may use of its listener.

A listener (listeners/listener.py) is the same machine for every direction: a bound socket, its stats, its
connections. What differs is the policy: which protocol object serves an accepted connection (ingress: the
virtual-node listener of the original port; egress: what the first bytes say; gateway: TLS, HTTP/2 or
HTTP/1.1 on a port bound directly) and whether a new request is admitted. Each policy is a small module.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from mypy_extensions import trait

from meshproxy.config.snapshot import GatewayListener, IngressListener
from meshproxy.downstream.context import ConnectionContext
from meshproxy.net.tls_contexts import TlsContextSource, TlsKey
from meshproxy.telemetry.stats import TcpProxyStats


class PendingConnection(Protocol):
    """An accepted connection whose protocol is not known yet (listeners/dispatch.py)."""

    @property
    def opened(self) -> float: ...

    def close(self) -> bool:
        """Begin to close it (False if it is closing already)."""
        ...


@trait
class PolicyListener(ConnectionContext):
    """A listener as its policy sees it (a trait, as `ConnectionContext`)."""

    __slots__ = ()

    # accepted connections still being told apart (a drain waits for them too)
    pending: set[PendingConnection]
    tcp_stats: TcpProxyStats
    requests_active: int  # requests in flight through this listener

    def ingress_listener(self, original_port: int | None) -> IngressListener | None:
        raise NotImplementedError

    def gateway_listener(self) -> GatewayListener | None:
        raise NotImplementedError

    def tls_source(self, key: TlsKey) -> TlsContextSource | None:
        """The current TLS context source for a termination (None if the snapshot did not prepare it)."""
        raise NotImplementedError


class ListenerPolicy(Protocol):
    def accept(self, listener: PolicyListener) -> asyncio.Protocol:
        """The protocol object for a newly accepted connection."""
        ...

    def admit_request(self, listener: PolicyListener) -> bool: ...
