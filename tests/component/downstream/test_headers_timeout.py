"""The request-headers timeout (issue 14, defect 2), on the fake clock: a request head still incomplete
`MESHPROXY_REQUEST_HEADERS_TIMEOUT_S` (60 s) after its first byte gets Envoy's 408 "request header timeout"
and a close (HTTP/2: a GOAWAY and a close), counted `http.<prefix>.downstream_rq_header_timeout`. Nothing
else is timed by it: an idle keep-alive connection, a slow body, an idle HTTP/2 connection. Meanwhile a head
is bounded by the head limits (431 past 60 KiB; tests/component/http/), so a slow client holds little.

The server sweeps once a second (`HttpListener.expire_slow_heads`); the tests call it as the sweep would.
"""

from __future__ import annotations

from h2.connection import H2Connection

from ..memory import MemoryNetwork, Peer, Run
from ..proxy import HOST, SERVICE, ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import Hold, Respond

TIMEOUT_S = 60.0
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def sweep(proxy: ComponentProxy, net: MemoryNetwork) -> int:
    expired = proxy.listener.expire_slow_heads(net.clock.now(), TIMEOUT_S)
    await net.settle()
    return expired


def header_timeouts(proxy: ComponentProxy) -> int:
    return proxy.dataplane.store.http_conn_manager("egress").downstream_rq_header_timeout


def test_a_head_dribbled_in_for_a_minute_gets_408_and_a_close(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"GET /slow HTTP/1.1\r\n")
            for second in range(10, 60, 10):  # a header byte every ten seconds
                await net.advance(10.0)
                client.send(b"X")
                assert await sweep(proxy, net) == 0, second
            await net.advance(10.0)
            assert await sweep(proxy, net) == 1
            reply = client.response()
            assert (reply.status, reply.body) == (408, b"request header timeout")
            assert reply.header("connection") == "close" and client.eof
            assert header_timeouts(proxy) == 1

    run(scenario())


def test_idle_keep_alive_connections_and_slow_bodies_are_not_timed(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(200, b"ok"), Hold(), address=HOST)
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            idle = proxy.h1()
            idle.get("/", SERVICE)  # served, then idle between requests
            slow_body = proxy.h1()
            slow_body.send(
                f"POST /upload HTTP/1.1\r\nHost: {SERVICE}\r\nContent-Length: 100\r\n\r\n".encode()
            )
            for _ in range(13):
                await net.advance(10.0)
                slow_body.send(b"x")  # the body trickles; the head was complete long ago
                assert await sweep(proxy, net) == 0
            assert idle.response().status == 200 and not idle.eof
            assert len(app.requests) == 1 and not slow_body.eof
            assert header_timeouts(proxy) == 0

    run(scenario())


def test_an_http2_frame_dribbled_in_with_no_stream_open_gets_a_goaway(
    run: Run, net: MemoryNetwork, h2_codec: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            settings = H2Connection()
            settings.initiate_connection()
            idle, slow = Peer(), Peer()
            proxy.connect(idle)
            proxy.connect(slow)
            idle.send(settings.data_to_send())  # preface and SETTINGS: complete, then nothing
            slow.send(
                H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x00\x20\x01"
            )  # half a HEADERS
            await net.advance(TIMEOUT_S - 1.0)
            assert await sweep(proxy, net) == 0
            await net.advance(1.0)
            assert await sweep(proxy, net) == 1
            assert slow.eof and not idle.eof
            assert b"\x00\x00\x08\x07" in bytes(slow.received)  # a GOAWAY frame header (8-byte payload)
            assert header_timeouts(proxy) == 1

    run(scenario())
