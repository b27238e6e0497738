"""Envoy's admin `/stats` text and JSON views."""

from __future__ import annotations

import re

import pytest

from meshproxy.telemetry.errors import StatsFilterError
from meshproxy.telemetry.names import StatNaming
from meshproxy.telemetry.stats import Histogram, StatsStore
from meshproxy.telemetry.statstext import (
    SUPPORTED_QUANTILES,
    histogram_quantile,
    render_stats_json,
    render_stats_text,
)

CLUSTER = "cds_egress_apps_serviceB_http_9080"
_HISTOGRAM_LINE = re.compile(r"([\w.]+): ((?:P[\d.]+\(nan,[\d.]+\) ?){10})")


def store() -> StatsStore:
    s = StatsStore()
    c = s.cluster(CLUSTER)
    c.upstream_rq_total = 3
    c.count_response(200)
    c.count_response(200)
    c.count_response(404)
    for ms in (3, 7, 20, 40):
        c.upstream_rq_time.record(ms)
    s.http_conn_manager("egress")
    return s


def test_text_lines_sorted_with_codes_and_classes() -> None:
    text = render_stats_text(store(), StatNaming())
    lines = text.splitlines()
    scalars = [line for line in lines if not _HISTOGRAM_LINE.fullmatch(line) and "No recorded" not in line]
    names = [line.split(": ", 1)[0] for line in scalars]
    assert names == sorted(names)
    values = dict(line.split(": ", 1) for line in scalars)
    assert values[f"cluster.{CLUSTER}.upstream_rq_200"] == "2"
    assert values[f"cluster.{CLUSTER}.upstream_rq_2xx"] == "2"
    assert values[f"cluster.{CLUSTER}.upstream_rq_404"] == "1"
    assert values[f"cluster.{CLUSTER}.upstream_rq_4xx"] == "1"
    assert values[f"cluster.{CLUSTER}.upstream_rq_total"] == "3"
    assert values["control_plane.connected_state"] == "0"
    assert all(re.fullmatch(r"\d+", v) for v in values.values())


def test_histograms_follow_scalars_in_envoy_shape() -> None:
    lines = render_stats_text(store(), StatNaming()).splitlines()
    hist = [line for line in lines if line.startswith(f"cluster.{CLUSTER}.upstream_rq_time:")]
    assert len(hist) == 1
    m = _HISTOGRAM_LINE.fullmatch(hist[0])
    assert m is not None, hist[0]
    quantiles = dict(re.findall(r"P([\d.]+)\(nan,([\d.]+)\)", m.group(2)))
    assert list(quantiles) == ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100"]
    assert 1 <= float(quantiles["0"]) <= 3
    assert 10 <= float(quantiles["50"]) <= 25
    assert float(quantiles["100"]) == 50
    assert "http.egress.downstream_rq_time: No recorded values" in lines
    first_histogram = min(i for i, line in enumerate(lines) if "P0(" in line or "No recorded" in line)
    assert all(("P0(" in line or "No recorded" in line) for line in lines[first_histogram:])


def test_filter_and_usedonly() -> None:
    text = render_stats_text(store(), StatNaming(), filter=r"upstream_rq_\d")
    assert text.splitlines() == [
        f"cluster.{CLUSTER}.upstream_rq_200: 2",
        f"cluster.{CLUSTER}.upstream_rq_2xx: 2",
        f"cluster.{CLUSTER}.upstream_rq_404: 1",
        f"cluster.{CLUSTER}.upstream_rq_4xx: 1",
    ]
    used = render_stats_text(store(), StatNaming(), usedonly=True).splitlines()
    assert f"cluster.{CLUSTER}.upstream_rq_total: 3" in used
    assert not [line for line in used if line.endswith(": 0") or "No recorded" in line]
    assert any(line.startswith(f"cluster.{CLUSTER}.upstream_rq_time: P0(") for line in used)


def test_invalid_filter_is_a_clear_error() -> None:
    with pytest.raises(StatsFilterError, match="invalid filter regex"):
        render_stats_text(store(), StatNaming(), filter="upstream_rq_(")
    with pytest.raises(StatsFilterError):
        render_stats_json(store(), StatNaming(), filter="[")


def test_json_shape() -> None:
    doc = render_stats_json(store(), StatNaming())
    stats = doc["stats"]
    assert isinstance(stats, list)
    scalars = {s["name"]: s["value"] for s in stats if "name" in s}
    assert scalars[f"cluster.{CLUSTER}.upstream_rq_2xx"] == 2
    histograms = stats[-1]["histograms"]
    assert histograms["supported_quantiles"] == list(SUPPORTED_QUANTILES)
    computed = {h["name"]: h["values"] for h in histograms["computed_quantiles"]}
    values = computed[f"cluster.{CLUSTER}.upstream_rq_time"]
    assert len(values) == len(SUPPORTED_QUANTILES)
    assert all(v["interval"] is None and isinstance(v["cumulative"], float) for v in values)
    assert computed["http.egress.downstream_rq_time"][0]["cumulative"] is None


def test_histogram_quantile_interpolates_inside_buckets() -> None:
    h = Histogram()
    assert histogram_quantile(h, 50) is None
    for _ in range(10):
        h.record(7)  # bucket (5, 10]
    assert histogram_quantile(h, 0) == 5
    assert histogram_quantile(h, 50) == pytest.approx(7.5)
    assert histogram_quantile(h, 100) == 10
    h.record(10_000_000)  # +Inf bucket: reported at the last finite bound
    assert histogram_quantile(h, 100) == 3_600_000
