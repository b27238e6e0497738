"""How a sniffed connection reaches its HTTP connection manager (listeners/dispatch.py).

Once uvloop is reading a connection, `transport.set_protocol` stops and restarts reading: one more epoll
change, submitted with one more io_uring_enter, for every new connection on the egress port (strace of one
new-conn-64k request: two io_uring_enter before, one after). So a connection whose first bytes were sniffed
keeps the dispatcher as its protocol, and the dispatcher passes every call on to the manager. These tests pin
that, and that every call a transport makes reaches the manager: data, the peer's EOF, write back-pressure,
the loss.
"""

from __future__ import annotations

from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.listeners.dispatch import ConnectionDispatcher

from ..clients import H1Client
from ..memory import MemoryNetwork, Run
from ..proxy import SERVICE, egress_snapshot, running_proxy, serve_h1
from ..upstreams import Respond

BACKEND_PORT = ("10.0.5.5", 8080)


def test_a_sniffed_connection_keeps_the_dispatcher_and_is_served_through_it(
    run: Run, net: MemoryNetwork
) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"one"), Respond(200, b"two"))
        async with running_proxy(net, egress_snapshot()) as proxy:
            client = H1Client()
            proxy_end = proxy.connect(client, original_destination=BACKEND_PORT)
            client.get("/", SERVICE)
            await net.advance(1.0)
            dispatcher = proxy_end.get_protocol()
            assert isinstance(dispatcher, ConnectionDispatcher)  # set_protocol was not called
            assert isinstance(dispatcher.manager, Http1ConnectionManager)
            client.get("/", SERVICE)  # keep-alive: the second request goes through the dispatcher too
            await net.advance(1.0)
            assert [r.body for r in client.responses()] == [b"one", b"two"]
            assert len(proxy.listener.connections) == 1

            client.write_eof()  # the client's EOF reaches the manager, which closes
            await net.advance(1.0)
            assert client.eof
            await net.settle()
            assert not proxy.listener.connections  # connection_lost reached the manager
            assert not proxy.listener.pending

    run(scenario())


def test_write_back_pressure_reaches_the_manager_of_a_sniffed_connection(
    run: Run, net: MemoryNetwork
) -> None:
    """A client that stops reading a large response: the transport's pause_writing must reach the manager
    (which stops reading the upstream); without it the proxy buffers the whole body for the client."""

    body = b"x" * (1 << 20)

    async def scenario() -> None:
        serve_h1(net, Respond(200, body))
        async with running_proxy(net, egress_snapshot()) as proxy:
            client = H1Client()
            proxy_end = proxy.connect(client, original_destination=BACKEND_PORT, high_water=16 * 1024)
            client.pause_reading()
            client.get("/", SERVICE)
            await net.advance(1.0)
            buffered = proxy_end.get_write_buffer_size()
            assert 0 < buffered < len(body) // 2, buffered  # paused well before the whole body

            client.resume_reading()
            await net.advance(1.0)
            response = client.response()
            assert response.status == 200 and response.body == body

    run(scenario())
