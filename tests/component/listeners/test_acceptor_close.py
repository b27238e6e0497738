"""The end of a listener (net/listen.py `Acceptor.close`): connections queued on the listening socket are
taken and served, and from the moment `close` returns a new connection is refused, never accepted by the
kernel and reset later (the loop's server holds a duplicate of the listening socket: it must be closed with
it). Real sockets on loopback, on uvloop, the connect made before the loop turns again."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from meshproxy.net.listen import Acceptor, listening_socket

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


class Served(asyncio.Protocol):
    made: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Served.made.append(transport)


def refused_at_once(port: int) -> bool:
    """A blocking connect from the loop's own thread, before the loop turns again."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(1.0)
    try:
        client.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        client.close()
    return False


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
