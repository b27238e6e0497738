"""`GET /stats/prometheus`: the store in Prometheus text exposition format, as Envoy writes it (spec §5.3).

Two paths produce the same text (a unit test holds them equal):

- `PrometheusRenderer.render`, what `/stats/prometheus` serves: writes the text straight from the store,
  with each series' family name and label string built once and cached (a scrape of 100 clusters is a few
  milliseconds of event-loop time instead of tens); it does not import prometheus-client;
- `EnvoyStatsCollector` (telemetry/prometheus_registry.py), a prometheus-client `Collector` yielding
  `Metric` families, for anything that wants the stats in a prometheus-client `CollectorRegistry`.

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

import math
import re
import weakref
from operator import itemgetter

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


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(k + '="' + _escape(v) + '"' for k, v in labels)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def go_float(value: float) -> str:
    """A sample value as Prometheus' Go code writes it (prometheus-client's `floatToGoString`, which
    tests/unit/telemetry holds this to): written here so that serving /stats/prometheus does not load
    prometheus-client (5 MiB of resident memory per worker, issue 15)."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python does
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return go_float(value)


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
