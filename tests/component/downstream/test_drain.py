"""What a drain does to client connections (issue 14, defect 8), on the fake clock: the server's sweep calls
`HttpListener.drain_connections` while the proxy drains (every second, and at once on SIGTERM) and in its
last seconds (`Server._shutdown`); the tests call it as the server does.

- HTTP/1.1: every response of the drain says `Connection: close` and the connection closes after it; a
  connection idle between requests is closed once quiet for a second (it has been idle since before the
  drain: an active client's next request would get the close); a connection still to send its first
  request is left to send it (at exit, for FRESH_GRACE_S at most, then a delayed close), as are connections
  with a request in flight.
- HTTP/2: a connection is told first, with a GOAWAY naming the last stream it will serve, and closed once
  its streams are done (on a later sweep if it stays quiet); a stream opened after the GOAWAY is refused
  (REFUSED_STREAM: the client may retry it safely) rather than lost with the connection.
"""

from __future__ import annotations

from h2.errors import ErrorCodes

from meshproxy.dataplane import ServerState
from meshproxy.net.delayed_close import DELAYED_CLOSE_S
from meshproxy.server import FRESH_GRACE_S

from ..clients import H2Client
from ..memory import MemoryNetwork, Run
from ..proxy import HOST, SERVICE, ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import Hold, Respond


async def drain(proxy: ComponentProxy, net: MemoryNetwork, idle_for: float, fresh_for: float | None) -> int:
    closed = proxy.listener.drain_connections(net.clock.now(), idle_for, fresh_for)
    await net.settle()
    return closed


def test_http1_idle_keep_alive_connections_close_fresh_and_busy_ones_are_served(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(200, b"before"), Hold(), Respond(200, b"fresh"), address=HOST)
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            idle = proxy.h1()
            idle.get("/before", SERVICE)  # answered, kept alive, then idle
            busy = proxy.h1()
            busy.get("/in-flight", SERVICE)
            await net.settle()
            fresh = proxy.h1()  # connected, its request not sent yet
            proxy.dataplane.set_state(ServerState.DRAINING)
            await net.advance(0.5)
            assert await drain(proxy, net, 1.0, None) == 0  # idle for less than a second: not yet
            await net.advance(0.5)
            assert await drain(proxy, net, 1.0, None) == 1
            assert idle.eof and idle.response().header("connection") is None  # kept alive before the drain
            assert not busy.eof and not fresh.eof

            fresh.get("/fresh", SERVICE)
            (held,) = app.held()
            held.respond(Respond(200, b"in flight"))
            await net.settle()
            for client, body in ((busy, b"in flight"), (fresh, b"fresh")):
                reply = client.response()
                assert (reply.body, reply.header("connection")) == (body, "close")
                assert client.eof  # closed after its response
            # busy and fresh read their requests whole and were told to close: closed at once. The idle one,
            # closed by the drain while its client may be sending, is half-closed (a delayed close) until its
            # client closes too, or for DELAYED_CLOSE_S
            assert proxy.listener.open_connections == 1
            await net.advance(DELAYED_CLOSE_S)
            assert proxy.listener.open_connections == 0

    run(scenario())


def test_at_exit_a_fresh_connection_gets_the_grace_to_send_its_request(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            silent = proxy.h1()
            proxy.dataplane.set_state(ServerState.DRAINING)
            await net.advance(FRESH_GRACE_S - 0.1)
            assert await drain(proxy, net, 0.0, FRESH_GRACE_S) == 0
            await net.advance(0.1)
            assert await drain(proxy, net, 0.0, FRESH_GRACE_S) == 1 and silent.eof
            silent.send(b"GET / HTTP/1.1\r\n\r\n")  # too late: dropped by the delayed close, not reset
            await net.advance(DELAYED_CLOSE_S)
            assert not silent.lost and proxy.listener.open_connections == 0

    run(scenario())


def test_http2_connections_get_a_goaway_first_and_close_on_a_later_sweep(
    run: Run, net: MemoryNetwork, h2_codec: str
) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"served"), address=HOST)
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            quiet, crossing = H2Client(), H2Client()
            for client in (quiet, crossing):
                proxy.connect(client)
                client.request("/first", SERVICE)
            await net.advance(2.0)
            proxy.dataplane.set_state(ServerState.DRAINING)
            assert proxy.listener.drain_connections(net.clock.now(), 1.0, None) == 0  # GOAWAYs go out
            late = crossing.request("/late", SERVICE)  # sent before the GOAWAY arrives: they cross
            await net.settle()
            assert quiet.goaway == crossing.goaway == 1
            assert crossing.raw_resets == {late: ErrorCodes.REFUSED_STREAM}  # not served: retry-safe
            assert crossing.lost  # nothing left in flight there: closed
            assert not quiet.lost  # told, and given until the next sweep
            assert await drain(proxy, net, 1.0, None) == 1
            assert quiet.lost

    run(scenario())
