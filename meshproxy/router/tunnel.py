"""An accepted Upgrade (WebSocket): from the 101 on, both sides are raw byte streams.

A `Tunnel` relays bytes both ways and forwards each half-close to the other side; when both directions have
ended, or either connection is gone, it tells its request, which ends the attempt and the downstream side.
"""

from __future__ import annotations

import enum
from typing import Protocol

from meshproxy.core.events import ResponseHead
from meshproxy.router.attempt import UpstreamAttempt
from meshproxy.router.context import Downstream


class TunnelOwner(Protocol):
    bytes_received: int
    bytes_sent: int

    def tunnel_ended(self) -> None: ...


class TunnelState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED = "half-closed"  # one side sent EOF; the other may still send
    CLOSED = "closed"


class Tunnel:
    __slots__ = ("attempt", "down", "owner", "state")

    def __init__(self, owner: TunnelOwner, down: Downstream, attempt: UpstreamAttempt) -> None:
        self.owner = owner
        self.down = down
        self.attempt = attempt
        self.state = TunnelState.OPEN

    def __repr__(self) -> str:
        return f"<Tunnel {self.attempt.host.label} {self.state.value}>"

    def open(self, head: ResponseHead, service_time_ms: int, trailing: bytes) -> None:
        """Send the 101 on and switch both sides to raw bytes; `trailing` already belongs to the tunnel."""
        self.attempt.start_tunnel(self)
        down = self.down
        down.send_head(head, service_time_ms)
        down.start_tunnel(self)
        if trailing:
            self.owner.bytes_sent += len(trailing)
            down.send_data(trailing)
        down.flush()

    def from_client(self, data: bytes) -> None:
        self.owner.bytes_received += len(data)
        self.attempt.send_data(data)

    def from_upstream(self, data: bytes) -> None:
        """b"": the upstream connection is gone."""
        if not data:
            self._close()
            return
        self.owner.bytes_sent += len(data)
        self.down.send_data(data)
        self.down.flush()

    def client_eof(self) -> None:
        """The client half-closed: pass the EOF on; the upstream may still answer."""
        self.attempt.write_eof()
        self._half_close()

    def upstream_eof(self) -> None:
        """The upstream half-closed: pass the EOF on; the client may still send."""
        self.down.tunnel_eof()
        self._half_close()

    def _half_close(self) -> None:
        if self.state is TunnelState.OPEN:
            self.state = TunnelState.HALF_CLOSED
        elif self.state is TunnelState.HALF_CLOSED:
            self._close()

    def _close(self) -> None:
        if self.state is not TunnelState.CLOSED:
            self.state = TunnelState.CLOSED
            self.owner.tunnel_ended()
