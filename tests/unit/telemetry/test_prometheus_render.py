"""`/stats/prometheus` rendering (spec §5.3).

Read back with a strict parser of the 0.0.4 text format written here: prometheus-client's parser renames
counter samples (it appends `_total`), so it cannot show what Prometheus itself sees. The component test
scrapes the same output with a real Prometheus server.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from meshproxy.config.snapshot import Identity
from meshproxy.settings import Settings
from meshproxy.telemetry.names import StatNaming
from meshproxy.telemetry.prometheus import (
    go_float,
    render_prometheus,
    sanitize_label_name,
    sanitize_metric_name,
)
from meshproxy.telemetry.prometheus_registry import render_with_registry
from meshproxy.telemetry.stats import DEFAULT_BUCKETS, StatsStore

CLUSTER = "cds_egress_apps_serviceB_http_9080"


def sample_store() -> StatsStore:
    store = StatsStore()
    c = store.cluster(CLUSTER)
    c.upstream_rq_total = 3
    c.upstream_cx_connect_fail = 1
    for status in (200, 200, 503):
        c.count_response(status)
    for ms in (0.3, 12, 12, 4000, 7_000_000):
        c.upstream_rq_time.record(ms)
    store.http_conn_manager("ingress.http.8080").count_response(200)
    store.listener("0.0.0.0_15000").downstream_cx_total = 2
    store.server.control_plane_connected_state = 1
    return store


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample line, keyed by (name, labels); fails on any line that is not valid text format."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            assert re.fullmatch(r"# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|untyped)", line), (
                line
            )
            continue
        m = _SAMPLE.fullmatch(line)
        assert m is not None, line
        labels: list[tuple[str, str]] = []
        body, pos = m.group(2) or "", 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            assert lm is not None, line
            value = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], lm.group(2))
            labels.append((lm.group(1), value))
            pos = lm.end()
        key = (m.group(1), frozenset(labels))
        assert key not in out, f"duplicate series {line}"
        out[key] = float(m.group(3))
    return out


def test_counters_gauges_and_tags_as_labels() -> None:
    text = render_prometheus(sample_store(), StatNaming()).decode()
    got = samples(text)
    cluster = ("envoy_cluster_name", CLUSTER)
    assert got[("envoy_cluster_upstream_rq_total", frozenset({cluster}))] == 3
    assert got[("envoy_cluster_upstream_rq", frozenset({cluster, ("envoy_response_code", "200")}))] == 2
    assert (
        got[("envoy_cluster_upstream_rq_xx", frozenset({cluster, ("envoy_response_code_class", "5")}))] == 1
    )
    assert got[("envoy_control_plane_connected_state", frozenset())] == 1
    listener = frozenset({("envoy_listener_address", "0.0.0.0_15000")})
    assert got[("envoy_listener_downstream_cx_total", listener)] == 2
    http = frozenset(
        {
            ("envoy_http_conn_manager_prefix", "ingress"),
            ("appmesh_listener_protocol", "http"),
            ("appmesh_listener_port", "8080"),
            ("envoy_response_code_class", "2"),
        }
    )
    assert got[("envoy_http_downstream_rq_xx", http)] == 1


def test_type_lines_name_counters_as_envoy_does() -> None:
    text = render_prometheus(sample_store(), StatNaming()).decode()
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    # Envoy's counters keep their own names: no `_total` is appended to the TYPE line.
    assert types["envoy_cluster_upstream_rq_total"] == "counter"
    assert types["envoy_cluster_upstream_rq"] == "counter"
    assert types["envoy_cluster_upstream_cx_connect_fail"] == "counter"
    assert types["envoy_cluster_upstream_cx_active"] == "gauge"
    assert types["envoy_cluster_upstream_rq_time"] == "histogram"
    assert "# HELP" not in text
    # Every sample line belongs to the family declared just before it.
    family = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        else:
            assert line.startswith(family)


def test_families_sorted_by_name() -> None:
    text = render_prometheus(sample_store(), StatNaming()).decode()
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert families == sorted(families)
    assert len(families) == len(set(families))


def test_histogram_has_envoy_default_buckets_sum_and_count() -> None:
    text = render_prometheus(sample_store(), StatNaming()).decode()
    buckets = [
        line for line in text.splitlines() if line.startswith("envoy_cluster_upstream_rq_time_bucket{")
    ]
    les = [line.split('le="')[1].split('"')[0] for line in buckets]
    assert les == [format(b, ".32g") for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert "3600000" in les and "0.5" in les  # Envoy prints bounds in full, never 3.6e+06
    values = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert values == sorted(values)  # cumulative
    assert values[0] == 1 and values[-1] == 5  # 0.3 <= 0.5; 7e6 only in +Inf
    got = samples(text)
    cluster = frozenset({("envoy_cluster_name", CLUSTER)})
    assert got[("envoy_cluster_upstream_rq_time_count", cluster)] == 5
    assert got[("envoy_cluster_upstream_rq_time_sum", cluster)] == 0.3 + 12 + 12 + 4000 + 7_000_000


def test_stats_tags_add_appmesh_labels(make_settings: Callable[..., Settings], gateway: Identity) -> None:
    naming = StatNaming.from_settings(make_settings(stats_tags=True))
    got = samples(render_prometheus(sample_store(), naming).decode())
    labels = frozenset({("appmesh_mesh", "apps"), ("appmesh_virtual_node", "serviceA")})
    assert got[("envoy_control_plane_connected_state", labels)] == 1

    naming = StatNaming.from_settings(make_settings(identity=gateway, stats_tags=True))
    got = samples(render_prometheus(sample_store(), naming).decode())
    labels = frozenset({("appmesh_mesh", "apps"), ("appmesh_virtual_gateway", "edge")})
    assert got[("envoy_control_plane_connected_state", labels)] == 1


def test_metric_extension_families(make_settings: Callable[..., Settings]) -> None:
    store = sample_store()
    target = store.target("serviceb.apps.local", "serviceB")
    target.request_count_per_target = 4
    target.target_response_time.record(20)
    naming = StatNaming.from_settings(make_settings(metric_extension_version=1))
    text = render_prometheus(store, naming).decode()
    got = samples(text)
    dims = frozenset(
        {
            ("Mesh", "apps"),
            ("VirtualNode", "serviceA"),
            ("TargetVirtualService", "serviceb.apps.local"),
            ("TargetVirtualNode", "serviceB"),
        }
    )
    assert got[("envoy_appmesh_RequestCountPerTarget", dims)] == 4
    assert got[("envoy_appmesh_TargetResponseTime_count", dims)] == 1
    for metric in (
        "RequestCount",
        "GrpcRequestCount",
        "ActiveConnectionCount",
        "NewConnectionCount",
        "ProcessedBytes",
        "TargetProcessedBytes",
        "HTTPCode_Target_2XX_Count",
        "HTTPCode_Target_5XX_Count",
    ):
        assert f"# TYPE envoy_appmesh_{metric} " in text
    # With the extension on, built-in stats carry Mesh and VirtualNode too.
    assert got[
        ("envoy_control_plane_connected_state", frozenset({("Mesh", "apps"), ("VirtualNode", "serviceA")}))
    ]


def test_label_values_are_escaped_and_survive_a_parse() -> None:
    store = StatsStore()
    store.cluster('we"ird\\name\nx').upstream_rq_total = 1
    got = samples(render_prometheus(store, StatNaming()).decode())
    assert (
        got[("envoy_cluster_upstream_rq_total", frozenset({("envoy_cluster_name", 'we"ird\\name\nx')}))] == 1
    )


def test_name_sanitising() -> None:
    assert sanitize_metric_name("vulture.eats-liver") == "vulture_eats_liver"
    assert sanitize_label_name("appmesh.mesh") == "appmesh_mesh"
    assert sanitize_label_name("9lives") == "_9lives"


def test_empty_store_renders_server_stats_only() -> None:
    text = render_prometheus(StatsStore(), StatNaming()).decode()
    assert "envoy_server_live 0" in text.splitlines()
    assert "envoy_cluster_upstream" not in text and "envoy_http_" not in text


def test_fast_renderer_and_prometheus_client_collector_agree(make_settings: Callable[..., Settings]) -> None:
    store = sample_store()
    store.target("serviceb.apps.local", "serviceB").target_response_time.record(3)
    store.cluster('odd"name').count_response(404)
    naming = StatNaming.from_settings(make_settings(stats_tags=True, metric_extension_version=1))
    fast = render_prometheus(store, naming)
    assert fast == render_with_registry(store, naming)
    store.cluster(CLUSTER).upstream_rq_total += 1  # cached series, fresh values
    again = render_prometheus(store, naming)
    assert again != fast and again == render_with_registry(store, naming)


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 0.5, 1.0, 1e-7, 0.1 + 0.2, 123456.789, 1234567.0, 1e22, 3.6e6, 12345678.9, -5.25, 1e300,
     float("inf"), float("-inf"), float("nan")],
)  # fmt: skip
def test_go_float_is_prometheus_clients_float_format(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@given(st.floats())
def test_go_float_agrees_with_prometheus_client_on_any_float(value: float) -> None:
    assert go_float(value) == floatToGoString(value)
