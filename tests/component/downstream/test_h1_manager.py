"""The HTTP/1.1 connection manager with the router and the pool behind it, on both parsers: pipelined requests
answered in order, the request/next-cycle loop, flow control both ways, tunnels with half-close both ways,
100-continue, and local replies that close when the request body was not read."""

from __future__ import annotations

from ..clients import H1Client
from ..memory import MemoryNetwork, MemoryTransport, Run
from ..proxy import egress_snapshot, patterned, running_proxy, serve_h1
from ..upstreams import H1App, H1Upstream, Hold, Respond, Switch

GET = b"GET %s HTTP/1.1\r\nHost: backend.apps.local\r\n\r\n"
MIB = 1 << 20


def held(app: H1App) -> H1Upstream:
    (connection,) = app.held()
    return connection


# ------------------------------------------------------------------------------------- request cycle


def test_pipelined_requests_are_answered_in_order(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"".join(GET % p for p in (b"/1", b"/2", b"/3")))  # one write, three requests
            for served in (1, 2, 3):
                await net.settle()
                assert app.paths == [f"/{i}" for i in range(1, served + 1)]  # one at a time
                held(app).respond(Respond(200, f"answer {served}".encode()))
            await net.settle()

            assert [r.body for r in client.responses()] == [b"answer 1", b"answer 2", b"answer 3"]
            assert len(app.connections) == 1  # and the upstream connection was reused for each

    run(scenario())


def test_a_keep_alive_connection_serves_request_after_request(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(200, b"ok"))
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = proxy.h1()
            for count in range(1, 4):
                client.send(GET % b"/again")
                await net.settle()
                assert len(client.responses()) == count

            http = proxy.listener.http_stats
            assert (http.downstream_cx_total, http.downstream_rq_completed, http.downstream_rq_active) == (
                1,
                3,
                0,
            )
            assert not client.eof and len(app.connections) == 1

    run(scenario())


# -------------------------------------------------------------------------------------------- flow control


def test_a_slow_client_pauses_the_upstream_read(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        body = patterned(4 * MIB)
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            toward_client = proxy.connect(client)
            client.send(GET % b"/big")
            await net.settle()
            client.pause_reading()  # the application stops reading
            upstream = held(app)
            upstream.send_head(200, content_length=len(body))
            upstream.send_data(body)
            await net.settle()

            (toward_upstream,) = net.connector.transports
            assert not toward_upstream.is_reading()  # the proxy stopped reading the upstream...
            assert upstream.write_pauses == 1  # ...so the upstream's own buffer filled
            assert toward_client.get_write_buffer_size() < 256 * 1024  # the proxy holds little
            assert upstream_pending(upstream) > 3 * MIB  # the rest waits at the upstream
            client.resume_reading()
            upstream.end()
            await net.settle()

            assert client.response().body == body
            assert toward_upstream.is_reading()

    run(scenario())


def test_a_slow_upstream_pauses_the_client_read(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        body = patterned(4 * MIB)
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            from_client = proxy.connect(client)
            client.send(
                b"PUT /big HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            await net.settle()
            (upstream,) = app.connections
            upstream.pause_reading()  # the upstream application stops reading
            client.send(body)
            await net.settle()

            (toward_upstream,) = net.connector.transports
            assert not from_client.is_reading()  # the proxy stopped reading the client
            assert toward_upstream.get_write_buffer_size() < 256 * 1024
            assert client_pending(client) > 3 * MIB  # the rest waits at the client
            upstream.resume_reading()
            await net.settle()

            assert app.requests[0].body == body
            held(app).respond(Respond(200, b"stored"))
            await net.settle()
            assert client.response().body == b"stored"

    run(scenario())


def upstream_pending(upstream: H1Upstream) -> int:
    assert upstream.transport is not None
    return upstream.transport.get_write_buffer_size()


def client_pending(client: H1Client) -> int:
    assert client.transport is not None
    return client.transport.get_write_buffer_size()


# ------------------------------------------------------------------------------------------------- tunnels

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: backend.apps.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def open_tunnel(net: MemoryNetwork, client: H1Client, app: H1App) -> H1Upstream:
    client.send(UPGRADE)
    await net.settle()
    assert client.received.startswith(b"HTTP/1.1 101 "), bytes(client.received)
    client.received.clear()
    (upstream,) = app.connections
    assert upstream.tunnel
    return upstream


def test_a_tunnel_forwards_the_clients_half_close_and_keeps_the_other_way_open(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Switch())
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            toward_client = proxy.connect(client)
            upstream = await open_tunnel(net, client, app)
            client.send(b"ping")
            await net.settle()
            assert bytes(upstream.tunnel_bytes) == b"ping"

            client.write_eof()
            await net.settle()
            assert upstream.eof and not upstream.lost  # half-closed, not closed
            upstream.send(b"still talking")
            await net.settle()
            assert bytes(client.received) == b"still talking"
            assert not toward_client.is_closing()

            upstream.write_eof()
            await net.settle()
            assert client.eof and toward_client.is_closing()  # both ways done: the proxy closes...
            (toward_upstream,) = net.connector.transports
            assert toward_upstream.is_closing()  # ...both connections
            summary = proxy.observer.last
            assert (summary.response_code, summary.bytes_received, summary.bytes_sent) == (101, 4, 13)
            assert proxy.listener.http_stats.downstream_cx_upgrades_total == 1

    run(scenario())


def test_a_tunnel_forwards_the_upstreams_half_close_and_keeps_the_other_way_open(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Switch())
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            toward_client = proxy.connect(client)
            upstream = await open_tunnel(net, client, app)
            upstream.send(b"bye")
            upstream.write_eof()
            await net.settle()
            assert (bytes(client.received), client.eof) == (b"bye", True)
            assert not toward_client.is_closing()

            client.send(b"one more thing")
            await net.settle()
            assert bytes(upstream.tunnel_bytes) == b"one more thing"
            client.write_eof()
            await net.settle()
            assert upstream.eof and toward_client.is_closing()

    run(scenario())


# --------------------------------------------------------------------------------------- 100-continue


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(201, b"created"))
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(
                b"POST /upload HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            await net.settle()
            interim = bytes(client.received)  # a 100 and nothing else yet
            assert interim.startswith(b"HTTP/1.1 100") and interim.endswith(b"\r\n\r\n"), interim
            assert interim.count(b"HTTP/1.1") == 1
            client.send(b"hello")
            await net.settle()

            reply = client.response()
            assert (reply.informational, reply.status, reply.body) == ((100,), 201, b"created")
            assert app.requests[0].body == b"hello"
            assert "expect" not in app.requests[0].headers  # hop by hop: the proxy answered it

    run(scenario())


# ------------------------------------------------------------------------------------------ local replies


def test_a_local_reply_closes_the_connection_when_the_body_was_not_read(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            toward_client = proxy.connect(client)
            client.send(b"POST / HTTP/1.1\r\nHost: unknown.apps.local\r\nContent-Length: 100\r\n\r\npartial")
            await net.settle()

            reply = client.response()
            assert (reply.status, reply.header("connection")) == (404, "close")
            assert client.eof and not toward_client.is_closing()  # a FIN after the reply: a delayed close
            client.send(b"the rest of the body")  # dropped, not answered with a reset
            await net.settle()
            assert not client.lost
            client.close()  # the client's EOF ends the delayed close
            await net.settle()
            assert toward_client.is_closing()

    run(scenario())


def test_a_local_reply_without_a_body_to_skip_keeps_the_connection(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"ok"))
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = H1Client()
            toward_client: MemoryTransport = proxy.connect(client)
            client.get("/", host="unknown.apps.local")
            await net.settle()
            assert client.response().status == 404 and client.response().header("connection") is None
            client.get("/")
            await net.settle()

            assert [r.status for r in client.responses()] == [404, 200]
            assert not toward_client.is_closing()

    run(scenario())


def test_after_an_early_response_the_connection_serves_the_next_request(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    """The upstream answers before the request body has arrived (an early 413): the proxy reads the rest
    of the body and then serves the next request on the same connection."""

    async def scenario() -> None:
        serve_h1(net, Respond(413, b"too big", early=True), Respond(200, b"next"))
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"PUT /big HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: 10\r\n\r\n")
            await net.settle()
            assert client.response().status == 413
            client.send(b"0123456789")
            client.send(GET % b"/next")
            await net.settle()

            assert [r.body for r in client.responses()] == [b"too big", b"next"]

    run(scenario())
