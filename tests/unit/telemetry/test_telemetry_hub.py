"""The Telemetry seams the router calls: wants_summary, start_trace, request_done (+ metrics extension)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshproxy import native
from meshproxy.config.snapshot import AccessLogConfig
from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry.errors import AccessLogFormatError, SamplingManifestError
from meshproxy.telemetry.hub import Telemetry, TelemetryState
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.tracing import TraceContext, TraceStart


def telemetry(make_settings: Callable[..., Settings], **settings: Any) -> Telemetry:
    return Telemetry(make_settings(**settings), StatsStore(), queue_limit=3)


def finished(trace: object = None) -> RequestSummary:
    return RequestSummary(direction="ingress", start_time=1716560306.0, response_code=200, trace=trace)


def test_wants_summary_follows_sinks(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    assert t.wants_summary is False
    t.set_access_log(AccessLogConfig("/dev/stdout"))
    assert t.wants_summary is True
    t.set_access_log(None)
    assert t.wants_summary is False
    assert telemetry(make_settings, xray=True).wants_summary is True
    assert telemetry(make_settings, otel_endpoint="http://127.0.0.1:4318").wants_summary is True


def test_bad_access_log_format_changes_nothing(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    good = AccessLogConfig("/dev/stdout", text_format="%RESPONSE_CODE%\n")
    t.set_access_log(good)
    with pytest.raises(AccessLogFormatError):
        t.set_access_log(AccessLogConfig("/dev/stdout", text_format="%BOGUS%"))
    assert t.wants_summary is True
    t.request_done(finished())
    t._drain_batch(10)  # the previous format still formats (the writer is not started: lines queue)
    assert "accesslog" in repr(t)


def test_request_done_queues_only_what_a_sink_wants(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    t.request_done(finished())
    assert "pending=0" in repr(t)

    traced = telemetry(make_settings, xray=True)
    sampled = traced.start_trace(
        "ingress",
        [(b"x-amzn-trace-id", b"Root=1-6650a1b2-5f1c2a3b4d5e6f708192a3b4;Sampled=1")],
        "GET",
        "a",
        "/",
    )
    unsampled = traced.start_trace(
        "ingress",
        [(b"x-amzn-trace-id", b"Root=1-6650a1b2-5f1c2a3b4d5e6f708192a3b4;Sampled=0")],
        "GET",
        "a",
        "/",
    )
    assert sampled is not None and unsampled is not None
    traced.request_done(finished(unsampled.context))
    assert "pending=0" in repr(traced)
    traced.request_done(finished(sampled.context))
    traced.request_done(finished(sampled))  # the TraceStart itself is accepted too
    assert "pending=2" in repr(traced)


def test_full_queue_drops_and_counts(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    t.set_access_log(AccessLogConfig("/dev/stdout"))
    for _ in range(5):
        t.request_done(finished())
    assert "pending=3" in repr(t)
    assert t.store.server.telemetry_dropped_total == 2


def test_request_done_never_raises(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings, xray=True)
    t.set_access_log(AccessLogConfig("/dev/stdout"))
    if native.form() == "compiled":
        # compiled, the argument's type is checked at the call, before the hub's code runs (mypy --strict
        # holds every caller to RequestSummary); only the pure form can be handed something else
        with pytest.raises(TypeError):
            t.request_done(None)  # type: ignore[arg-type]
        return
    t.request_done(None)  # type: ignore[arg-type]
    t.request_done(object())  # type: ignore[arg-type]
    t._drain_batch(10)  # a record that cannot be formatted is counted, not raised
    assert t.store.server.telemetry_dropped_total >= 1


def test_start_trace_none_without_tracing_and_never_raises(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    assert t.start_trace("egress", [(b"host", b"a")], "GET", "a", "/") is None
    traced = telemetry(make_settings, xray=True)
    weird = [(b"x-amzn-trace-id", bytes(range(256))), (b"traceparent", b"\xff" * 60)]
    ts = traced.start_trace("egress", weird, "GET", "a", "/")
    assert isinstance(ts, TraceStart) and isinstance(ts.context, TraceContext)
    assert traced.start_trace("egress", None, "GET", "a", "/") is None  # type: ignore[arg-type]


def test_metric_extension_counts_targets_from_summaries(make_settings: Callable[..., Settings]) -> None:
    plain = telemetry(make_settings)
    assert plain.wants_summary is False
    plain.request_done(finished())
    assert plain.store.targets == {}
    t = telemetry(make_settings, metric_extension_version=1)
    assert t.wants_summary is True  # the extension reads summaries even with no sink
    summary = RequestSummary(
        direction="egress",
        start_time=1716560306.0,
        response_code=503,
        bytes_received=3,
        bytes_sent=4,
        duration_ms=12,
        virtual_service="serviceb.apps.local",
        target_virtual_node="serviceB",
    )
    t.request_done(summary)
    t.request_done(summary)
    scope = t.store.target("serviceb.apps.local", "serviceB")
    assert scope.request_count_per_target == 2
    assert scope.target_processed_bytes == 14
    assert b'envoy_appmesh_RequestCountPerTarget{TargetVirtualNode="serviceB"' in t.render_prometheus()


def test_renderers_accept_another_store(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings)
    other = StatsStore()
    other.cluster("aggregate").upstream_rq_total = 9
    assert b'envoy_cluster_upstream_rq_total{envoy_cluster_name="aggregate"} 9' in t.render_prometheus(other)
    assert "cluster.aggregate.upstream_rq_total: 9" in t.render_stats_text(store=other).splitlines()
    assert b"aggregate" not in t.render_prometheus()
    assert {"name": "cluster.aggregate.upstream_rq_total", "value": 9} in t.render_stats_json(store=other)[
        "stats"
    ]  # type: ignore[operator]


def test_sampling_manifest_is_loaded_or_rejected(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": 2, "default": {"fixed_target": 0, "rate": 0}}))
    t = telemetry(make_settings, xray=True, xray_sampling_rule_manifest=str(path))
    ts = t.start_trace("ingress", [], "GET", "a", "/")
    assert ts is not None and isinstance(ts.context, TraceContext) and ts.context.sampled is False
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(SamplingManifestError, match="version"):
        telemetry(make_settings, xray=True, xray_sampling_rule_manifest=str(path))


def test_initial_state(make_settings: Callable[..., Settings]) -> None:
    t = telemetry(make_settings, dogstatsd=True)
    assert t.state is TelemetryState.STOPPED
    assert repr(t) == "<Telemetry STOPPED sinks=statsd pending=0>"


def test_tracing_off_still_propagates_an_incoming_traceparent(make_settings: Callable[..., Settings]) -> None:
    """With X-Ray and OTLP off the hub answers most requests without the tracer (no traceparent: None), but
    a request that carries a traceparent still gets its W3C context propagated with a new parent id."""
    hub = telemetry(make_settings)
    plain = [(b"host", b"backend"), (b"x-amzn-trace-id", b"Root=1-5759e988-bd862e3fe1be46a994272793")]
    assert hub.start_trace("egress", plain, "GET", "backend", "/") is None
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    started = hub.start_trace("egress", [(b"traceparent", incoming.encode())], "GET", "backend", "/")
    assert isinstance(started, TraceStart) and isinstance(started.context, TraceContext)
    assert started.context.w3c_trace == int("0af7651916cd43dd8448eb211c80319c", 16)
    traceparent = dict(started.upstream_headers)[b"traceparent"].decode()
    assert traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert traceparent.split("-")[2] != "b7ad6b7169203331"  # this proxy's span is the new parent
