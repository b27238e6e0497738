"""Envoy's admin `/stats` views of a StatsStore: plain text (`name: value`) and JSON.

Text: counters and gauges as `name: value` sorted by name, then histograms sorted by name as Envoy prints
them, `name: P0(i,c) P25(i,c) P50(i,c) P75(i,c) P90(i,c) P95(i,c) P99(i,c) P99.5(i,c) P99.9(i,c) P100(i,c)`
(i = interval quantile, always `nan` here because meshproxy keeps only cumulative histograms; c = cumulative
quantile, interpolated inside Envoy's default buckets), or `name: No recorded values`.
JSON: `{"stats": [{"name": ..., "value": ...}, ..., {"histograms": {"supported_quantiles": [...],
"computed_quantiles": [{"name": ..., "values": [{"interval": null, "cumulative": ...}, ...]}]}}]}`.

`filter` is a regular expression searched in the full stat name (Envoy `?filter=`); `usedonly` keeps stats
that were ever written, which meshproxy approximates as non-zero values and non-empty histograms.
"""

from __future__ import annotations

import math
import re

from meshproxy.telemetry.errors import StatsFilterError
from meshproxy.telemetry.names import StatKind, StatNaming, StatPoint, collect
from meshproxy.telemetry.stats import Histogram, StatsStore

SUPPORTED_QUANTILES: tuple[float, ...] = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100)


def _compile_filter(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise StatsFilterError(f"invalid filter regex {pattern!r}: {exc}") from None


def histogram_quantile(hist: Histogram, percent: float) -> float | None:
    """The `percent` quantile of `hist`, linearly interpolated inside its bucket (None when empty)."""
    if not hist.count:
        return None
    target = percent / 100.0 * hist.count
    running = 0
    last = len(hist.counts) - 1
    for i, count in enumerate(hist.counts):
        if not count:
            continue
        lower = float(hist.bounds[i - 1]) if i > 0 else 0.0
        upper = float(hist.bounds[i] if i < len(hist.bounds) else hist.bounds[-1])
        if running + count >= target or i == last:
            if percent == 0:
                return lower
            fraction = max(0.0, min(1.0, (target - running) / count))
            return lower + (upper - lower) * fraction
        running += count
    return None  # pragma: no cover - the loop returns once count > 0


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "nan"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _used(point: StatPoint) -> bool:
    if point.histogram is not None:
        return point.histogram.count > 0
    return point.value != 0


def _selected(
    store: StatsStore, naming: StatNaming, filter: str | None, usedonly: bool
) -> tuple[list[StatPoint], list[StatPoint]]:
    pattern = _compile_filter(filter)
    scalars: list[StatPoint] = []
    histograms: list[StatPoint] = []
    for point in collect(store, naming):
        if pattern is not None and pattern.search(point.name.full) is None:
            continue
        if usedonly and not _used(point):
            continue
        (histograms if point.kind is StatKind.HISTOGRAM else scalars).append(point)
    scalars.sort(key=lambda p: p.name.full)
    histograms.sort(key=lambda p: p.name.full)
    return scalars, histograms


def render_stats_text(
    store: StatsStore, naming: StatNaming, filter: str | None = None, usedonly: bool = False
) -> str:
    """Envoy's `/stats` text. Raises StatsFilterError for an invalid `filter` regex."""
    scalars, histograms = _selected(store, naming, filter, usedonly)
    lines = [p.name.full + ": " + str(p.value) for p in scalars]
    for p in histograms:
        hist = p.histogram
        assert hist is not None
        if not hist.count:
            lines.append(p.name.full + ": No recorded values")
            continue
        parts = [
            "P" + _number(q) + "(nan," + _number(histogram_quantile(hist, q)) + ")"
            for q in SUPPORTED_QUANTILES
        ]
        lines.append(p.name.full + ": " + " ".join(parts))
    return "".join(line + "\n" for line in lines)


def render_stats_json(
    store: StatsStore, naming: StatNaming, filter: str | None = None, usedonly: bool = False
) -> dict[str, object]:
    """Envoy's `/stats?format=json`. Raises StatsFilterError for an invalid `filter` regex."""
    scalars, histograms = _selected(store, naming, filter, usedonly)
    stats: list[object] = [{"name": p.name.full, "value": p.value} for p in scalars]
    computed: list[object] = []
    for p in histograms:
        hist = p.histogram
        assert hist is not None
        values = [{"interval": None, "cumulative": histogram_quantile(hist, q)} for q in SUPPORTED_QUANTILES]
        computed.append({"name": p.name.full, "values": values})
    if computed:
        stats.append(
            {"histograms": {"supported_quantiles": list(SUPPORTED_QUANTILES), "computed_quantiles": computed}}
        )
    return {"stats": stats}
