"""The connector seam: the one way the proxy opens a connection to an upstream host.

Pools and the TCP proxy call `Connector.connect` with the protocol object that will own the connection; the
production `LoopConnector` asks the event loop for a TCP connection, the component tests give an in-memory one
(tests/component/memory.py) that connects the protocol to a fake upstream. Foreign exceptions (OSError,
TimeoutError) are translated here into one `ConnectFailure`, which the callers map to Envoy's `UF`. TLS
origination is a `Connector` too (net/tls_connector.py): it connects through the one below it, then runs the
handshake before the protocol sees a transport, so pools and the TCP proxy never know TLS is there.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class ConnectFailure(Exception):
    """The connection could not be opened: refused, unreachable, or not done within the connect timeout."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


class Connector(Protocol):
    async def connect(self, protocol: asyncio.Protocol, host: str, port: int, timeout: float) -> None:
        """Open a TCP connection to `host:port` owned by `protocol` (its `connection_made` has run when this
        returns). Raises `ConnectFailure`."""
        ...


class LoopConnector:
    """TCP connections from the running event loop."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<LoopConnector>"

    async def connect(self, protocol: asyncio.Protocol, host: str, port: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: protocol, host, port)
        except TimeoutError as exc:
            raise ConnectFailure(f"connect timeout after {timeout}s", timed_out=True) from exc
        except OSError as exc:
            raise ConnectFailure(exc.strerror or str(exc)) from exc


LOOP_CONNECTOR = LoopConnector()
