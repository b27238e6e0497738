"""`HostPool` over HTTP/2 upstream connections (h2c prior knowledge) against the h2 library as the server:
streams multiplexed up to the server's SETTINGS_MAX_CONCURRENT_STREAMS, more connections beyond it, and a
GOAWAY or REFUSED_STREAM turned into a retry of a request the server never processed (spec §4.5
`stream-error`)."""

from __future__ import annotations

import pytest

from meshproxy.codec.h1_httptools import HttptoolsClientCodec
from meshproxy.codec.h2 import select as select_codec
from meshproxy.config.compile import DEFAULT_RETRY_POLICY
from meshproxy.config.snapshot import ListenerProtocol
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.upstream.pool import Acquire

from ..memory import Accept, Gate, MemoryNetwork, Run
from ..proxy import HOST, RESET_REPLY, egress_snapshot, policy, running_proxy
from ..upstreams import GoAway, H2App, Hold, RefuseStream, Respond
from .waiter import Waiter, acquire, cluster_runtime

HTTP2 = ListenerProtocol.HTTP2


def test_streams_are_multiplexed_up_to_the_servers_limit(run: Run, net: MemoryNetwork, h2_codec: str) -> None:
    select_codec(h2_codec)

    async def scenario() -> None:
        app = H2App(Hold(), max_streams=2)
        net.connector.route(HOST, Accept(app.server))
        runtime = cluster_runtime(net, HttptoolsClientCodec, protocol=HTTP2)
        pool = runtime.pool_for(runtime.hosts[0])
        waiters = [Waiter(f"/{i}") for i in range(5)]
        results = []
        for waiter in waiters:
            results.append(acquire(pool, waiter))
            await net.settle()  # each request finds the connections as the server's SETTINGS left them
        assert results == [Acquire.PENDING, Acquire.READY, Acquire.PENDING, Acquire.READY, Acquire.PENDING]
        assert len(app.requests) == 5
        assert [c.peak_streams for c in app.connections] == [2, 2, 1]

        for connection in app.connections:
            for sid in list(connection.held):
                connection.respond(sid, Respond(200, b"ok"))
        await net.settle()
        assert [w.body for w in waiters] == [b"ok"] * 5
        for waiter in waiters:
            waiter.release()
        assert acquire(pool, Waiter("/again")) is Acquire.READY  # a stream on a connection with room
        runtime.shutdown()

    run(scenario())


def test_a_failed_connect_fails_every_request_it_was_opened_for(
    run: Run, net: MemoryNetwork, h2_codec: str
) -> None:
    """One HTTP/2 connection is opened for up to 100 queued requests: when it fails, none can be served."""
    select_codec(h2_codec)

    async def scenario() -> None:
        gate = Gate(H2App().server)
        net.connector.route(HOST, gate)
        runtime = cluster_runtime(net, HttptoolsClientCodec, protocol=HTTP2)
        pool = runtime.pool_for(runtime.hosts[0])
        waiters = [Waiter(f"/{i}") for i in range(3)]
        for waiter in waiters:
            acquire(pool, waiter)
        await net.settle()
        assert net.connector.attempts == [HOST]
        gate.refuse()
        await net.settle()

        assert [w.failure for w in waiters] == [AttemptFailure.CONNECT_FAILURE] * 3
        runtime.shutdown()

    run(scenario())


def test_a_stream_above_the_goaway_is_retried_on_a_new_connection(
    run: Run, net: MemoryNetwork, h2_codec: str, request: pytest.FixtureRequest
) -> None:
    if h2_codec == "h2":
        # The h2 library closes its connection state machine on a received GOAWAY and then rejects the
        # frames of streams below the last stream id (python-hyper/h2#1181), so the stream the server was
        # still answering is lost as a reset. The lean codec (the default) completes it.
        request.applymarker(pytest.mark.xfail(strict=True, reason="python-hyper/h2#1181: GOAWAY closes h2"))

    async def scenario() -> None:
        app = H2App(Hold(), GoAway(), Respond(200, b"fresh"))
        net.connector.route(HOST, Accept(app.server))
        snapshot = egress_snapshot(protocol=HTTP2, retry=DEFAULT_RETRY_POLICY)
        async with running_proxy(net, snapshot, h2_codec=h2_codec) as proxy:
            early, late = proxy.h1(), proxy.h1()
            early.get("/early")
            await net.settle()
            late.get("/late")
            await net.advance(1.0)

            assert late.response().body == b"fresh"
            assert len(app.connections) == 2  # the draining connection took no new stream
            assert proxy.observer.last.attempts == 2
            assert proxy.cluster_stats().upstream_rq_retry == 1
            old = app.connections[0]
            assert not old.lost  # the stream below the GOAWAY still completes on it
            old.respond(old.held[0], Respond(200, b"finished"))
            await net.settle()
            assert early.response().body == b"finished"
            assert old.lost  # drained: closed once its last stream ended

    run(scenario())


@pytest.mark.parametrize(
    ("events", "retried"), [(("stream-error",), True), (("server-error",), True), (("client-error",), False)]
)
def test_refused_stream_is_retried_under_stream_error_or_server_error(
    run: Run, net: MemoryNetwork, h2_codec: str, events: tuple[str, ...], retried: bool
) -> None:
    async def scenario() -> None:
        app = H2App(RefuseStream(), Respond(200, b"ok"))
        net.connector.route(HOST, Accept(app.server))
        snapshot = egress_snapshot(protocol=HTTP2, retry=policy(1, http=events))
        async with running_proxy(net, snapshot, h2_codec=h2_codec) as proxy:
            client = await proxy.get()

            reply = client.response()
            if retried:
                assert reply.body == b"ok"
                assert len(app.connections) == 1  # a refused stream leaves the connection usable
            else:
                assert (reply.status, reply.body) == (503, RESET_REPLY + b"connection termination")

    run(scenario())
