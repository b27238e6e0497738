"""What silence means on the egress port (issue 14, defect 3), on the fake clock: the original destination
decides. A client of one of the node's HTTP backends that connects first and sends later (pools, pre-warming)
is an HTTP client still to speak: after Envoy's listener-filter timeout (15 s) its connection goes to the
HTTP/1.1 connection manager, whose keep-alive idle timeout applies from then on. Anywhere else, 15 s of
silence means a server-first protocol: the TCP route, passthrough, or (DROP_ALL, no route) a close.
"""

from __future__ import annotations

from ..clients import H1Client
from ..memory import MemoryNetwork, Run
from ..proxy import HOST, SERVICE, ComponentProxy, egress_snapshot, running_proxy, serve_h1
from ..upstreams import Respond

BACKEND_PORT = ("10.0.5.5", 8080)  # where the app dials the service: a backend's HTTP port
ELSEWHERE = ("10.0.5.5", 5432)  # a port no backend of the node listens on


def dial(proxy: ComponentProxy, original: tuple[str, int]) -> H1Client:
    client = H1Client()
    proxy.connect(client, original_destination=original)
    return client


def test_a_client_of_an_http_backend_may_stay_silent_and_speak_later(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"late but served"), address=HOST)
        async with running_proxy(net, egress_snapshot()) as proxy:
            early, late = dial(proxy, BACKEND_PORT), dial(proxy, BACKEND_PORT)
            await net.advance(14.0)
            early.get("/", SERVICE)  # within the listener-filter timeout: still being sniffed
            await net.advance(1.0)
            assert early.response().body == b"late but served"

            await net.advance(45.0)  # a minute of silence: served by the HTTP/1.1 manager since 15 s
            assert not late.lost and len(proxy.listener.connections) == 2
            late.get("/", SERVICE)
            await net.advance(1.0)
            assert late.response().body == b"late but served"

    run(scenario())


def test_a_silent_http_client_is_closed_by_the_keep_alive_idle_timeout(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot()) as proxy:
            silent = dial(proxy, BACKEND_PORT)
            await net.advance(16.0)
            assert proxy.listener.close_idle_connections(300.0) == 0  # the server's 1 s sweep
            await net.advance(300.0)
            assert proxy.listener.close_idle_connections(300.0) == 1
            await net.settle()
            assert silent.eof  # closed by the proxy

    run(scenario())


def test_silence_elsewhere_is_a_server_first_protocol_after_15_s(run: Run, net: MemoryNetwork) -> None:
    """DROP_ALL and no TCP route for the port: the connection is closed, but only after Envoy's 15 s (the
    old 1 s closed clients that were merely slow to speak)."""

    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot()) as proxy:
            silent = dial(proxy, ELSEWHERE)
            await net.advance(14.9)
            assert not silent.lost
            await net.advance(0.1)
            assert silent.eof and silent.received == b""  # closed by the proxy
            assert proxy.dataplane.store.tcp_proxy("egress").downstream_cx_no_route == 1

    run(scenario())


def test_http_to_another_port_is_still_recognised_by_its_first_bytes(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"routed by Host"), address=HOST)
        async with running_proxy(net, egress_snapshot()) as proxy:
            client = dial(proxy, ELSEWHERE)
            await net.advance(10.0)
            client.get("/", SERVICE)
            await net.advance(1.0)
            assert client.response().body == b"routed by Host"

    run(scenario())
