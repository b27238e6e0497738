"""Retries as App Mesh's Envoy makes them (spec §4.5), through the real router, pools and codecs.

Each test configures a route's retry policy by its App Mesh events (the compiler's own mapping), scripts the
upstream hosts, and checks what the client got, what reached each host, the Envoy stats and the summary the
router reported. Back-offs run on the fake clock: nothing is retried until the test moves time.
"""

from __future__ import annotations

import pytest

from meshproxy.config.compile import DEFAULT_RETRY_POLICY
from meshproxy.router.retry import BACKOFF_BASE_S, RETRY_BUFFER_LIMIT

from ..memory import Accept, Blackhole, MemoryNetwork, Refuse, Run
from ..proxy import (
    CLUSTER,
    HOST,
    HOSTS,
    RESET_REPLY,
    egress_snapshot,
    patterned,
    policy,
    running_proxy,
    serve_h1,
)
from ..upstreams import Close, H1App, Hold, Reset, Respond


def flags(value: str) -> set[str]:
    return set(value.split(","))


# ------------------------------------------------------------------------------------------ retry events


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_retries_5xx_until_a_success(
    run: Run, net: MemoryNetwork, http1_parser: str, status: int
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(status), Respond(status), Respond(200, b"third time"))
        snapshot = egress_snapshot(retry=policy(2, http=("server-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get("/flaky")  # the back-offs
            reply = client.response()
            stats = proxy.cluster_stats()

            assert (reply.status, reply.body) == (200, b"third time")
            assert app.paths == ["/flaky"] * 3
            assert (stats.upstream_rq_retry, stats.upstream_rq_total) == (2, 3)
            assert stats.rq_by_code == {status: 2, 200: 1}
            assert stats.upstream_rq_retry_success == 1
            assert (proxy.observer.last.attempts, proxy.observer.last.response_flags) == (3, "-")

    run(scenario())


@pytest.mark.parametrize(("status", "retried"), [(502, True), (503, True), (504, True), (500, False)])
def test_gateway_error_retries_502_503_504_only(
    run: Run, net: MemoryNetwork, http1_parser: str, status: int, retried: bool
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(status), Respond(200))
        snapshot = egress_snapshot(retry=policy(1, http=("gateway-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert client.response().status == (200 if retried else status)
            assert len(app.requests) == (2 if retried else 1)
            assert proxy.cluster_stats().upstream_rq_retry == (1 if retried else 0)

    run(scenario())


@pytest.mark.parametrize("failure", [Reset(), Close()], ids=["reset", "closed"])
def test_a_connection_lost_before_the_response_is_retried_under_server_error(
    run: Run, net: MemoryNetwork, http1_parser: str, failure: Reset | Close
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, failure, Respond(200, b"ok"))
        snapshot = egress_snapshot(retry=policy(1, http=("server-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert client.response().body == b"ok"
            assert len(app.connections) == 2  # the lost connection was not reused
            assert proxy.cluster_stats().upstream_rq_retry == 1

    run(scenario())


def test_client_error_retries_409_but_not_a_reset(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(409), Respond(200, b"ok"), Reset(), Respond(200, b"never"))
        snapshot = egress_snapshot(retry=policy(2, http=("client-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            first = proxy.h1()
            first.get("/conflict")
            await net.advance(1.0)
            assert first.response().body == b"ok"

            second = proxy.h1()
            second.get("/reset")
            await net.advance(1.0)
            reply = second.response()
            assert (reply.status, reply.body) == (503, RESET_REPLY + b"connection termination")
            assert proxy.observer.last.response_flags == "UC"
            assert app.paths == ["/conflict", "/conflict", "/reset"]

    run(scenario())


# ------------------------------------------------------------------------------------- connect failures


def test_connection_error_retries_a_refused_connect(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = H1App(Respond(200, b"ok"))
        net.connector.route(HOST, Refuse(), Accept(app.server))
        snapshot = egress_snapshot(retry=policy(2, http=(), tcp=("connection-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert client.response().body == b"ok"
            stats = proxy.cluster_stats()
            assert (stats.upstream_cx_connect_fail, stats.upstream_rq_retry) == (1, 1)
            assert proxy.observer.last.attempts == 2

    run(scenario())


def test_a_connect_timeout_is_a_connect_failure_on_the_fake_clock(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = H1App(Respond(200, b"ok"))
        net.connector.route(HOST, Blackhole(), Accept(app.server))
        snapshot = egress_snapshot(retry=policy(1, http=(), tcp=("connection-error",)), connect_timeout=0.5)
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get(advance=0.49)
            assert not client.received and proxy.cluster_stats().upstream_cx_connect_timeout == 0
            await net.advance(1.0)

            assert client.response().body == b"ok"
            assert proxy.cluster_stats().upstream_cx_connect_timeout == 1

    run(scenario())


def test_a_connect_failure_is_not_retried_without_a_matching_event(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        net.connector.route(HOST, Refuse())
        snapshot = egress_snapshot(retry=policy(2, http=("client-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            reply = client.response()
            assert (reply.status, reply.body) == (503, RESET_REPLY + b"connection failure")
            assert net.connector.attempts == [HOST]
            assert proxy.observer.last.response_flags == "UF"

    run(scenario())


# ------------------------------------------------------------------------------------ the retry limit


def test_past_the_retry_limit_the_last_response_is_relayed_with_urx(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503, b"still failing"))
        snapshot = egress_snapshot(retry=policy(2, http=("server-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert (client.response().status, client.response().body) == (503, b"still failing")
            assert len(app.requests) == 3
            stats = proxy.cluster_stats()
            assert (stats.upstream_rq_retry, stats.upstream_rq_retry_limit_exceeded) == (2, 1)
            summary = proxy.observer.last
            assert (summary.response_code, summary.response_flags, summary.attempts) == (503, "URX", 3)

    run(scenario())


def test_connect_failures_past_the_limit_give_503_uf_with_urx(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        snapshot = egress_snapshot(hosts=HOSTS, retry=policy(2, http=(), tcp=("connection-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert client.response().body == RESET_REPLY + b"connection failure"
            assert sorted(net.connector.attempts) == sorted(HOSTS)
            assert proxy.cluster_stats().upstream_rq_retry_limit_exceeded == 1
            assert flags(proxy.observer.last.response_flags) == {"UF", "URX"}

    run(scenario())


# ------------------------------------------------------------------------- App Mesh's default policy


@pytest.mark.parametrize(
    ("first", "retried"),
    [(Respond(503), True), (Reset(), True), (Refuse(), True), (Respond(500), False), (Respond(502), False)],
    ids=["503", "reset", "connect-failure", "500", "502"],
)
def test_the_default_policy_retries_503_resets_and_connect_failures_only(
    run: Run, net: MemoryNetwork, http1_parser: str, first: Respond | Reset | Refuse, retried: bool
) -> None:
    async def scenario() -> None:
        if isinstance(first, Refuse):
            app = H1App(Respond(200, b"ok"))
            net.connector.route(HOST, Refuse(), Accept(app.server))
        else:
            app = serve_h1(net, first, Respond(200, b"ok"))
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            client = await proxy.get()

            reply = client.response()
            assert (reply.status == 200) is retried, reply
            assert proxy.cluster_stats().upstream_rq_retry == (1 if retried else 0)

    run(scenario())


def test_the_default_policy_makes_two_retries(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503))
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            client = await proxy.get()

            assert client.response().status == 503
            assert len(app.requests) == 1 + DEFAULT_RETRY_POLICY.max_retries == 3

    run(scenario())


# ----------------------------------------------------------------------------------- host avoidance


def test_a_retry_avoids_the_host_already_tried(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    """Round robin alone would send the retry back to the host that failed: another request moved the
    balancer in between. The retry goes to the host its request has not tried."""

    async def scenario() -> None:
        apps = {host: H1App(Hold(), name=f"{host[0]}") for host in HOSTS[:2]}
        for host, app in apps.items():
            net.connector.route(host, Accept(app.server))
        snapshot = egress_snapshot(hosts=HOSTS[:2], retry=policy(1, http=("server-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            x, y = proxy.h1(), proxy.h1()
            x.get("/x")
            await net.settle()
            y.get("/y")
            await net.settle()
            (x_app,) = [app for app in apps.values() if app.paths == ["/x"]]
            (y_app,) = [app for app in apps.values() if app.paths == ["/y"]]
            x_app.held()[0].respond(Respond(503))
            await net.advance(1.0)

            assert (x_app.paths, y_app.paths) == (["/x"], ["/y", "/x"])
            for connection in y_app.held():
                connection.respond(Respond(200))
            await net.settle()
            assert (x.response().status, y.response().status) == (200, 200)

    run(scenario())


def test_when_every_host_was_tried_a_tried_host_takes_the_retry(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        apps = [H1App(Respond(503, b"upstream 503"), name=f"host{i}") for i in range(2)]
        for host, app in zip(HOSTS, apps, strict=False):
            net.connector.route(host, Accept(app.server))
        snapshot = egress_snapshot(hosts=HOSTS[:2], retry=policy(2, http=("server-error",)))
        async with running_proxy(net, snapshot, parser=http1_parser) as proxy:
            client = await proxy.get()

            assert client.response().body == b"upstream 503"  # not 503 UH: a tried host beats none
            assert sorted(len(app.requests) for app in apps) == [1, 2]

    run(scenario())


# ------------------------------------------------------------------------------------ replay and back-off


@pytest.mark.parametrize(("size", "retried"), [(RETRY_BUFFER_LIMIT, True), (RETRY_BUFFER_LIMIT + 1, False)])
def test_a_body_over_1_mib_is_not_replayed(
    run: Run, net: MemoryNetwork, http1_parser: str, size: int, retried: bool
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503), Respond(200, b"ok"))
        body = patterned(size)
        async with running_proxy(net, egress_snapshot(retry=policy(1)), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(
                b"PUT /upload HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: %d\r\n\r\n" % size
            )
            client.send(body)
            await net.advance(1.0)

            assert client.response().status == (200 if retried else 503)
            assert [r.body == body for r in app.requests] == [True] * (2 if retried else 1)
            # not replayable is not "retries used up": no URX
            assert proxy.observer.last.response_flags == "-"

    run(scenario())


def test_retries_wait_for_the_jittered_back_off(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503), Respond(503), Respond(200))
        async with running_proxy(net, egress_snapshot(retry=policy(2)), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.get()
            for retry in (1, 2):
                await net.settle()
                assert len(app.requests) == retry  # waiting: no time has passed
                ceiling = BACKOFF_BASE_S * 2 ** (retry - 1)  # 25 ms, then 50 ms
                back_off = [d for d in net.clock.pending() if d < 1.0]
                assert len(back_off) == 1 and 0.0 <= back_off[0] <= ceiling, back_off
                await net.advance(back_off[0])  # exactly to it: the next back-off may be shorter
            assert len(app.requests) == 3
            assert client.response().status == 200
            assert proxy.cluster_stats(CLUSTER).upstream_rq_retry == 2

    run(scenario())
