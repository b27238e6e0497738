"""DogStatsD line formatting, counter deltas, timer samples and datagram packing (spec §5.2)."""

from __future__ import annotations

import re
from collections.abc import Callable

from meshproxy.settings import Settings
from meshproxy.telemetry.names import StatNaming
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.statsd import MAX_UDP_PAYLOAD, DogStatsdFlusher, format_ms, pack

CLUSTER = "cds_egress_apps_serviceB_http_9080"
# <name>:<value>|<type>[|@<rate>][|#k:v,...]  (Datadog datagram shell)
LINE = re.compile(r"([a-zA-Z0-9_.]+):(-?[0-9.]+)\|(c|g|ms)(?:\|@([0-9.e-]+))?(?:\|#(.+))?")


def tagged_flusher(make_settings: Callable[..., Settings], **kw: object) -> DogStatsdFlusher:
    return DogStatsdFlusher(StatNaming.from_settings(make_settings(stats_tags=True, **kw)))


def test_spec_example_lines(make_settings: Callable[..., Settings]) -> None:
    store = StatsStore()
    c = store.cluster(CLUSTER)
    c.upstream_rq_total = 3
    for _ in range(3):
        c.count_response(200)
    store.server.control_plane_connected_state = 1
    flusher = tagged_flusher(make_settings)
    flusher.enable_samples(store)
    c.upstream_rq_time.record(12)
    lines = flusher.lines(store)
    tags = "appmesh.mesh:apps,appmesh.virtual_node:serviceA"
    assert f"envoy.cluster.upstream_rq_total:3|c|#envoy.cluster_name:{CLUSTER},{tags}" in lines
    assert (
        f"envoy.cluster.upstream_rq_xx:3|c|#envoy.response_code_class:2,envoy.cluster_name:{CLUSTER},{tags}"
        in lines
    )
    assert f"envoy.cluster.upstream_rq_time:12|ms|#envoy.cluster_name:{CLUSTER},{tags}" in lines
    assert f"envoy.control_plane.connected_state:1|g|#{tags}" in lines
    for line in lines:
        assert LINE.fullmatch(line), line


def test_metric_extension_line(make_settings: Callable[..., Settings]) -> None:
    store = StatsStore()
    store.target("serviceb.apps.local", "serviceB").request_count_per_target = 1
    flusher = DogStatsdFlusher(StatNaming.from_settings(make_settings(metric_extension_version=1)))
    lines = flusher.lines(store)
    assert (
        "envoy.appmesh.RequestCountPerTarget:1|c|#TargetVirtualNode:serviceB,"
        "TargetVirtualService:serviceb.apps.local,Mesh:apps,VirtualNode:serviceA"
    ) in lines


def test_counters_are_deltas_and_unused_counters_are_skipped(make_settings: Callable[..., Settings]) -> None:
    store = StatsStore()
    c = store.cluster(CLUSTER)
    flusher = DogStatsdFlusher(StatNaming())
    first = flusher.lines(store)
    assert not [line for line in first if "|c" in line]  # nothing counted yet
    assert "envoy.server.state:2|g" in first  # gauges always

    c.upstream_rq_total = 5
    assert f"envoy.cluster.upstream_rq_total:5|c|#envoy.cluster_name:{CLUSTER}" in flusher.lines(store)
    c.upstream_rq_total = 8
    assert f"envoy.cluster.upstream_rq_total:3|c|#envoy.cluster_name:{CLUSTER}" in flusher.lines(store)
    # A used counter keeps being reported, with a zero delta, as Envoy's sink does.
    assert f"envoy.cluster.upstream_rq_total:0|c|#envoy.cluster_name:{CLUSTER}" in flusher.lines(store)
    store.reset_counters()
    c.upstream_rq_total = 2
    assert f"envoy.cluster.upstream_rq_total:2|c|#envoy.cluster_name:{CLUSTER}" in flusher.lines(store)


def test_timer_samples_are_drained_and_sampled_beyond_the_limit() -> None:
    store = StatsStore()
    hist = store.cluster(CLUSTER).upstream_rq_time
    flusher = DogStatsdFlusher(StatNaming(), recent_limit=4)
    flusher.enable_samples(store)
    assert hist.recent_limit == 4
    for ms in (1, 2.5, 3, 4, 5, 6, 7, 8):
        hist.record(ms)
    timers = [line for line in flusher.lines(store) if "|ms" in line]
    assert timers == [
        f"envoy.cluster.upstream_rq_time:{v}|ms|@0.5|#envoy.cluster_name:{CLUSTER}"
        for v in ("1", "2.5", "3", "4")
    ]
    assert hist.recent == []
    assert not [line for line in flusher.lines(store) if "|ms" in line]  # nothing new


def test_samples_recorded_before_enabling_fall_back_to_buckets() -> None:
    store = StatsStore()
    hist = store.cluster(CLUSTER).upstream_rq_time
    for ms in (7, 8, 9, 30):  # recent_limit is still 0: no samples kept
        hist.record(ms)
    timers = [line for line in DogStatsdFlusher(StatNaming()).lines(store) if "|ms" in line]
    assert timers == [
        f"envoy.cluster.upstream_rq_time:10|ms|@0.333333|#envoy.cluster_name:{CLUSTER}",
        f"envoy.cluster.upstream_rq_time:50|ms|#envoy.cluster_name:{CLUSTER}",
    ]


def test_unsafe_characters_never_break_the_line() -> None:
    store = StatsStore()
    store.cluster("a|b,c#d").upstream_rq_total = 1
    lines = [line for line in DogStatsdFlusher(StatNaming()).lines(store) if "upstream_rq_total" in line]
    assert lines == ["envoy.cluster.upstream_rq_total:1|c|#envoy.cluster_name:a_b_c_d"]


def test_pack_respects_the_limit_and_keeps_every_line() -> None:
    lines = [f"envoy.cluster.upstream_rq_total:{i}|c|#envoy.cluster_name:cluster_{i:04d}" for i in range(300)]
    datagrams = pack(lines, MAX_UDP_PAYLOAD)
    assert len(datagrams) > 1
    assert all(len(d) <= MAX_UDP_PAYLOAD for d in datagrams)
    assert [line.decode() for d in datagrams for line in d.split(b"\n")] == lines
    assert pack(["x" * 2000, "y:1|c"], 1432) == [b"x" * 2000, b"y:1|c"]
    assert pack([], 1432) == []


def test_format_ms() -> None:
    assert format_ms(12.0) == "12"
    assert format_ms(0.25) == "0.25"
    assert format_ms(1.23456) == "1.235"
