"""The delayed close (net/delayed_close.py) of a client connection closed after an error reply, on the fake
clock and both parsers / both HTTP/2 codecs: the reply, then a FIN; what the client still sends is dropped
(the memory transport answers bytes sent to a closed end with a reset, as the kernel does); and its bounds:
the socket closes after DELAYED_CLOSE_S, at once past DISCARD_BUDGET bytes, and a reply the client does not
read for a whole period is abandoned (a reset, as Envoy's delayed_close_timeout does). The e2e tier
(tests/e2e/test_delayed_close.py) shows the same over real sockets, where the reset is the kernel's.
"""

from __future__ import annotations

import struct

from meshproxy.codec.h2 import MAX_FRAME_SIZE
from meshproxy.net.delayed_close import DELAYED_CLOSE_S, DISCARD_BUDGET

from ..clients import H1Client
from ..memory import MemoryNetwork, MemoryTransport, Peer, Run
from ..proxy import ComponentProxy, egress_snapshot, running_proxy

BAD_REQUEST = b"GET / HTTP/1.1\r\nHost: backend.apps.local\r\nno colon here\r\n\r\n"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, FRAME_SIZE_ERROR = 7, 6


async def bad_request(
    proxy: ComponentProxy, net: MemoryNetwork, *, reading: bool = True
) -> tuple[H1Client, MemoryTransport]:
    """A client that sent a malformed request (answered 400, then the delayed close), and the proxy's end."""
    client = H1Client()
    toward_client = proxy.connect(client)
    if not reading:
        client.pause_reading()
    client.send(BAD_REQUEST)
    await net.settle()
    return client, toward_client


def test_a_400_then_a_fin_then_what_follows_is_dropped_until_the_period_ends(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client, toward_client = await bad_request(proxy, net)
            assert client.received.startswith(b"HTTP/1.1 400 ") and client.eof
            client.send(b"x" * 100_000)  # a closed socket would answer this with a reset
            await net.advance(DELAYED_CLOSE_S - 0.01)
            assert not client.lost and not toward_client.is_closing()
            await net.advance(0.01)
            assert toward_client.is_closing() and not client.lost  # closed, no reset
            assert proxy.listener.open_connections == 0

    run(scenario())


def test_past_the_budget_the_socket_closes_at_once(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client, toward_client = await bad_request(proxy, net)
            client.send(b"x" * DISCARD_BUDGET)
            await net.settle()
            assert not toward_client.is_closing()
            client.send(b"x")
            await net.settle()
            assert toward_client.is_closing()

    run(scenario())


def test_a_reply_the_client_does_not_read_is_abandoned_after_a_period(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            stalled, toward_stalled = await bad_request(proxy, net, reading=False)
            late, toward_late = await bad_request(proxy, net, reading=False)
            assert toward_stalled.get_write_buffer_size() and toward_late.get_write_buffer_size()
            await net.advance(DELAYED_CLOSE_S / 2)
            late.resume_reading()  # reads the reply within the period: an ordinary close after it
            await net.advance(DELAYED_CLOSE_S / 2)
            assert isinstance(stalled.lost_exc, ConnectionResetError)  # no progress for a period
            assert late.received.startswith(b"HTTP/1.1 400 ") and late.eof and not late.lost
            assert toward_late.is_closing()

    run(scenario())


def test_an_http2_connection_error_then_a_fin_then_what_follows_is_dropped(
    run: Run, net: MemoryNetwork, h2_codec: str
) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), h2_codec=h2_codec) as proxy:
            client = Peer()
            toward_client = proxy.connect(client)
            client.send(PREFACE + frame(4, 0, b""))  # SETTINGS
            await net.settle()
            # HEADERS on stream 1 one byte over the proxy's SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2)
            client.send(frame(1, 1, b"\0" * (MAX_FRAME_SIZE + 1)))
            await net.settle()
            assert (GOAWAY, FRAME_SIZE_ERROR) in frame_codes(bytes(client.received)) and client.eof
            client.send(b"\0" * 100_000)
            await net.advance(DELAYED_CLOSE_S)
            assert toward_client.is_closing() and not client.lost

    run(scenario())


def frame(kind: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">L", len(payload))[1:] + struct.pack(">BBL", kind, 0, stream_id) + payload


def frame_codes(data: bytes) -> list[tuple[int, int]]:
    """(type, error code) of each frame; the code is that of GOAWAY (else 0)."""
    codes = []
    while len(data) >= 9:
        length, kind = int.from_bytes(data[:3], "big"), data[3]
        payload, data = data[9 : 9 + length], data[9 + length :]
        codes.append((kind, int.from_bytes(payload[4:8], "big") if kind == GOAWAY else 0))
    return codes
