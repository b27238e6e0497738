"""What a connection manager needs from its listener, and what a listener tracks of a client connection.

The listener layer implements `ConnectionContext` (listeners/listener.py); the connection managers
(downstream/h1.py, h2.py) implement `ClientConnection`. A connection manager never names a listener class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from mypy_extensions import trait

from meshproxy.codec.h1 import ServerCodec
from meshproxy.core.events import Event, RequestHead
from meshproxy.net.original_dst import Redirect
from meshproxy.router.context import RequestContext
from meshproxy.router.request import RouterRequest
from meshproxy.telemetry.stats import ListenerStats


class ClientConnection(Protocol):
    """A client connection as its listener tracks it, whatever its protocol."""

    @property
    def peer(self) -> str: ...

    @property
    def last_activity(self) -> float: ...

    @property
    def opened(self) -> float: ...

    @property
    def requests(self) -> int:
        """Requests started on this connection (0: a fresh connection, its first request still to come)."""
        ...

    @property
    def head_started(self) -> float:
        """When the first byte of a request head (HTTP/2: of a frame, with no stream open) that is still
        incomplete arrived; 0 when none is."""
        ...

    def on_headers_timeout(self) -> bool:
        """The head has been incomplete for the request-headers timeout: 408 (HTTP/2: GOAWAY) and close.
        False if it was not (any more) waiting for a head."""
        ...

    def close_if_idle(self) -> bool:
        """Close now if no request is in flight (keep-alive between requests, drain); True if it closed."""
        ...

    def active_requests(self) -> Iterable[RouterRequest]:
        """Requests in flight on this connection (for the stream idle timeout sweep)."""
        ...


class UpgradeSource(ClientConnection, Protocol):
    """An HTTP/1.1 connection about to switch protocols (`Upgrade: h2c`)."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def redirect(self) -> Redirect | None: ...

    def upgrade_trailing(self) -> bytes:
        """Bytes already received that belong to the new protocol."""
        ...


@trait
class ConnectionContext(RequestContext):
    """The listener as its connection managers see it (a trait, as `RequestContext`)."""

    __slots__ = ()

    listener_stats: ListenerStats
    new_server_codec: Callable[[], ServerCodec]

    @property
    def draining(self) -> bool:
        """The proxy is draining: responses say `Connection: close`, HTTP/2 connections get a GOAWAY."""
        raise NotImplementedError

    def connection_opened(self, connection: ClientConnection, http2: bool) -> None:
        raise NotImplementedError

    def connection_upgraded(self, old: ClientConnection, new: ClientConnection) -> None:
        """The same client connection, now served by another manager (HTTP/1.1 `Upgrade: h2c`)."""
        raise NotImplementedError

    def connection_closed(self, connection: ClientConnection) -> None:
        raise NotImplementedError

    def request_started(self, http2: bool) -> None:
        raise NotImplementedError

    def request_finished(self, status: int, started: float) -> None:
        """`status` 0: no response was sent. `started` is the request's start on the context's clock."""
        raise NotImplementedError

    def h2c_upgrade(
        self, connection: UpgradeSource, head: RequestHead, settings: bytes, rest: list[Event]
    ) -> bool:
        """Switch `connection` to HTTP/2 and serve `head` as its stream 1; False if the switch is refused (the
        request is then served over HTTP/1.1)."""
        raise NotImplementedError
