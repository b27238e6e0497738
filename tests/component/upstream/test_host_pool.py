"""`HostPool` over real HTTP/1.1 upstream connections (both codecs, the `h1` fixture), driven as the router's
attempts drive it: reuse, the connection limit and the pending queue, failed connects, shutdown."""

from __future__ import annotations

from meshproxy.config.snapshot import ConnectionPoolLimits
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.upstream.pool import Acquire

from ..conftest import CodecPair
from ..memory import Gate, MemoryNetwork, Run
from ..proxy import HOST, serve_h1
from ..upstreams import H1App, Hold, Respond
from .waiter import Waiter, acquire, cluster_runtime


def answer_all(app: H1App, body: bytes = b"ok") -> None:
    for connection in app.held():
        connection.respond(Respond(200, body))


def test_an_idle_connection_is_reused_most_recently_used_first(
    run: Run, net: MemoryNetwork, h1: CodecPair
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        runtime = cluster_runtime(net, h1[1])
        pool = runtime.pool_for(runtime.hosts[0])
        first, second = Waiter("/1"), Waiter("/2")
        assert acquire(pool, first) is acquire(pool, second) is Acquire.PENDING
        await net.settle()
        assert len(app.connections) == 2
        connection_of = {r.target: r.connection for r in app.requests}
        for waiter in (first, second):  # the second request's connection is freed last
            app.connections[connection_of[waiter.path]].respond(Respond(200))
            await net.settle()
            waiter.release()

        third = Waiter("/3")
        assert acquire(pool, third) is Acquire.READY  # no waiting, no new connection
        await net.settle()
        assert app.requests[-1].connection == connection_of["/2"]
        assert net.connector.attempts == [HOST, HOST]
        assert runtime.stats.upstream_cx_total == 2
        runtime.shutdown()

    run(scenario())


def test_at_max_connections_requests_wait_and_are_served_in_arrival_order(
    run: Run, net: MemoryNetwork, h1: CodecPair
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        runtime = cluster_runtime(net, h1[1], limits=ConnectionPoolLimits(max_connections=1))
        pool = runtime.pool_for(runtime.hosts[0])
        waiters = [Waiter(f"/{i}") for i in range(4)]
        for waiter in waiters:
            assert acquire(pool, waiter) is Acquire.PENDING
        stats = runtime.stats
        assert (stats.upstream_rq_pending_total, stats.upstream_rq_pending_active) == (4, 4)
        assert stats.upstream_cx_overflow > 0  # wanted more connections than the limit allows
        for served, waiter in enumerate(waiters, start=1):
            await net.settle()
            assert app.paths == [w.path for w in waiters[:served]]
            answer_all(app)
            await net.settle()
            waiter.release()

        assert len(app.connections) == 1 and runtime.breakers.connections == 1
        assert stats.upstream_rq_pending_active == 0
        runtime.shutdown()

    run(scenario())


def test_a_full_pending_queue_overflows(run: Run, net: MemoryNetwork, h1: CodecPair) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        limits = ConnectionPoolLimits(max_connections=1, max_pending_requests=1)
        runtime = cluster_runtime(net, h1[1], limits=limits)
        pool = runtime.pool_for(runtime.hosts[0])
        first, second, third = Waiter("/1"), Waiter("/2"), Waiter("/3")
        assert acquire(pool, first) is Acquire.PENDING
        await net.settle()  # connected: the first request holds the one connection
        assert acquire(pool, second) is Acquire.PENDING
        assert acquire(pool, third) is Acquire.OVERFLOW
        assert runtime.stats.upstream_rq_pending_overflow == 1

        answer_all(app)
        await net.settle()
        first.release()
        await net.settle()
        assert app.paths == ["/1", "/2"]
        runtime.shutdown()

    run(scenario())


def test_a_failed_connect_fails_only_the_waiters_the_other_connects_cannot_serve(
    run: Run, net: MemoryNetwork, h1: CodecPair
) -> None:
    async def scenario() -> None:
        app = H1App(Respond(200, b"ok"))
        gates = [Gate(app.server) for _ in range(3)]
        net.connector.route(HOST, *gates)
        runtime = cluster_runtime(net, h1[1])
        pool = runtime.pool_for(runtime.hosts[0])
        waiters = [Waiter(f"/{i}") for i in range(3)]
        for waiter in waiters:
            acquire(pool, waiter)
        await net.settle()
        assert all(gate.reached for gate in gates)

        gates[0].refuse()
        await net.settle()
        # one connect failed: one waiter fails (it can be retried elsewhere); two connects can still serve two
        assert [w.failure for w in waiters] == [AttemptFailure.CONNECT_FAILURE, None, None]
        gates[1].open()
        gates[2].open()
        await net.settle()
        assert [w.body for w in waiters[1:]] == [b"ok", b"ok"]
        assert runtime.stats.upstream_cx_connect_fail == 1
        runtime.shutdown()

    run(scenario())


def test_a_connect_timeout_fails_the_waiter_on_the_fake_clock(
    run: Run, net: MemoryNetwork, h1: CodecPair
) -> None:
    async def scenario() -> None:
        app = H1App()
        net.connector.route(HOST, Gate(app.server))
        runtime = cluster_runtime(net, h1[1])
        pool = runtime.pool_for(runtime.hosts[0])
        waiter = Waiter()
        acquire(pool, waiter)
        await net.advance(0.99)
        assert waiter.failure is None
        await net.advance(0.02)  # the cluster's 1 s connect timeout

        assert waiter.failure is AttemptFailure.CONNECT_FAILURE
        stats = runtime.stats
        assert (stats.upstream_cx_connect_fail, stats.upstream_cx_connect_timeout) == (1, 1)
        assert (runtime.breakers.connections, runtime.breakers.pending) == (0, 0)
        runtime.shutdown()

    run(scenario())


def test_a_connection_closed_as_idle_is_never_handed_out(run: Run, net: MemoryNetwork, h1: CodecPair) -> None:
    """The idle sweep closes a connection; its connection_lost comes a loop turn later. A request in
    between must not be given the closing connection (its bytes would be lost and the request reset)."""

    async def scenario() -> None:
        app = serve_h1(net, Respond(200, b"ok"))
        runtime = cluster_runtime(net, h1[1])
        pool = runtime.pool_for(runtime.hosts[0])
        first = Waiter("/1")
        acquire(pool, first)
        await net.settle()
        first.release()

        pool.close_idle(older_than=0.0)
        second = Waiter("/2")
        assert acquire(pool, second) is Acquire.PENDING  # a new connection, not the closing one
        await net.settle()
        assert (second.body, second.lost) == (b"ok", None)
        assert len(app.connections) == 2
        runtime.shutdown()

    run(scenario())


def test_shutdown_closes_idle_connections_now_busy_ones_when_done_and_fails_the_queue(
    run: Run, net: MemoryNetwork, h1: CodecPair
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(200), Hold())
        runtime = cluster_runtime(net, h1[1], limits=ConnectionPoolLimits(max_connections=2))
        pool = runtime.pool_for(runtime.hosts[0])
        idle, busy, queued = Waiter("/idle"), Waiter("/busy"), Waiter("/queued")
        acquire(pool, idle)
        acquire(pool, busy)
        await net.settle()
        idle.release()
        assert acquire(pool, queued) is Acquire.READY  # takes the idle one...
        await net.settle()
        latecomer = Waiter("/late")
        assert acquire(pool, latecomer) is Acquire.PENDING  # ...so this one waits: both are busy

        pool.shutdown()
        await net.settle()
        assert latecomer.failure is AttemptFailure.CONNECT_FAILURE
        assert not any(c.lost for c in app.connections)  # both busy: they finish their exchanges
        assert acquire(pool, Waiter("/after")) is Acquire.OVERFLOW

        answer_all(app)
        await net.settle()
        busy.release()
        queued.release()
        await net.settle()
        assert all(c.lost for c in app.connections)
        assert runtime.breakers.connections == 0 and runtime.stats.upstream_cx_active == 0

    run(scenario())
