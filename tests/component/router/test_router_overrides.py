"""A client's router control headers through the real router, pools and codecs (router/overrides.py):
`x-envoy-retry-on`, `x-envoy-max-retries`, `x-envoy-retriable-status-codes` merged into the route's retry
policy and the two timeout headers replacing the route's, for a request Envoy counts as internal (one
internal x-forwarded-for address); ignored for any other, as an application's own call is. None of them
reaches the upstream either way. Timers run on the fake clock."""

from __future__ import annotations

import pytest

from meshproxy.config.compile import DEFAULT_RETRY_POLICY
from meshproxy.core.direction import ListenerDirection

from ..memory import MemoryNetwork, Run
from ..proxy import (
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


def control(*, forwarded_for: str | None = "10.0.3.7", **headers: str) -> str:
    """Header lines: `x-envoy-<name>` for each of `headers`, and the x-forwarded-for that makes the request
    internal (None: none, the request is external)."""
    lines = [f"x-envoy-{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items()]
    if forwarded_for is not None:
        lines.append(f"x-forwarded-for: {forwarded_for}\r\n")
    return "".join(lines)


# What Envoy's router removes before forwarding (RetryStateImpl::create, FilterUtility::finalTimeout)
CONSUMED = frozenset(
    f"x-envoy-{name}"
    for name in (
        "retry-on", "retry-grpc-on", "max-retries", "retriable-status-codes", "retriable-header-names",
        "hedge-on-per-try-timeout", "upstream-rq-timeout-ms", "upstream-rq-per-try-timeout-ms",
    )
)  # fmt: skip


def forwarded_control(app: H1App) -> set[str]:
    """The router control headers that reached the upstream (none should)."""
    return {name for request in app.requests for name in request.headers if name in CONSUMED}


# ------------------------------------------------------------------------------------------------ retries


def test_retry_on_and_max_retries_retry_what_the_route_would_not(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(500), Respond(500), Respond(500), Respond(200, b"fourth"))
        # App Mesh's default policy: 2 retries, on 503 only
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            client = await proxy.get(headers=control(retry_on="5xx", max_retries="3"), advance=2.0)

            assert (client.response().status, client.response().body) == (200, b"fourth")
            assert len(app.requests) == 4
            assert proxy.cluster_stats().upstream_rq_retry == 3
            assert not forwarded_control(app)

    run(scenario())


def test_without_the_headers_the_route_policy_stands(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(500), Respond(200))
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            client = await proxy.get()
            assert client.response().status == 500  # the default policy does not retry 500
            assert len(app.requests) == 1

    run(scenario())


def test_max_retries_caps_the_routes_count(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, *(Respond(503) for _ in range(5)))
        async with running_proxy(net, egress_snapshot(retry=policy(4)), parser=http1_parser) as proxy:
            client = await proxy.get(headers=control(max_retries="1"), advance=2.0)

            assert client.response().status == 503
            assert len(app.requests) == 2
            assert proxy.observer.last.response_flags == "URX"

    run(scenario())


def test_invalid_values_are_ignored(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503), Respond(503), Respond(200, b"third"))
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            headers = control(
                max_retries="-1",
                upstream_rq_timeout_ms="soon",
                upstream_rq_per_try_timeout_ms="",
                retry_on="?",
            )
            client = await proxy.get(headers=headers, advance=2.0)

            assert client.response().body == b"third"  # the route's 2 retries, the route's timeout
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "15000"
            assert not forwarded_control(app)

    run(scenario())


def test_retriable_status_codes_with_the_event(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(429), Respond(200, b"then"))
        async with running_proxy(net, egress_snapshot(retry=policy(1)), parser=http1_parser) as proxy:
            client = await proxy.get(
                headers=control(retry_on="retriable-status-codes", retriable_status_codes="429"), advance=1.0
            )

            assert client.response().body == b"then"
            assert len(app.requests) == 2

    run(scenario())


def test_the_ingress_listener_retries_once_on_the_clients_say(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    """The local app's route has no retry policy: the header's events with Envoy's default of one retry."""

    async def scenario() -> None:
        app = serve_h1(net, Respond(502), Respond(502), Respond(200), address=LOCAL_APP)
        async with running_proxy(
            net, ingress_snapshot(), parser=http1_parser, direction=ListenerDirection.INGRESS
        ) as proxy:
            client = await proxy.get(
                host="front.apps.local", headers=control(retry_on="gateway-error"), advance=1.0
            )

            assert client.response().status == 502
            assert len(app.requests) == 2
            assert proxy.cluster_stats(LOCAL_CLUSTER).upstream_rq_retry == 1
            assert not forwarded_control(app)

    run(scenario())


@pytest.mark.parametrize("forwarded_for", [None, "203.0.113.9", "10.0.3.7, 10.0.3.8"])
def test_an_external_request_has_them_stripped_and_ignored(
    run: Run, net: MemoryNetwork, http1_parser: str, forwarded_for: str | None
) -> None:
    """An application's own call carries no x-forwarded-for: Envoy counted it external and its connection
    manager dropped these headers before the router saw them."""

    async def scenario() -> None:
        app = serve_h1(net, Respond(500), Respond(200))
        async with running_proxy(
            net, egress_snapshot(retry=DEFAULT_RETRY_POLICY), parser=http1_parser
        ) as proxy:
            headers = control(
                forwarded_for=forwarded_for, retry_on="5xx", max_retries="3", upstream_rq_timeout_ms="250"
            )
            client = await proxy.get(headers=headers, advance=2.0)

            assert client.response().status == 500  # neither retried nor timed out
            assert len(app.requests) == 1
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "15000"
            assert app.requests[0].headers.get("x-forwarded-for") == forwarded_for  # as it came
            assert not forwarded_control(app)

    run(scenario())


# ----------------------------------------------------------------------------------------------- timeouts


def test_the_request_timeout_header_gives_504_ut_at_its_time(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(timeout=15.0), parser=http1_parser) as proxy:
            client = await proxy.get(headers=control(upstream_rq_timeout_ms="250"), advance=0.249)
            assert not client.received
            await net.advance(0.002)

            assert (client.response().status, client.response().body) == (504, TIMEOUT_REPLY)
            assert proxy.observer.last.response_flags == "UT"
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "250"
            assert not forwarded_control(app)

    run(scenario())


def test_a_request_timeout_of_0_disables_the_routes(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(timeout=2.0), parser=http1_parser) as proxy:
            client = await proxy.get(headers=control(upstream_rq_timeout_ms="0"), advance=60.0)

            assert not client.received  # still waiting: no timeout in effect
            assert "x-envoy-expected-rq-timeout-ms" not in app.requests[0].headers
            app.connections[0].respond(Respond(200, b"late"))
            await net.settle()
            assert client.response().body == b"late"

    run(scenario())


def test_the_per_try_timeout_header_bounds_each_attempt(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold(), Respond(200, b"second"))
        async with running_proxy(net, egress_snapshot(timeout=15.0), parser=http1_parser) as proxy:
            client = await proxy.get(
                headers=control(upstream_rq_per_try_timeout_ms="400", retry_on="5xx"), advance=0.399
            )
            assert len(app.requests) == 1
            await net.advance(0.5)

            assert client.response().body == b"second"
            assert app.requests[0].headers["x-envoy-expected-rq-timeout-ms"] == "400"
            stats = proxy.cluster_stats()
            assert (stats.upstream_rq_per_try_timeout, stats.upstream_rq_retry) == (1, 1)
            assert not forwarded_control(app)

    run(scenario())
