"""Listening sockets for the proxy's listeners (ingress, egress, gateway ports, admin), and their acceptors.

An `Acceptor` serves one listening socket from the running event loop. Two things a plain
`loop.create_server(sock=...)` does not give:

- pausing without closing: the loop serves a duplicate of the socket's descriptor, so closing that server
  stops accepting while the original keeps listening and the kernel keeps queueing new connections (up to
  the backlog) until accepting resumes (out of file descriptors, issue 14);
- closing without resets: the kernel resets every connection still queued on a listening socket when it is
  closed (a client whose connect succeeded would lose its request), and every handshake it has answered but
  not yet seen completed (the client's ACK, or its first data, then meets no listener). So `close` first
  stops new handshakes (`refuse_handshakes`), accepts what is queued, lets the handshakes in flight complete
  (HANDSHAKE_SETTLE_S), accepts those, hands everything to the loop and only then closes (the drain at exit).
  A client whose SYN arrives in that window gets no answer: its kernel sends the SYN again a second later and
  is refused then (or, with SO_REUSEPORT, served by a worker still listening), which is a clean end.

`create_server(sock=...)` calls listen() again with its own backlog (100 by default, in asyncio and
uvloop): the acceptor passes ours, Envoy's 4096 (`tcp_backlog_size`), or bursts of connects would stall in
SYN retransmits.

libuv (1.52, inside uvloop) accepts one connection per listening descriptor per turn of the loop. Under a
stream of new connections that costs a turn (an epoll wait, an io_uring submission) per connection, and the
connections behind it wait in the backlog: new-conn-64k made 1.0 epoll waits per request against Envoy's 0.23
(Envoy accepts until EAGAIN). A proxy listener's acceptor therefore registers `ACCEPTS_PER_TURN` duplicates
of the socket's descriptor with the loop, each accepting one connection per turn; the price is an accept(2)
that finds the queue empty for each of the others when a lone connection arrives.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import enum
import socket
import struct
import sys
from collections.abc import Callable

LISTEN_BACKLOG = 4096  # Envoy's default (tcp_backlog_size); the kernel caps it at net.core.somaxconn
ACCEPTS_PER_TURN = 4  # connections a proxy listener may accept per turn of the loop (see the docstring)
HANDSHAKE_SETTLE_S = 0.05  # at close: time for handshakes already answered to complete (many round trips)

_SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h; the socket module does not name it
# Classic BPF, run by the kernel on every segment that reaches the listening socket (offset 0 is the TCP
# header): a segment with SYN and without ACK (a new handshake) is dropped, everything else passes, so the
# ACKs completing handshakes already answered still reach their pending connections.
_REFUSE_NEW_HANDSHAKES = (
    (0x30, 0, 0, 13),  # ldb [13]: the flags byte
    (0x54, 0, 0, 0x12),  # and #0x12: SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02 (SYN alone)? next : skip one
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole segment
)
# struct sock_filter[]; module-level, so it outlives the setsockopt that passes its address (compiled, a
# local would be freed after its last use, before the kernel reads it)
_REFUSE_PROGRAM = array.array("B", b"".join(struct.pack("HBBI", *op) for op in _REFUSE_NEW_HANDSHAKES))

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


def refuse_handshakes(sock: socket.socket) -> bool:
    """Make the kernel drop new connection requests to listening socket `sock` (SYNs) while handshakes it
    has already answered can still complete. False where socket filters are not available. Connections
    accepted from `sock` afterwards inherit the filter, which only ever drops a bare SYN."""
    if sys.platform != "linux":
        return False
    address, _ = _REFUSE_PROGRAM.buffer_info()
    try:  # struct sock_fprog { unsigned short len; struct sock_filter *filter; }; the kernel copies it
        sock.setsockopt(
            socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("HP", len(_REFUSE_NEW_HANDSHAKES), address)
        )
    except OSError:
        return False
    return True


class AcceptState(enum.Enum):
    CREATED = "created"
    ACCEPTING = "accepting"
    PAUSED = "paused"  # listening, connections wait in the kernel's queue
    CLOSED = "closed"


class Acceptor:
    """Accepts connections on `sock` (a listening socket, see `listening_socket`) with `factory`'s
    protocols, on the running loop."""

    __slots__ = ("accepts_per_turn", "factory", "servers", "sock", "state")

    def __init__(self, sock: socket.socket, factory: ProtocolFactory, accepts_per_turn: int = 1) -> None:
        self.sock = sock
        self.factory = factory
        self.accepts_per_turn = accepts_per_turn
        self.servers: list[asyncio.Server] = []  # one per duplicate descriptor the loop serves
        self.state = AcceptState.CREATED

    def __repr__(self) -> str:
        return f"<Acceptor {self.sock.getsockname() if self.sock.fileno() >= 0 else '-'} {self.state.value}>"

    async def start(self) -> None:
        """Accept (again, after `pause`)."""
        if self.state is AcceptState.ACCEPTING or self.state is AcceptState.CLOSED:
            return
        loop = asyncio.get_running_loop()
        state = self.state
        servers = [
            await loop.create_server(self.factory, sock=self.sock.dup(), backlog=LISTEN_BACKLOG)
            for _ in range(self.accepts_per_turn)
        ]
        if self.state is not state:  # paused or closed meanwhile
            for server in servers:
                server.close()
            return
        self.servers = servers
        self.state = AcceptState.ACCEPTING

    def pause(self) -> None:
        """Stop accepting; the socket keeps listening, so new connections wait in the backlog."""
        if self.state is not AcceptState.ACCEPTING:
            return
        self.state = AcceptState.PAUSED
        self._stop_server()

    async def close(self) -> int:
        """Stop accepting, refuse new handshakes, take the connections already queued and those whose
        handshake completes within HANDSHAKE_SETTLE_S (they are served like any other), then close the
        socket. Returns how many were taken from the queue."""
        if self.state is AcceptState.CLOSED:
            return 0
        self.state = AcceptState.CLOSED
        self._stop_server()
        loop = asyncio.get_running_loop()
        settle = refuse_handshakes(self.sock)
        queued = self._take_queued()
        if settle:
            await asyncio.sleep(HANDSHAKE_SETTLE_S)
            queued += self._take_queued()
        self.sock.close()
        for connection in queued:
            connection.setblocking(False)
            with contextlib.suppress(OSError):
                await loop.connect_accepted_socket(self.factory, connection)
        return len(queued)

    def _take_queued(self) -> list[socket.socket]:
        queued: list[socket.socket] = []
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:  # EAGAIN: the queue is empty; out of descriptors: the rest is reset by the close
                break
            queued.append(connection)
        return queued

    def _stop_server(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
