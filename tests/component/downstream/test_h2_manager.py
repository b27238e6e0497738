"""The HTTP/2 connection manager (h2c from the h2 library's client, both proxy codecs): flow control end to
end on a stream in both directions (RFC 9113 §5.2: windows reopened only as the other side takes the bytes),
and the GOAWAY a draining proxy sends after a response (RFC 9113 §6.8)."""

from __future__ import annotations

from h2.errors import ErrorCodes

from meshproxy.dataplane import ServerState

from ..clients import H2Client
from ..memory import MemoryNetwork, Run
from ..proxy import egress_snapshot, patterned, running_proxy, serve_h1
from ..upstreams import Hold, Respond

MIB = 1 << 20
CLIENT_WINDOW = 65535


def test_a_slow_reader_holds_the_upstream_back(run: Run, net: MemoryNetwork, h2_codec: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        body = patterned(4 * MIB)
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            client = proxy.h2(window=CLIENT_WINDOW)
            client.auto_ack = False  # reads nothing: its windows stay as they are
            sid = client.request("/big")
            await net.settle()
            (upstream,) = app.held()
            upstream.send_head(200, content_length=len(body))
            upstream.send_data(body)
            await net.settle()

            assert len(client.streams[sid].body) == CLIENT_WINDOW  # what its window allows, no more
            (toward_upstream,) = net.connector.transports
            assert not toward_upstream.is_reading() and upstream.write_pauses == 1
            assert upstream.transport is not None
            assert upstream.transport.get_write_buffer_size() > 3 * MIB  # the body waits at the upstream
            client.auto_ack = True
            client.ack(sid)
            upstream.end()
            await net.settle()

            assert client.streams[sid].ended and bytes(client.streams[sid].body) == body

    run(scenario())


def test_a_slow_upstream_holds_the_client_back(run: Run, net: MemoryNetwork, h2_codec: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(200, b"stored"))
        body = patterned(8 * MIB)
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            client = proxy.h2()
            sid = client.request("/big", method="PUT", end=False)
            await net.settle()
            (upstream,) = app.connections
            upstream.pause_reading()  # the upstream application stops reading
            sent = await send_what_the_window_allows(net, client, sid, body, 0)
            # the proxy stopped acknowledging: the client was held to about one stream window (1 MiB)
            assert sent < 2 * MIB, sent
            assert client.h2.local_flow_control_window(sid) == 0

            upstream.resume_reading()
            for _ in range(100):  # bounded: each round sends at most one window
                sent = await send_what_the_window_allows(net, client, sid, body, sent)
                if sent == len(body):
                    break
            client.send_data(sid, b"", end=True)
            await net.settle()

            assert app.requests[0].body == body
            assert client.streams[sid].status == 200

    run(scenario())


async def send_what_the_window_allows(
    net: MemoryNetwork, client: H2Client, sid: int, body: bytes, offset: int
) -> int:
    """Let the loop run, then send body bytes from `offset` while the stream's send window allows; returns
    the new offset."""
    for _ in range(1000):  # bounded
        await net.settle()
        room = min(client.h2.local_flow_control_window(sid), client.h2.max_outbound_frame_size)
        if room <= 0 or offset == len(body):
            break
        client.send_data(sid, body[offset : offset + room])
        offset += min(room, len(body) - offset)
    return offset


def test_a_draining_proxy_sends_goaway_after_the_response_and_refuses_newer_streams(
    run: Run, net: MemoryNetwork, h2_codec: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            client = proxy.h2()
            first = client.request("/first")
            await net.settle()
            proxy.dataplane.set_state(ServerState.DRAINING)
            (upstream,) = app.held()
            upstream.respond(Respond(200, b"finished"))
            late = client.request("/late")  # crosses the GOAWAY on the wire
            await net.settle()

            assert client.streams[first].ended and bytes(client.streams[first].body) == b"finished"
            assert client.goaway == first  # the last stream the proxy will serve
            assert client.raw_resets == {late: ErrorCodes.REFUSED_STREAM}  # above it: refused, retry-safe
            assert app.paths == ["/first"]
            assert client.lost  # nothing left in flight: the proxy closed the connection

    run(scenario())
