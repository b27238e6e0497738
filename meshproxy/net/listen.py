"""Listening sockets for the proxy's listeners (ingress, egress, gateway ports, admin), and their acceptors.

An `Acceptor` serves one listening socket from the running event loop. Two things a plain
`loop.create_server(sock=...)` does not give:

- pausing without closing: the loop serves a duplicate of the socket's descriptor, so closing that server
  stops accepting while the original keeps listening and the kernel keeps queueing new connections (up to
  the backlog) until accepting resumes (out of file descriptors, issue 14);
- closing without resets: the kernel resets every connection still queued on a listening socket when it is
  closed (a client whose connect succeeded would lose its request), so `close` first accepts what is queued
  and hands it to the loop, then closes (the drain at exit).

`create_server(sock=...)` calls listen() again with its own backlog (100 by default, in asyncio and
uvloop): the acceptor passes ours, Envoy's 4096 (`tcp_backlog_size`), or bursts of connects would stall in
SYN retransmits.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import Callable

LISTEN_BACKLOG = 4096  # Envoy's default (tcp_backlog_size); the kernel caps it at net.core.somaxconn

ProtocolFactory = Callable[[], asyncio.Protocol]


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
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class AcceptState(enum.Enum):
    CREATED = "created"
    ACCEPTING = "accepting"
    PAUSED = "paused"  # listening, connections wait in the kernel's queue
    CLOSED = "closed"


class Acceptor:
    """Accepts connections on `sock` (a listening socket, see `listening_socket`) with `factory`'s
    protocols, on the running loop."""

    __slots__ = ("factory", "server", "sock", "state")

    def __init__(self, sock: socket.socket, factory: ProtocolFactory) -> None:
        self.sock = sock
        self.factory = factory
        self.server: asyncio.Server | None = None
        self.state = AcceptState.CREATED

    def __repr__(self) -> str:
        return f"<Acceptor {self.sock.getsockname() if self.sock.fileno() >= 0 else '-'} {self.state.value}>"

    async def start(self) -> None:
        """Accept (again, after `pause`)."""
        if self.state is AcceptState.ACCEPTING or self.state is AcceptState.CLOSED:
            return
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.factory, sock=self.sock.dup(), backlog=LISTEN_BACKLOG)
        self.state = AcceptState.ACCEPTING

    def pause(self) -> None:
        """Stop accepting; the socket keeps listening, so new connections wait in the backlog."""
        if self.state is not AcceptState.ACCEPTING:
            return
        self.state = AcceptState.PAUSED
        self._stop_server()

    async def close(self) -> int:
        """Stop accepting, take the connections already queued (they are served like any other), then close
        the socket. Returns how many were taken from the queue."""
        if self.state is AcceptState.CLOSED:
            return 0
        self.state = AcceptState.CLOSED
        self._stop_server()
        loop = asyncio.get_running_loop()
        queued: list[socket.socket] = []
        while True:
            try:
                connection, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # out of descriptors, aborted: what is left is reset by the close below
                break
            queued.append(connection)
        self.sock.close()  # at once: a connection completing now is refused, not reset after its connect
        for connection in queued:
            connection.setblocking(False)
            with contextlib.suppress(OSError):
                await loop.connect_accepted_socket(self.factory, connection)
        return len(queued)

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
