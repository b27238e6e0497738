"""Timeouts on the fake clock (spec §4.2, §4.5): the per-try timeout bounds each attempt and is retried, the
per-request timeout starts when the request is complete and answers 504 UT, the stream idle timeout answers
408 SI (or resets a response already under way). Nothing here waits on the wall clock."""

from __future__ import annotations

from meshproxy.config.compile import DEFAULT_RETRY_POLICY
from meshproxy.core.direction import ListenerDirection

from ..memory import Accept, MemoryNetwork, Run
from ..proxy import (
    HOSTS,
    LOCAL_APP,
    LOCAL_CLUSTER,
    egress_snapshot,
    ingress_snapshot,
    policy,
    running_proxy,
    serve_h1,
)
from ..upstreams import H1App, Hold, Respond

TIMEOUT_REPLY = b"upstream request timeout"


# ---------------------------------------------------------------------------------------- per-try timeout


def test_a_per_try_timeout_is_retried_on_another_host(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = H1App(Hold(), Respond(200, b"second try"))  # whichever host is tried first stalls
        for host in HOSTS[:2]:
            net.connector.route(host, Accept(app.server))
        snapshot = egress_snapshot(hosts=HOSTS[:2], retry=policy(1, http=("server-error",), per_try_s=1.0))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get(advance=0.999)
            assert not client.received and len(app.requests) == 1
            await net.advance(0.5)

            assert client.response().body == b"second try"
            assert len(set(net.connector.attempts)) == 2
            assert app.connections[0].lost  # a timed-out exchange cannot be reused
            # the per-try timeout is the shorter one, so that is what the upstream is told
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "1000"
            stats = proxy.cluster_stats()
            assert (stats.upstream_rq_per_try_timeout, stats.upstream_rq_retry) == (1, 1)

    run(scenario())


def test_per_try_timeouts_past_the_limit_give_504_ut(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        snapshot = egress_snapshot(retry=policy(2, http=("gateway-error",), per_try_s=0.5))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get(advance=2.0)

            assert (client.response().status, client.response().body) == (504, TIMEOUT_REPLY)
            assert len(app.requests) == 3
            stats = proxy.cluster_stats()
            assert (stats.upstream_rq_per_try_timeout, stats.upstream_rq_timeout) == (3, 1)
            assert set(proxy.observer.last.response_flags.split(",")) == {"UT", "URX"}

    run(scenario())


def test_the_per_try_timer_starts_when_the_request_is_complete(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        serve_h1(net, Respond(200, b"ok"))
        snapshot = egress_snapshot(retry=policy(1, per_try_s=0.5))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"POST / HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: 4\r\n\r\nda")
            await net.advance(3.0)  # a slow client is not a slow upstream
            client.send(b"ta")
            await net.settle()

            assert client.response().body == b"ok"
            assert proxy.cluster_stats().upstream_rq_per_try_timeout == 0

    run(scenario())


# ------------------------------------------------------------------------------------- per-request timeout


def test_the_route_timeout_starts_when_the_request_is_complete_and_gives_504_ut(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        snapshot = egress_snapshot(retry=DEFAULT_RETRY_POLICY, timeout=2.0)
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"POST / HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: 4\r\n\r\n")
            await net.advance(10.0)
            assert not client.received  # the body has not arrived: no timer yet
            client.send(b"data")
            await net.advance(1.999)
            assert not client.received
            await net.advance(0.002)

            assert (client.response().status, client.response().body) == (504, TIMEOUT_REPLY)
            assert len(app.requests) == 1  # the default policy does not retry a timeout
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "2000"
            assert app.connections[0].lost
            assert proxy.cluster_stats().upstream_rq_timeout == 1
            assert proxy.observer.last.response_flags == "UT"

    run(scenario())


def test_the_ingress_listener_timeout_gives_504(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    """The virtual-node listener's perRequest timeout bounds requests to the local app (spec §4.2)."""

    async def scenario() -> None:
        app = serve_h1(net, Hold(), address=LOCAL_APP)
        snapshot = ingress_snapshot(timeout=3.0)
        async with running_proxy(
            net, snapshot, parser=http1_parser, direction=ListenerDirection.INGRESS
        ) as proxy:
            client = await proxy.get("/slow", host="front.apps.local", advance=2.9)
            assert not client.received
            await net.advance(0.2)

            assert (client.response().status, client.response().body) == (504, TIMEOUT_REPLY)
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "3000"
            assert proxy.cluster_stats(LOCAL_CLUSTER).upstream_rq_timeout == 1

    run(scenario())


# ---------------------------------------------------------------------------------------- idle timeout


def test_a_request_idle_for_the_route_idle_timeout_gets_408_si(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(idle=1.0), parser=http1_parser) as proxy:
            client = await proxy.get(advance=0.9)
            assert proxy.listener.expire_idle_streams(net.clock.now()) == 0  # the server's 1 s sweep
            await net.advance(0.2)
            assert proxy.listener.expire_idle_streams(net.clock.now()) == 1
            await net.settle()

            assert (client.response().status, client.response().body) == (408, b"stream timeout")
            assert proxy.observer.last.response_flags == "SI"
            assert app.connections[0].lost

    run(scenario())


def test_bytes_moving_keep_a_stream_from_idling(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(idle=1.0), parser=http1_parser) as proxy:
            client = await proxy.get(advance=0)
            (upstream,) = app.held()
            upstream.send_head(200, chunked=True)
            for _ in range(5):
                await net.advance(0.8)
                upstream.send_data(b"tick")
                await net.settle()
                assert proxy.listener.expire_idle_streams(net.clock.now()) == 0
            upstream.end()
            await net.settle()

            assert client.response().body == b"tick" * 5

    run(scenario())


def test_an_idle_response_already_under_way_is_reset_with_si(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(idle=1.0), parser=http1_parser) as proxy:
            client = await proxy.get(advance=0)
            (upstream,) = app.held()
            upstream.send_head(200, content_length=10)
            upstream.send_data(b"abc")
            await net.advance(1.5)
            assert proxy.listener.expire_idle_streams(net.clock.now()) == 1
            await net.settle()

            assert isinstance(client.lost_exc, ConnectionResetError)  # cut off, not a clean end
            assert client.responses() == []
            summary = proxy.observer.last
            assert (summary.response_code, summary.response_flags) == (200, "SI")

    run(scenario())
