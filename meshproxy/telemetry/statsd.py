"""DogStatsD lines for `ENABLE_ENVOY_DOG_STATSD=1`, as Envoy's dog_statsd sink writes them (spec §5.2).

Every `ENVOY_STATS_FLUSH_INTERVAL` the flusher reads the store and writes:

- each used counter as `envoy.<tag-extracted name>:<delta since last flush>|c|#k:v,...`;
- each gauge as `envoy.<name>:<value>|g|#...`;
- each histogram sample as a timer `envoy.<name>:<ms>|ms|#...`. Samples come from the histogram's bounded
  `recent` list; when more samples arrived than it holds, the kept ones carry the DogStatsD sample rate
  `|@<kept/total>` so the agent still counts them all; when none were kept (a scope created since the last
  flush), one line per touched bucket carries the bucket's upper bound and `|@1/<count>`.

Lines are packed several per datagram, separated by `\\n`, each datagram at most 1432 bytes over UDP (an
Ethernet MTU minus IP/UDP headers, what DogStatsD clients use) or 8192 bytes over a unix socket.
"""

from __future__ import annotations

from meshproxy.telemetry.names import StatKind, StatNaming, StatPoint, collect
from meshproxy.telemetry.stats import DEFAULT_BUCKETS, Histogram, StatsStore

MAX_UDP_PAYLOAD = 1432
MAX_UDS_PAYLOAD = 8192
PREFIX = "envoy."
# How many samples per histogram and flush interval are kept for timers (the rest are represented by the
# sample rate). Bounds memory whatever the request rate.
RECENT_LIMIT = 1000

# Characters that would break the line grammar `name:value|type|@rate|#k:v,k:v`.
_NAME_UNSAFE = str.maketrans({":": "_", "|": "_", "@": "_", "#": "_", ",": "_", "\n": "_", " ": "_"})
_TAG_UNSAFE = str.maketrans({"|": "_", ",": "_", "\n": "_", "#": "_"})


def format_ms(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _rate(kept: int, total: int) -> str:
    return format(kept / total, ".6g")


class DogStatsdFlusher:
    """Turns successive reads of a store into DogStatsD lines (keeps the counter values of the last flush)."""

    def __init__(self, naming: StatNaming, *, recent_limit: int = RECENT_LIMIT) -> None:
        self.naming = naming
        self.recent_limit = recent_limit
        self._last_counter: dict[str, int] = {}
        self._last_hist: dict[str, tuple[int, list[int]]] = {}
        self._heads: dict[str, str] = {}
        self._tails: dict[str, str] = {}

    def enable_samples(self, store: StatsStore) -> None:
        """Make every histogram of `store` keep up to `recent_limit` samples for the next flush."""
        for hist in store.histograms():
            if hist.recent_limit < self.recent_limit:
                hist.recent_limit = self.recent_limit

    def _head_tail(self, point: StatPoint) -> tuple[str, str]:
        full = point.name.full
        head = self._heads.get(full)
        if head is None:
            head = self._heads[full] = (PREFIX + point.name.extracted).translate(_NAME_UNSAFE) + ":"
            tags = (*point.name.tags, *self.naming.fixed)
            self._tails[full] = (
                "|#" + ",".join(k.translate(_TAG_UNSAFE) + ":" + v.translate(_TAG_UNSAFE) for k, v in tags)
                if tags
                else ""
            )
        return head, self._tails[full]

    def lines(self, store: StatsStore) -> list[str]:
        """The lines of one flush; updates the counter baselines and drains the histograms' samples."""
        out: list[str] = []
        for point in collect(store, self.naming):
            full = point.name.full
            if point.kind is StatKind.COUNTER:
                last = self._last_counter.get(full)
                if last is None and point.value == 0:
                    continue  # never used: Envoy's sink skips counters that were never incremented
                delta = point.value - (last or 0)
                if delta < 0:  # counters were reset (/reset_counters): the whole value is new
                    delta = point.value
                self._last_counter[full] = point.value
                head, tail = self._head_tail(point)
                out.append(head + str(delta) + "|c" + tail)
            elif point.kind is StatKind.GAUGE:
                head, tail = self._head_tail(point)
                out.append(head + str(point.value) + "|g" + tail)
            else:
                assert point.histogram is not None
                self._histogram_lines(point, point.histogram, out)
        return out

    def _histogram_lines(self, point: StatPoint, hist: Histogram, out: list[str]) -> None:
        full = point.name.full
        last_count, last_buckets = self._last_hist.get(full, (0, []))
        samples = hist.recent
        hist.recent = []
        hist.recent_dropped = 0
        new = hist.count - last_count
        if new < 0:  # the histogram was reset
            new, last_buckets = hist.count, []
        buckets = list(hist.counts)
        self._last_hist[full] = (hist.count, buckets)
        if new <= 0:
            return
        head, tail = self._head_tail(point)
        if samples:
            rate = "" if len(samples) >= new else "|@" + _rate(len(samples), new)
            for value in samples:
                out.append(head + format_ms(value) + "|ms" + rate + tail)
            return
        bounds = hist.bounds or DEFAULT_BUCKETS
        for i, count in enumerate(buckets):
            delta = count - (last_buckets[i] if i < len(last_buckets) else 0)
            if delta > 0:
                bound = bounds[i] if i < len(bounds) else bounds[-1]
                rate = "" if delta == 1 else "|@" + _rate(1, delta)
                out.append(head + format_ms(bound) + "|ms" + rate + tail)


def pack(lines: list[str], limit: int) -> list[bytes]:
    """Join lines with `\\n` into datagrams of at most `limit` bytes (a longer single line goes alone)."""
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8")
        extra = len(data) + (1 if current else 0)
        if current and size + extra > limit:
            datagrams.append(b"\n".join(current))
            current, size, extra = [], 0, len(data)
        current.append(data)
        size += extra
    if current:
        datagrams.append(b"\n".join(current))
    return datagrams
