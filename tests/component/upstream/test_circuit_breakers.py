"""A cluster's circuit breakers (its listener's `connectionPool`, spec §4.2) through the whole request path:
503 UO with Envoy's body and stats for HTTP/1.1 and HTTP/2, and TCP sessions taking connection slots, so a
tcp listener's maxConnections holds (issue 12: it was compiled but never read)."""

from __future__ import annotations

import asyncio

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.config.compile import DEFAULT_TCP_RETRY_POLICY
from meshproxy.config.snapshot import ConnectionPoolLimits, ListenerProtocol
from meshproxy.core.direction import ListenerDirection
from meshproxy.tcp.proxy import TcpProxySession, TcpState
from meshproxy.telemetry.stats import TcpProxyStats

from ..clients import H1Client
from ..memory import Accept, MemoryNetwork, Refuse, Run
from ..proxy import HOSTS, LOCAL_APP, LOCAL_CLUSTER, RESET_REPLY, ingress_snapshot, running_proxy, serve_h1
from ..upstreams import H2App, Hold, Respond, TcpApp
from .waiter import cluster_runtime

OVERFLOW_REPLY = RESET_REPLY + b"overflow"
INGRESS = ListenerDirection.INGRESS


def test_http_pool_limits_queue_one_request_and_overflow_the_next(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    """maxConnections 1, maxPendingRequests 1 toward the local app: the second request waits for the one
    connection, the third is refused with 503 UO; the waiting one is served when the first is done."""

    async def scenario() -> None:
        app = serve_h1(net, Hold(), address=LOCAL_APP)
        limits = ConnectionPoolLimits(max_connections=1, max_pending_requests=1)
        async with running_proxy(
            net, ingress_snapshot(limits=limits), parser=http1_parser, direction=INGRESS
        ) as proxy:
            clients: list[H1Client] = []
            for path in ("/first", "/second", "/third"):
                client = proxy.h1()
                client.get(path, host="front.apps.local")
                clients.append(client)
                await net.settle()
            stats = proxy.cluster_stats(LOCAL_CLUSTER)
            assert stats.upstream_rq_pending_active == 1
            first, second, third = clients
            assert (third.response().status, third.response().body) == (503, OVERFLOW_REPLY)
            assert proxy.observer.last.response_flags == "UO"

            for _ in range(2):
                app.held()[0].respond(Respond(200, b"ok"))
                await net.settle()
            assert (first.response().body, second.response().body) == (b"ok", b"ok")
            assert app.paths == ["/first", "/second"] and len(app.connections) == 1
            assert (stats.upstream_rq_pending_overflow, stats.upstream_rq_pending_active) == (1, 0)

    run(scenario())


def test_http2_max_requests_overflows_the_request_over_it(run: Run, net: MemoryNetwork) -> None:
    """`http2`/`grpc` maxRequests bounds the requests in flight (Envoy counts the refusal as
    upstream_rq_pending_overflow); a gRPC client gets UNAVAILABLE with the same message."""

    async def scenario() -> None:
        app = H2App(Hold())
        net.connector.route(LOCAL_APP, Accept(app.server))
        snapshot = ingress_snapshot(
            protocol=ListenerProtocol.GRPC, limits=ConnectionPoolLimits(max_requests=1)
        )
        async with running_proxy(net, snapshot, direction=INGRESS) as proxy:
            client = proxy.h2()
            grpc = [(b"content-type", b"application/grpc")]
            slow = client.request("/demo.Echo/Sleep", "front.apps.local", "POST", b"\0\0\0\0\0", extra=grpc)
            await net.settle()
            refused = client.request(
                "/demo.Echo/Unary", "front.apps.local", "POST", b"\0\0\0\0\0", extra=grpc
            )
            await net.settle()

            answer = client.streams[refused]
            assert (answer.status, answer.headers["grpc-status"]) == (200, "14")  # UNAVAILABLE
            assert "overflow" in answer.headers["grpc-message"]
            assert proxy.cluster_stats(LOCAL_CLUSTER).upstream_rq_pending_overflow == 1
            connection = app.connections[0]
            connection.respond(connection.held[0], Respond(200, b"\0\0\0\0\0", (("grpc-status", "0"),)))
            await net.settle()
            assert client.streams[slow].status == 200 and client.streams[slow].ended
            assert len(app.requests) == 1

    run(scenario())


def test_tcp_max_connections_is_enforced(run: Run, net: MemoryNetwork) -> None:
    async def scenario() -> None:
        app = TcpApp()
        net.connector.route(LOCAL_APP, Accept(app.server))
        snapshot = ingress_snapshot(
            protocol=ListenerProtocol.TCP, limits=ConnectionPoolLimits(max_connections=1)
        )
        async with running_proxy(net, snapshot, direction=INGRESS) as proxy:
            first = proxy.h1()  # any client protocol: the bytes are opaque here
            first.send(b"hello")
            await net.settle()
            assert bytes(app.connections[0].received) == b"hello"

            second = proxy.h1()
            second.send(b"over the limit")
            await net.settle()
            assert second.lost and len(app.connections) == 1
            stats = proxy.cluster_stats(LOCAL_CLUSTER)
            assert stats.upstream_cx_overflow == 1

            first.write_eof()  # both halves closed: the session ends and gives its slot back
            app.connections[0].write_eof()
            await net.settle()
            assert first.eof  # the session closed the client side too
            third = proxy.h1()
            third.send(b"slot free again")
            await net.settle()
            assert bytes(app.connections[1].received) == b"slot free again"
            cluster = proxy.dataplane.clusters.get(LOCAL_CLUSTER)
            assert cluster is not None
            assert (stats.upstream_cx_active, cluster.breakers.connections) == (1, 1)

    run(scenario())


def test_tcp_connect_failure_is_retried_after_a_back_off_on_the_clock(run: Run, net: MemoryNetwork) -> None:
    """A TCP route's connection-error retry (before any byte flows) goes to another host after Envoy's
    back-off, timed by the clock seam like every other retry."""

    async def scenario() -> None:
        app = TcpApp()
        net.connector.route(HOSTS[0], Accept(app.server))
        net.connector.route(HOSTS[1], Refuse())
        runtime = cluster_runtime(net, HttptoolsClientCodec, hosts=HOSTS[:2], protocol=ListenerProtocol.TCP)
        client = H1Client()
        _, accepted = net.connect(client, asyncio.Protocol())  # the session takes the accepted transport
        session = TcpProxySession(
            accepted, b"early bytes", runtime, TcpProxyStats(), DEFAULT_TCP_RETRY_POLICY
        )
        accepted.set_protocol(session.protocol)
        session.start()
        await net.settle()
        assert net.connector.attempts == [HOSTS[1]]  # round robin tries the refusing host first
        assert session.state is TcpState.CONNECTING
        await net.advance(0.025)  # the first back-off is at most 25 ms

        assert net.connector.attempts == [HOSTS[1], HOSTS[0]]
        assert bytes(app.connections[0].received) == b"early bytes"
        assert runtime.stats.upstream_rq_retry == 1
        session.close()
        runtime.shutdown()

    run(scenario())
