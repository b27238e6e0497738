"""`GET /stats/prometheus`: the store in Prometheus text exposition format, as Envoy writes it (spec §5.3).

Two paths produce the same text (a unit test holds them equal):

- `PrometheusRenderer.render`, what `/stats/prometheus` serves: writes the text straight from the store,
  with each series' family name and label string built once and cached (a scrape of 100 clusters is a few
  milliseconds of event-loop time instead of tens);
- `EnvoyStatsCollector`, a prometheus-client `Collector` yielding `Metric` families, for anything that wants
  the stats in a prometheus-client `CollectorRegistry`; `exposition(registry)` writes them.

Neither uses `prometheus_client.generate_latest`: it appends `_total` to every counter's `# TYPE` line, and
Envoy's counters keep their own names. `envoy_cluster_upstream_rq{envoy_response_code="200"}` and
`envoy_cluster_upstream_cx_connect_fail` are counters that do not end in `_total`, and scrapers that read
`# TYPE` (the CloudWatch agent) must see them as counters. Float formatting is prometheus-client's.

Rules (spec §5.3): family name `envoy_` + tag-extracted name with every character outside `[a-zA-Z0-9_]`
turned into `_`; one label per tag, label names sanitised the same way (leading digit gets `_`), values kept
verbatim; histograms as `_bucket{le=...}`, `_sum`, `_count` with Envoy's default bounds; families sorted by
name and series by labels; only `# TYPE` lines (Envoy writes no `# HELP`).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from operator import itemgetter

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


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(k + '="' + _escape(v) + '"' for k, v in labels)


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
                labels = _label_text(tuple(sample.labels.items()))
                out.append(sample.name + "{" + labels + "} " + _number(sample.value) + "\n")
            else:
                out.append(sample.name + " " + _number(sample.value) + "\n")
    return "".join(out).encode("utf-8")


class _SeriesLines:
    """The pre-built line prefixes of one series (family name, escaped labels, bucket bounds)."""

    __slots__ = ("bucket_prefixes", "count_prefix", "family", "inf_prefix", "labels", "prefix", "sum_prefix")

    def __init__(self, family: str, labels: str, bounds: tuple[float, ...] | None) -> None:
        self.family = family
        self.labels = labels
        suffix = ("{" + labels + "} ") if labels else " "
        self.prefix = family + suffix
        if bounds is None:
            self.bucket_prefixes: list[str] = []
            self.inf_prefix = self.sum_prefix = self.count_prefix = ""
            return
        bucket = family + "_bucket{" + labels + (',le="' if labels else 'le="')
        self.bucket_prefixes = [bucket + _bound(b) + '"} ' for b in bounds]
        self.inf_prefix = bucket + '+Inf"} '
        self.sum_prefix = family + "_sum" + suffix
        self.count_prefix = family + "_count" + suffix


class PrometheusRenderer:
    """Renders a store for one StatNaming, caching each series' line prefixes (built on first sight)."""

    def __init__(self, naming: StatNaming) -> None:
        self.naming = naming
        self._series: dict[str, _SeriesLines] = {}  # full stat name -> prefixes

    def _series_of(self, point: StatPoint) -> _SeriesLines:
        name = point.name
        labels = ",".join(
            sanitize_label_name(k) + '="' + _escape(v) + '"' for k, v in (*name.tags, *self.naming.fixed)
        )
        bounds = point.histogram.bounds if point.histogram is not None else None
        series = _SeriesLines("envoy_" + sanitize_metric_name(name.extracted), labels, bounds)
        self._series[name.full] = series
        return series

    def render(self, store: StatsStore) -> bytes:
        cache = self._series
        groups: dict[str, tuple[StatKind, list[tuple[str, _SeriesLines, StatPoint]]]] = {}
        for point in collect(store, self.naming):
            series = cache.get(point.name.full)
            if series is None:
                series = self._series_of(point)
            group = groups.get(series.family)
            if group is None:
                group = groups[series.family] = (point.kind, [])
            if group[0] is point.kind:  # a family has one type; a clash would make the scrape invalid
                group[1].append((series.labels, series, point))
        out: list[str] = []
        append = out.append
        for family in sorted(groups):
            kind, members = groups[family]
            append("# TYPE " + family + " " + kind.value + "\n")
            members.sort(key=itemgetter(0))
            previous = None
            for labels, series, point in members:
                if labels == previous:  # a duplicate series makes Prometheus reject the whole scrape
                    continue
                previous = labels
                hist = point.histogram
                if hist is None:
                    append(series.prefix + str(point.value) + "\n")
                    continue
                running = 0
                for prefix, count in zip(series.bucket_prefixes, hist.counts, strict=False):
                    running += count
                    append(prefix + str(running) + "\n")
                append(series.inf_prefix + str(hist.count) + "\n")
                append(series.sum_prefix + _number(hist.sum) + "\n")
                append(series.count_prefix + str(hist.count) + "\n")
        return "".join(out).encode("utf-8")


_renderers: weakref.WeakKeyDictionary[StatNaming, PrometheusRenderer] = weakref.WeakKeyDictionary()


def render_prometheus(store: StatsStore, naming: StatNaming) -> bytes:
    """The body of `GET /stats/prometheus` for `store` (the renderer's caches live as long as `naming`)."""
    renderer = _renderers.get(naming)
    if renderer is None:
        renderer = _renderers[naming] = PrometheusRenderer(naming)
    return renderer.render(store)


def render_with_registry(store: StatsStore, naming: StatNaming) -> bytes:
    """The same text through prometheus-client's data model (a private registry and `EnvoyStatsCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnvoyStatsCollector(store, naming))
    return exposition(registry)
