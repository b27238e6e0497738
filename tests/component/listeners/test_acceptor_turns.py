"""How many connections a listener takes per turn of the loop (net/listen.py `ACCEPTS_PER_TURN`).

libuv accepts one connection per listening descriptor per turn; a proxy listener's acceptor registers several
duplicates of its socket, so a burst of connects is taken several at a time (new-conn-64k: 1.0 epoll waits per
request before, 0.37 after). Real sockets on loopback, on uvloop: the connects complete in the kernel's queue
before the loop turns, then a callback that re-schedules itself once per turn numbers the turns.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from meshproxy.net.listen import ACCEPTS_PER_TURN, Acceptor, listening_socket

from .connects import refused_at_once

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


class TurnCounter:
    """Counts the loop's turns: `call_soon` callbacks run once per turn, so one that re-schedules itself
    advances by one each turn."""

    def __init__(self) -> None:
        self.turn = 0
        self.running = True

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.turn += 1
        if self.running:
            asyncio.get_running_loop().call_soon(self._tick)


class Recorder(asyncio.Protocol):
    def __init__(
        self, counter: TurnCounter, turns: list[int], transports: list[asyncio.BaseTransport]
    ) -> None:
        self.counter = counter
        self.turns = turns
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.turns.append(self.counter.turn)
        self.transports.append(transport)


def test_a_burst_of_connections_is_taken_several_per_turn(run: Run[Any]) -> None:
    burst = 2 * ACCEPTS_PER_TURN

    async def scenario() -> list[int]:
        sock = listening_socket("127.0.0.1", 0, reuse_port=False)
        port = sock.getsockname()[1]
        counter = TurnCounter()
        turns: list[int] = []
        transports: list[asyncio.BaseTransport] = []
        acceptor = Acceptor(sock, lambda: Recorder(counter, turns, transports), ACCEPTS_PER_TURN)
        await acceptor.start()
        # Blocking connects from the loop's thread: the loop does not turn, the kernel queues them all.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=2.0) for _ in range(burst)]
        counter.start()
        for _ in range(100):
            if len(turns) == burst:
                break
            await asyncio.sleep(0.01)
        counter.running = False
        await acceptor.close()
        for transport in transports:
            transport.close()
        for client in clients:
            client.close()
        await asyncio.sleep(0)
        return turns

    turns = run(scenario())
    assert len(turns) == burst
    per_turn = {turn: turns.count(turn) for turn in turns}
    assert max(per_turn.values()) == ACCEPTS_PER_TURN, per_turn  # one per turn before
    assert len(per_turn) == 2, per_turn


def test_closing_an_acceptor_with_several_descriptors_refuses_at_once(run: Run[Any]) -> None:
    """Every duplicate the loop serves is closed with the socket: a connect after `close` is refused, not
    queued on a descriptor still open and reset later."""

    async def scenario() -> bool:
        sock = listening_socket("127.0.0.1", 0, reuse_port=False)
        port = sock.getsockname()[1]
        acceptor = Acceptor(sock, asyncio.Protocol, ACCEPTS_PER_TURN)
        await acceptor.start()
        await acceptor.close()
        return refused_at_once(port)

    assert run(scenario())
