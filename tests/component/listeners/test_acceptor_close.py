"""The end of a listener (net/listen.py `Acceptor.close`): connections queued on the listening socket are
taken and served, a handshake the kernel answered before the close completes and is served, a new connection
during the close gets no answer (then a refusal), and from the moment `close` returns a new connection is
refused, never accepted by the kernel and reset later (the loop's server holds a duplicate of the listening
socket: it must be closed with it). Real sockets on loopback, on uvloop, the connect made before the loop
turns again."""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from meshproxy.net.listen import Acceptor, listening_socket

from .connects import refused_at_once

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


class Served(asyncio.Protocol):
    made: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Served.made.append(transport)


def test_a_connection_after_close_is_refused_not_queued(run: Run[Any]) -> None:
    async def scenario() -> tuple[int, bool]:
        sock = listening_socket("127.0.0.1", 0, reuse_port=False)
        port = sock.getsockname()[1]
        acceptor = Acceptor(sock, Served)
        await acceptor.start()
        queued = socket.create_connection(("127.0.0.1", port))  # waits in the queue: taken by close
        taken = await acceptor.close()
        refused = refused_at_once(port)
        queued.close()
        for transport in Served.made:
            transport.close()
        await asyncio.sleep(0)
        return taken, refused

    taken, refused = run(scenario())
    assert refused
    assert taken <= 1  # the loop may have taken the queued one itself before close: either way it is served
    assert len(Served.made) == 1


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.close()


def connecting(port: int) -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex(("127.0.0.1", port))
    return client


def test_a_handshake_in_flight_at_close_is_served_and_a_new_one_refused_cleanly(run: Run[Any]) -> None:
    """TCP_DEFER_ACCEPT holds a connection in the kernel's handshake table (not yet in the accept queue) until
    its first data: the client's connect has returned, the listener has not seen the connection. That data
    arrives while `close` runs. Before, the listening socket was already gone and the client got a reset;
    now the handshake completes inside HANDSHAKE_SETTLE_S and the connection is served. A connect started
    during the close is not answered (not accepted, not reset), and is refused once its SYN is sent again."""

    async def scenario() -> tuple[bytes, bool, str]:
        sock = listening_socket("127.0.0.1", 0, reuse_port=False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        port = sock.getsockname()[1]
        acceptor = Acceptor(sock, Echo)
        await acceptor.start()
        held = socket.create_connection(("127.0.0.1", port), timeout=5.0)  # established for the client only
        await asyncio.sleep(0.05)  # the loop turns: nothing to accept yet
        closing = asyncio.ensure_future(acceptor.close())
        await asyncio.sleep(0)  # close has begun (and waits for handshakes to settle)
        late = connecting(port)
        held.sendall(b"request")  # completes the handshake
        await closing
        _, writable, _ = select.select([], [late], [], 0)
        answered_late = bool(writable)  # a connect during the close must not have completed (or failed)
        held.setblocking(False)
        try:
            reply = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(held, 100), 5.0)
        except ConnectionResetError:
            reply = b"reset"
        held.close()
        deadline = time.monotonic() + 4.0  # the client's kernel sends the SYN again after a second
        outcome = "no answer"
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            error = late.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                outcome = errno.errorcode.get(error, str(error))
                break
        late.close()
        return reply, answered_late, outcome

    reply, answered_late, outcome = run(scenario())
    assert reply == b"request"
    assert not answered_late
    assert outcome == "ECONNREFUSED"
