"""What each telemetry sink costs per request: `python -m bench.telemetry_cost [--quick]`.

Two kinds of cost are reported, in microseconds of CPU on this machine (best of several repeats):

- request path: what the data plane pays inline (`start_trace`, `request_done`, a histogram `record` with the
  DogStatsD sample list on);
- background: what the drain task / flush / scrape pays later, per record or per flush (access-log line,
  X-Ray segment + UDP send, OTLP span build, DogStatsD flush, Prometheus render).

Only loopback sockets are used (a bound UDP socket stands in for the X-Ray daemon and the StatsD agent).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import time
from collections.abc import Callable

from meshproxy.config.snapshot import AccessLogConfig, Identity, ResourceKind
from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry.accesslog import compile_format
from meshproxy.telemetry.datagram import DatagramSender
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.names import StatNaming
from meshproxy.telemetry.prometheus import render_prometheus
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.statsd import MAX_UDP_PAYLOAD, DogStatsdFlusher, pack
from meshproxy.telemetry.tracing import TraceContext
from meshproxy.telemetry.xray import SegmentConfig, build_segment, encode_datagram

IDENTITY = Identity("mesh/apps/virtualNode/serviceA", "apps", ResourceKind.VIRTUAL_NODE, "serviceA", "x")
HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"serviceb.apps.local"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
    (b"x-request-id", b"0b7d1c1e-5b8e-4c6f-9a53-7a3e2f7c1d2a"),
    (b"x-forwarded-for", b"10.0.0.1"),
]
XRAY = (b"x-amzn-trace-id", b"Root=1-6650a1b2-5f1c2a3b4d5e6f708192a3b4;Parent=53995c3f42cd8ad8;Sampled=1")
TRACEPARENT = (b"traceparent", b"00-6650a1b25f1c2a3b4d5e6f708192a3b4-53995c3f42cd8ad8-01")


def per_call_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def record(trace: object = None) -> RequestSummary:
    return RequestSummary(
        direction="egress",
        start_time=time.time(),
        method="GET",
        path="/ping",
        authority="serviceb.apps.local",
        request_headers={"user-agent": "wrk", "x-request-id": "0b7d1c1e", "x-forwarded-for": "10.0.0.1"},
        response_headers={"x-envoy-upstream-service-time": "1"},
        response_code=200,
        bytes_sent=2,
        duration_ms=1,
        upstream_host="10.0.2.15:9080",
        upstream_cluster="cds_egress_apps_serviceB_http_9080",
        downstream_remote_address="127.0.0.1:50000",
        trace=trace,
    )


def store_with(clusters: int) -> StatsStore:
    store = StatsStore()
    for i in range(clusters):
        c = store.cluster(f"cds_egress_apps_backend{i:03d}_http_8080")
        c.upstream_rq_total = 1000 + i
        c.count_response(200)
        c.count_response(503)
        c.upstream_rq_time.record(3.0)
    store.http_conn_manager("ingress").count_response(200)
    store.http_conn_manager("egress").count_response(200)
    store.listener("0.0.0.0_15000").downstream_cx_total = 5
    store.listener("0.0.0.0_15001").downstream_cx_total = 5
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rows: list[tuple[str, str, float]] = []

    def settings(**kw: object) -> Settings:
        return Settings(identity=IDENTITY, **kw)  # type: ignore[arg-type]

    # -- request path ----------------------------------------------------------------------------------------
    plain = Telemetry(settings(), StatsStore())
    rows.append(
        (
            "request",
            "start_trace, nothing on, no trace headers",
            per_call_us(
                lambda: plain.start_trace("egress", HEADERS, "GET", "serviceb.apps.local", "/ping"), n
            ),
        )
    )
    with_tp = [*HEADERS, TRACEPARENT]
    rows.append(
        (
            "request",
            "start_trace, W3C propagation only",
            per_call_us(
                lambda: plain.start_trace("egress", with_tp, "GET", "serviceb.apps.local", "/ping"), n
            ),
        )
    )
    xray = Telemetry(settings(xray=True), StatsStore())
    rows.append(
        (
            "request",
            "start_trace, X-Ray, new root (sampler)",
            per_call_us(
                lambda: xray.start_trace("egress", HEADERS, "GET", "serviceb.apps.local", "/ping"), n
            ),
        )
    )
    with_xray = [*HEADERS, XRAY]
    rows.append(
        (
            "request",
            "start_trace, X-Ray, incoming header",
            per_call_us(
                lambda: xray.start_trace("egress", with_xray, "GET", "serviceb.apps.local", "/ping"), n
            ),
        )
    )
    both = Telemetry(settings(xray=True, otel_endpoint="http://127.0.0.1:9"), StatsStore())
    with_both = [*HEADERS, XRAY, TRACEPARENT]
    rows.append(
        (
            "request",
            "start_trace, X-Ray + OTLP, both headers",
            per_call_us(
                lambda: both.start_trace("egress", with_both, "GET", "serviceb.apps.local", "/ping"), n
            ),
        )
    )

    unsampled = record()
    rows.append(
        ("request", "request_done, no sink wants it", per_call_us(lambda: plain.request_done(unsampled), n))
    )
    logged = Telemetry(settings(), StatsStore(), queue_limit=n * 10)
    logged.set_access_log(AccessLogConfig("/dev/null"))
    rows.append(
        (
            "request",
            "request_done, access log on (deque append)",
            per_call_us(lambda: logged.request_done(unsampled), n, repeats=1),
        )
    )

    store = StatsStore()
    hist = store.cluster("c").upstream_rq_time
    rows.append(("request", "histogram record (sample list off)", per_call_us(lambda: hist.record(3.0), n)))
    hist.recent_limit = 10**9
    rows.append(
        ("request", "histogram record (DogStatsD sample list on)", per_call_us(lambda: hist.record(3.0), n))
    )

    # -- background ------------------------------------------------------------------------------------------
    rec = record()
    default_fmt = compile_format(AccessLogConfig("/dev/null"))
    rows.append(
        (
            "background",
            "access log line, Envoy default format",
            per_call_us(lambda: default_fmt.render(rec), n),
        )
    )
    json_fmt = compile_format(
        AccessLogConfig(
            "/dev/null",
            json_format=(("start", "%START_TIME%"), ("method", "%REQ(:METHOD)%"), ("path", "%REQ(:PATH)%"),
                         ("code", "%RESPONSE_CODE%"), ("duration", "%DURATION%"),
                         ("upstream", "%UPSTREAM_HOST%")),
        )
    )  # fmt: skip
    rows.append(
        ("background", "access log line, 6-key JSON format", per_call_us(lambda: json_fmt.render(rec), n))
    )

    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sender = DatagramSender(StatsStore().server, host="127.0.0.1", port=daemon.getsockname()[1])
    sender.open()
    ctx = TraceContext("egress", 0x8A3C60F7D188F8FA, 0x6650A1B25F1C2A3B4D5E6F708192A3B4, None, 0, None, True)
    segment = SegmentConfig.from_identity(IDENTITY, "")
    traced = record(ctx)

    def xray_send() -> None:
        sender.send(encode_datagram(build_segment(traced, ctx, segment)))
        with contextlib.suppress(BlockingIOError):
            daemon.recv(65535, socket.MSG_DONTWAIT)  # keep the receive buffer from filling

    rows.append(("background", "X-Ray segment build + encode + sendto (+recv)", per_call_us(xray_send, n)))
    sender.close()
    daemon.close()

    from meshproxy.telemetry.otel import OtlpSpanSink

    sink = OtlpSpanSink("http://127.0.0.1:9", IDENTITY, "apps/serviceA")
    rows.append(
        ("background", "OTLP span build (ReadableSpan)", per_call_us(lambda: sink.build_span(traced, ctx), n))
    )
    sink._processor.shutdown()  # type: ignore[no-untyped-call]  # nothing was queued: no export attempt

    naming = StatNaming.from_settings(settings(stats_tags=True))
    for clusters in (10, 100):
        big = store_with(clusters)
        flusher = DogStatsdFlusher(naming)
        flusher.lines(big)

        def flush(big: StatsStore = big, flusher: DogStatsdFlusher = flusher) -> object:
            return pack(flusher.lines(big), MAX_UDP_PAYLOAD)

        def scrape(big: StatsStore = big) -> object:
            return render_prometheus(big, naming)

        rows.append(
            (
                "background",
                f"DogStatsD flush lines+pack, {clusters} clusters (per flush)",
                per_call_us(flush, 50),
            )
        )
        rows.append(
            ("background", f"Prometheus render, {clusters} clusters (per scrape)", per_call_us(scrape, 20))
        )

    width = max(len(name) for _, name, _ in rows)
    print(f"{'where':<10}  {'what':<{width}}  {'us':>10}")
    for where, name, us in rows:
        print(f"{where:<10}  {name:<{width}}  {us:>10.2f}")


if __name__ == "__main__":
    main()
