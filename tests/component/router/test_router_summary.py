"""What the router reports when a request ends: one frozen `RequestSummary` to the `RequestObserver`, with the
fields the access log, X-Ray and the metrics extension read (Envoy's access-log operators)."""

from __future__ import annotations

from ..memory import MemoryNetwork, Run
from ..proxy import CLUSTER, ROUTE, SERVICE, egress_snapshot, policy, running_proxy, serve_h1
from ..upstreams import Hold, Respond


def test_a_request_is_summarised_once_with_times_from_the_clock(
    run: Run, net: MemoryNetwork, http1_parser: str
) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Respond(503), Hold())
        async with running_proxy(net, egress_snapshot(retry=policy(1)), parser=http1_parser) as proxy:
            client = proxy.h1()
            client.send(b"POST /orders?id=7 HTTP/1.1\r\nHost: backend.apps.local\r\nContent-Length: 5\r\n")
            client.send(b"x-request-id: req-1\r\n\r\nhello")
            await net.advance(0.1)  # the back-off, then the second attempt starts
            assert len(app.held()) == 1 and not proxy.summaries
            await net.advance(0.25)
            app.held()[0].respond(Respond(201, b"created"))
            await net.settle()

            reply = client.response()
            assert reply.status == 201
            (summary,) = proxy.summaries
            assert summary.duration_ms == 350
            # the service time is the answering attempt's, and the client sees it in the header too
            assert summary.upstream_service_time_ms == int(reply.headers["x-envoy-upstream-service-time"])
            assert 250 <= summary.upstream_service_time_ms < 350
            assert (summary.method, summary.path, summary.authority) == ("POST", "/orders?id=7", SERVICE)
            assert (summary.response_code, summary.response_flags, summary.attempts) == (201, "-", 2)
            assert (summary.bytes_received, summary.bytes_sent) == (5, len(b"created"))
            assert summary.upstream_host == "10.0.1.1:8080"
            assert (summary.upstream_cluster, summary.route_name) == (CLUSTER, ROUTE)
            assert (summary.virtual_service, summary.target_virtual_node) == (SERVICE, "backend")
            assert summary.request_headers["x-request-id"] == "req-1"
            assert (summary.direction, summary.protocol) == ("egress", "HTTP/1.1")
            assert summary.downstream_remote_address == "10.0.0.2:40000"
            assert summary.downstream_local_address == "10.0.0.1:15001"

    run(scenario())


def test_a_local_reply_is_summarised_with_its_flag(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = await proxy.get("/", host="unknown.apps.local", advance=0)

            assert client.response().status == 404
            (summary,) = proxy.summaries
            assert (summary.response_code, summary.response_flags) == (404, "NR")
            assert (summary.upstream_host, summary.upstream_cluster, summary.upstream_service_time_ms) == (
                None,
                None,
                None,
            )
            assert proxy.listener.http_stats.no_route == 1

    run(scenario())


def test_a_client_gone_mid_request_is_summarised_dc(run: Run, net: MemoryNetwork, http1_parser: str) -> None:
    async def scenario() -> None:
        app = serve_h1(net, Hold())
        async with running_proxy(net, egress_snapshot(), parser=http1_parser) as proxy:
            client = await proxy.get(advance=0)
            client.close()
            await net.settle()

            (summary,) = proxy.summaries
            assert (summary.response_code, summary.response_flags) == (0, "DC")
            assert app.connections[0].lost  # the upstream exchange is abandoned with it
            assert proxy.cluster_stats().upstream_rq_active == 0

    run(scenario())
