"""The stats as prometheus-client sees them: a `Collector` over a StatsStore and the text it writes.

`/stats/prometheus` is served by telemetry/prometheus.py's own renderer, which does not load
prometheus-client; this is the same text through prometheus-client's data model (`render_with_registry`),
for tools that want the stats in a `CollectorRegistry`, and the oracle the renderer is tested against.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from meshproxy.telemetry.names import StatKind, StatNaming, StatPoint, collect
from meshproxy.telemetry.prometheus import _bound, _label_text, sanitize_label_name, sanitize_metric_name
from meshproxy.telemetry.stats import StatsStore

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
            for labels, point in sorted(series, key=lambda s: _label_text(s[0])):
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
                labels = _label_text(tuple(sample.labels.items()))
                out.append(sample.name + "{" + labels + "} " + _number(sample.value) + "\n")
            else:
                out.append(sample.name + " " + _number(sample.value) + "\n")
    return "".join(out).encode("utf-8")


def render_with_registry(store: StatsStore, naming: StatNaming) -> bytes:
    """The same text through prometheus-client's data model (a private registry and `EnvoyStatsCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnvoyStatsCollector(store, naming))
    return exposition(registry)
