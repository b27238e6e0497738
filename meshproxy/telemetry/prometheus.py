"""`GET /stats/prometheus`: the store in Prometheus text exposition format, as Envoy writes it (spec §5.3).

Metric families are prometheus-client `Metric` objects built by a custom `Collector` on a private
`CollectorRegistry`. The text is written by `exposition` rather than `prometheus_client.generate_latest`,
because generate_latest appends `_total` to every counter's `# TYPE` line, and Envoy's counters keep their own
names: `envoy_cluster_upstream_rq{envoy_response_code="200"}` and `envoy_cluster_upstream_cx_connect_fail`
are counters that do not end in `_total`, and scrapers that read `# TYPE` (the CloudWatch agent) must see them
as counters. Number formatting and label escaping are prometheus-client's.

Rules (spec §5.3): family name `envoy_` + tag-extracted name with every character outside `[a-zA-Z0-9_]`
turned into `_`; one label per tag, label names sanitised the same way (leading digit gets `_`), values kept
verbatim; histograms as `_bucket{le=...}`, `_sum`, `_count` with Envoy's default bounds; families sorted by
name and series by labels; only `# TYPE` lines (Envoy writes no `# HELP`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from meshproxy.telemetry.names import StatKind, StatNaming, StatPoint, collect
from meshproxy.telemetry.stats import StatsStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_label_names: dict[str, str] = {}


def sanitize_metric_name(name: str) -> str:
    return _INVALID.sub("_", name)


def sanitize_label_name(name: str) -> str:
    out = _label_names.get(name)
    if out is None:
        out = _INVALID.sub("_", name)
        if out[:1].isdigit():
            out = "_" + out
        _label_names[name] = out
    return out


def _bound(value: float) -> str:
    # Envoy formats bucket bounds with "{:.32g}": 0.5, 1, 3600000 (never 3.6e+06).
    return format(value, ".32g")


_Series = tuple[tuple[tuple[str, str], ...], StatPoint]


class EnvoyStatsCollector(Collector):
    """A prometheus-client collector over one StatsStore (possibly an aggregate of several workers)."""

    def __init__(self, store: StatsStore, naming: StatNaming) -> None:
        self.store = store
        self.naming = naming

    def collect(self) -> Iterable[Metric]:
        fixed = self.naming.fixed
        by_family: dict[str, tuple[StatKind, list[_Series]]] = {}
        for point in collect(self.store, self.naming):
            family = "envoy_" + sanitize_metric_name(point.name.extracted)
            labels = tuple((sanitize_label_name(k), v) for k, v in (*point.name.tags, *fixed))
            entry = by_family.get(family)
            if entry is None:
                entry = by_family[family] = (point.kind, [])
            if entry[0] is point.kind:  # a family has one type; a clash would make the scrape invalid
                entry[1].append((labels, point))
        for family in sorted(by_family):
            kind, series = by_family[family]
            metric = Metric(family, "", kind.value)
            seen: set[tuple[tuple[str, str], ...]] = set()
            for labels, point in sorted(series, key=lambda s: s[0]):
                if labels in seen:  # a duplicate series makes Prometheus reject the whole scrape
                    continue
                seen.add(labels)
                label_map = dict(labels)
                hist = point.histogram
                if hist is None:
                    metric.add_sample(family, label_map, point.value)
                    continue
                running = 0
                for bound, count in zip(hist.bounds, hist.counts, strict=False):
                    running += count
                    metric.add_sample(family + "_bucket", {**label_map, "le": _bound(bound)}, running)
                metric.add_sample(family + "_bucket", {**label_map, "le": "+Inf"}, hist.count)
                metric.add_sample(family + "_sum", label_map, hist.sum)
                metric.add_sample(family + "_count", label_map, hist.count)
            yield metric


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format (0.0.4) of every family in `registry`, with family names as given."""
    out: list[str] = []
    for metric in registry.collect():
        out.append(
            "# TYPE " + metric.name + " " + ("untyped" if metric.type == "unknown" else metric.type) + "\n"
        )
        for sample in metric.samples:
            if sample.labels:
                labels = ",".join(k + '="' + _escape(v) + '"' for k, v in sample.labels.items())
                out.append(sample.name + "{" + labels + "} " + _number(sample.value) + "\n")
            else:
                out.append(sample.name + " " + _number(sample.value) + "\n")
    return "".join(out).encode("utf-8")


def render_prometheus(store: StatsStore, naming: StatNaming) -> bytes:
    """The body of `GET /stats/prometheus` for `store`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnvoyStatsCollector(store, naming))
    return exposition(registry)
