"""Bench results: per-run measurements, per-proxy medians, the table, and bench/RESULTS.md.

RESULTS.md holds one section per (scenario, telemetry, workers), between HTML-comment markers; a run
replaces the sections it measured and keeps the others, so running one scenario does not erase the rest.
Hand-written notes outside the sections (e.g. "Where the time goes") sit after the header and are kept.

What a scenario counts (`scenarios.Figure`) sets the units: requests or messages per second and CPU µs per
request or message, or for a bulk stream MB/s and CPU seconds per GB (10^9 bytes).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.environment import Machine, Versions
from bench.load import LoadResult
from bench.scenarios import (
    H2_CLIENTS,
    H2_STREAMS,
    SCENARIOS,
    TCP_BULK_BYTES,
    TCP_MESSAGE_SIZE,
    Figure,
    LoadKind,
    Scenario,
)

MESHPROXY = "meshproxy"
ENVOY = "envoy"
DIRECT = "direct"  # the load straight to the upstream: the floor both proxies are compared against
TELEMETRY_SUFFIX = "+telemetry"  # a proxy measured with access log and X-Ray tracing on


def with_telemetry(proxy: str) -> str:
    return proxy + TELEMETRY_SUFFIX


def is_meshproxy_row(proxy: str) -> bool:
    """A meshproxy variant measured without telemetry (`meshproxy`, `meshproxy-pure`, `meshproxy@abc1234`)."""
    return proxy.startswith(MESHPROXY) and not proxy.endswith(TELEMETRY_SUFFIX)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed load run against one target. `cpu_s` is the proxy tree's CPU seconds during the run."""

    proxy: str
    round: int
    load: LoadResult
    cpu_s: float | None  # None for the direct baseline (no proxy process)
    upstream_cpu_s: float
    other_cpu_s: float = 0.0  # CPU used by everything but the proxy, the upstream, the load and the harness
    figure: Figure = Figure.REQUESTS
    busiest_worker: float = (
        1.0  # several workers: the busiest one's CPU over the mean worker's (SO_REUSEPORT)
    )
    supervisor_share: float = 0.0  # several workers: the supervisor's share of the proxy's CPU

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.load.duration_s if self.load.duration_s > 0 else 0.0

    @property
    def rate(self) -> float:
        """Requests or messages per second; MB/s for a bulk stream."""
        return self.load.mb_per_s if self.figure is Figure.BYTES else self.load.rps

    @property
    def cpu_per_unit(self) -> float | None:
        """CPU µs per request or message; CPU seconds per GB for a bulk stream."""
        if self.cpu_s is None:
            return None
        if self.figure is Figure.BYTES:
            return self.cpu_s / (self.load.bytes / 1e9) if self.load.bytes else None
        return self.cpu_s * 1e6 / self.load.requests if self.load.requests else None


@dataclass(frozen=True, slots=True)
class TelemetryCount:
    """What a telemetry-on proxy really emitted over the whole scenario, per request it answered."""

    requests: int
    xray_segments: int
    access_log_lines: int

    @property
    def segments_per_request(self) -> float:
        return self.xray_segments / self.requests if self.requests else 0.0

    @property
    def lines_per_request(self) -> float:
        return self.access_log_lines / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class ProxySummary:
    """Medians over a proxy's rounds in one scenario; `failure` is set when it could not be measured."""

    proxy: str
    rounds: int = 0
    rate: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0
    cpu_per_unit: float | None = None
    cpu_range: tuple[float, float] | None = None  # min and max over the rounds: how noisy the machine was
    peak_rss_kib: int | None = None
    errors: int = 0  # socket errors + wrong answers, summed over rounds
    failure: str | None = None
    telemetry: TelemetryCount | None = None
    idle_rss_kib: int | None = None  # idle scenario: resident set per worker before any connection
    bytes_per_idle_connection: float | None = None  # idle scenario: growth per idle connection held

    @property
    def ok(self) -> bool:
        return self.failure is None and (self.rounds > 0 or self.idle_rss_kib is not None)


def summarize(
    proxy: str,
    runs: Sequence[Measurement],
    *,
    peak_rss_kib: int | None,
    failure: str | None = None,
    telemetry: TelemetryCount | None = None,
) -> ProxySummary:
    """Medians of rate, latencies and CPU per unit over `runs` (the steadiest figure is CPU per unit)."""
    if not runs:
        return ProxySummary(proxy=proxy, failure=failure or "not measured")
    cpu = [c for c in (r.cpu_per_unit for r in runs) if c is not None]
    return ProxySummary(
        proxy=proxy,
        rounds=len(runs),
        rate=statistics.median(r.rate for r in runs),
        p50_us=statistics.median(r.load.p50_us for r in runs),
        p99_us=statistics.median(r.load.p99_us for r in runs),
        p999_us=statistics.median(r.load.p999_us for r in runs),
        cpu_per_unit=statistics.median(cpu) if cpu else None,
        cpu_range=(min(cpu), max(cpu)) if cpu else None,
        peak_rss_kib=peak_rss_kib,
        errors=sum(r.load.errors for r in runs),
        failure=failure,
        telemetry=telemetry,
    )


@dataclass(frozen=True, slots=True)
class LoadShape:
    connections: int
    threads: int
    duration_s: float
    rounds: int
    warmup_s: float

    def generator(self, scenario: Scenario) -> str:
        """The load generator and its shape for `scenario`."""
        match scenario.load:
            case LoadKind.HTTP2_H2LOAD | LoadKind.GRPC_H2LOAD:
                body = (
                    ", POST of one framed protobuf message" if scenario.load is LoadKind.GRPC_H2LOAD else ""
                )
                return f"h2load -t1 -c{H2_CLIENTS} -m{H2_STREAMS}{body}"
            case LoadKind.TCP_PINGPONG:
                return (
                    f"bench.tcp_load pingpong, {self.connections} connections, one {TCP_MESSAGE_SIZE}-byte "
                    "message in flight on each"
                )
            case LoadKind.TCP_BULK:
                return f"bench.tcp_load bulk, one connection, up to {TCP_BULK_BYTES >> 30} GiB per round"
            case _:
                return f"wrk -t{self.threads} -c{self.connections}"

    def describe(self, scenario: Scenario | None = None) -> str:
        generator = self.generator(scenario) if scenario is not None else f"wrk -t1 -c{self.connections}"
        return (
            f"{generator}, {self.rounds} rounds of {self.duration_s:g} s per proxy, proxies alternating, "
            f"after a {self.warmup_s:g} s warm-up; medians"
        )


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    scenario: Scenario
    workers: int
    load: LoadShape
    summaries: tuple[ProxySummary, ...]
    date: str  # ISO date and time, UTC
    envoy_config: str = "appmesh"  # where Envoy's routes came from: "appmesh" or "snapshot"
    background_cores: float | None = None  # mean CPU cores other processes used during the measurements
    measurements: tuple[Measurement, ...] = ()  # every timed run, for results.json
    telemetry: bool = False  # each proxy measured with telemetry off and on

    @property
    def key(self) -> str:
        return section_key(self.scenario.name, self.workers, telemetry=self.telemetry)

    def summary(self, proxy: str) -> ProxySummary | None:
        for s in self.summaries:
            if s.proxy == proxy:
                return s
        return None

    def ratio(self, numerator: str, denominator: str) -> tuple[float, float] | None:
        """(rate, CPU per unit) of one target over another, when both were measured."""
        top, bottom = self.summary(numerator), self.summary(denominator)
        if top is None or bottom is None or not top.ok or not bottom.ok or bottom.rate <= 0:
            return None
        if top.cpu_per_unit is None or not bottom.cpu_per_unit:
            return None
        return top.rate / bottom.rate, top.cpu_per_unit / bottom.cpu_per_unit

    def ratios(self) -> tuple[float, float] | None:
        """(rate, CPU per unit) of meshproxy over Envoy, when both were measured."""
        return self.ratio(MESHPROXY, ENVOY)


ENVOY_CONFIG_SOURCES = {
    "appmesh": "App Mesh's rendering of the bench mesh (envoy_config.py bench_bootstrap, tcp_bootstrap)",
    "snapshot": "meshproxy's compiled snapshot of the bench mesh (bootstrap_from_snapshot)",
}

UPSTREAMS = {
    LoadKind.HTTP1_WRK: "nginx, HTTP/1.1",
    LoadKind.HTTP2_H2LOAD: "nginx",
    LoadKind.GRPC_H2LOAD: "nginx h2c, fixed gRPC answer (one empty message, grpc-status 0 trailer)",
    LoadKind.TCP_PINGPONG: "bench.tcp_upstream echo (uvloop)",
    LoadKind.TCP_BULK: "bench.tcp_upstream sink (blocking recv_into)",
    LoadKind.IDLE: "nginx, HTTP/1.1 (one request per connection, then idle)",
}


def upstream_description(scenario: Scenario) -> str:
    if scenario.load is LoadKind.HTTP2_H2LOAD:
        return (
            "nginx, h2c (http2 node)" if scenario.protocol.value == "http2" else "nginx, HTTP/1.1 (http node)"
        )
    return UPSTREAMS[scenario.load]


NOISY_CORES = 0.25  # background load above this makes the figures unreliable: say so next to them


def background_cores(runs: Sequence[Measurement]) -> float | None:
    """Mean CPU cores used by processes outside the bench while it measured."""
    if not runs:
        return None
    return max(0.0, statistics.fmean(r.other_cores for r in runs))


def section_key(scenario: str, workers: int, *, telemetry: bool = False) -> str:
    return f"{scenario}{TELEMETRY_SUFFIX if telemetry else ''}/workers={workers}"


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def _units(figure: Figure) -> tuple[str, str]:
    """(rate column, CPU column) headings for what the scenario counts."""
    if figure is Figure.BYTES:
        return "MB/s", "CPU s/GB (range)"
    if figure is Figure.MESSAGES:
        return "msg/s", "CPU µs/msg (range)"
    return "rps", "CPU µs/req (range)"


def _cpu(value: float, figure: Figure) -> str:
    return f"{value:.3f}" if figure is Figure.BYTES else f"{value:.1f}"


def _ratio_line(label: str, ratio: tuple[float, float], figure: Figure) -> str:
    rate_ratio, cpu_ratio = ratio
    rate_name, per = {
        Figure.REQUESTS: ("rps", "request"),
        Figure.MESSAGES: ("msg/s", "message"),
        Figure.BYTES: ("MB/s", "GB"),
    }[figure]
    work = {Figure.REQUESTS: "requests", Figure.MESSAGES: "messages", Figure.BYTES: "GB"}[figure]
    return (
        f"{label}: {rate_name} {rate_ratio:.2f}x, CPU per {per} {cpu_ratio:.2f}x "
        f"({work} per CPU-second {1 / cpu_ratio:.2f}x)"
    )


def telemetry_cost_line(report: ScenarioReport, proxy: str) -> str | None:
    """`proxy` with telemetry on against off: extra CPU per unit in absolute terms and as a factor."""
    off, on = report.summary(proxy), report.summary(with_telemetry(proxy))
    ratio = report.ratio(with_telemetry(proxy), proxy)
    if ratio is None or off is None or on is None or off.cpu_per_unit is None or on.cpu_per_unit is None:
        return None
    figure = report.scenario.figure
    unit = "s/GB" if figure is Figure.BYTES else f"µs/{figure.value}"
    extra = on.cpu_per_unit - off.cpu_per_unit
    return (
        f"telemetry cost, {proxy}: CPU {_cpu(off.cpu_per_unit, figure)} -> {_cpu(on.cpu_per_unit, figure)} "
        f"{unit} ({extra:+.1f}, {ratio[1]:.2f}x), {_units(figure)[0]} {ratio[0]:.2f}x"
    )


def memory_table(report: ScenarioReport) -> str:
    """The idle scenario's table: resident memory, no load."""
    lines = [
        "| proxy | idle RSS per worker MiB | per idle connection KiB | connections held |",
        "|---|---:|---:|---:|",
    ]
    notes = []
    for s in report.summaries:
        if not s.ok or s.idle_rss_kib is None:
            lines.append(f"| {s.proxy} | — | — | — |")
            notes.append(f"- {s.proxy}: not measured: {s.failure}")
            continue
        per = f"{s.bytes_per_idle_connection / 1024:.2f}" if s.bytes_per_idle_connection is not None else "—"
        lines.append(f"| {s.proxy} | {s.idle_rss_kib / 1024:.1f} | {per} | {s.rate:,.0f} |")
    return "\n".join([*lines, *(["", *notes] if notes else [])])


def table(report: ScenarioReport) -> str:
    """The per-proxy table (Markdown, readable as plain text too), the ratio lines and any failures."""
    figure = report.scenario.figure
    if figure is Figure.MEMORY:
        return memory_table(report)
    rate_heading, cpu_heading = _units(figure)
    lines = [
        f"| proxy | {rate_heading} | p50 ms | p99 ms | p99.9 ms | {cpu_heading} | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    latency = figure is not Figure.BYTES  # a bulk stream has no per-request latency
    for s in report.summaries:
        if not s.ok:
            lines.append(f"| {s.proxy} | — | — | — | — | — | — | — |")
            notes.append(f"- {s.proxy}: not measured: {s.failure}")
            continue
        cpu = _cpu(s.cpu_per_unit, figure) if s.cpu_per_unit is not None else "—"
        if s.cpu_range is not None and s.rounds > 1:
            cpu += f" ({_cpu(s.cpu_range[0], figure)}-{_cpu(s.cpu_range[1], figure)})"
        rss = f"{s.peak_rss_kib / 1024:.1f}" if s.peak_rss_kib else "—"
        times = (
            f"{_ms(s.p50_us)} | {_ms(s.p99_us)} | {_ms(s.p999_us)}" if latency and s.p50_us else "— | — | —"
        )
        lines.append(f"| {s.proxy} | {s.rate:,.0f} | {times} | {cpu} | {rss} | {s.errors} |")
        if s.failure is not None:
            notes.append(f"- {s.proxy}: stopped early ({s.rounds} rounds): {s.failure}")
        if s.errors:
            notes.append(f"- {s.proxy}: {s.errors} socket errors or wrong answers")
        if s.telemetry is not None:
            t = s.telemetry
            notes.append(
                f"- {s.proxy}: {t.xray_segments:,} X-Ray segments and {t.access_log_lines:,} access-log "
                f"lines for {t.requests:,} requests ({t.segments_per_request:.2f} and "
                f"{t.lines_per_request:.2f} per request)"
            )
    ratio_lines = []
    pairs = [(s.proxy, ENVOY, f"{s.proxy} / Envoy") for s in report.summaries if is_meshproxy_row(s.proxy)]
    if report.telemetry:
        pairs.append((with_telemetry(MESHPROXY), with_telemetry(ENVOY), "meshproxy / Envoy, telemetry on"))
    for top, bottom, label in pairs:
        ratio = report.ratio(top, bottom)
        if ratio is not None:
            ratio_lines.append(_ratio_line(label, ratio, figure))
    if report.telemetry:
        for proxy in (MESHPROXY, ENVOY):
            cost = telemetry_cost_line(report, proxy)
            if cost is not None:
                ratio_lines.append(cost)
    if ratio_lines:
        lines.append("")
        lines.extend(line + "  " if i < len(ratio_lines) - 1 else line for i, line in enumerate(ratio_lines))
    if report.background_cores is not None and report.background_cores > NOISY_CORES:
        notes.append(
            f"- noisy machine: other processes used {report.background_cores:.2f} cores on average during "
            "the measurements"
        )
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def scaling_table(reports: Sequence[ScenarioReport]) -> str:
    """Per scenario and proxy measured with several worker counts: rate against one worker's (efficiency =
    rate(N) / (N x rate(1))), CPU per unit, the busiest worker over the mean, the supervisor's share."""
    rows: dict[tuple[str, str], dict[int, ProxySummary]] = {}
    spreads: dict[tuple[str, str, int], tuple[float, float]] = {}
    for r in reports:
        for s in r.summaries:
            if s.ok and not r.telemetry:
                rows.setdefault((r.scenario.name, s.proxy), {})[r.workers] = s
        for m in r.measurements:
            key = (r.scenario.name, m.proxy, r.workers)
            busiest, share = spreads.get(key, (1.0, 0.0))
            spreads[key] = (max(busiest, m.busiest_worker), max(share, m.supervisor_share))
    lines = [
        "| scenario | proxy | workers | rate | vs 1 worker | efficiency | CPU per unit "
        "| busiest worker / mean | supervisor share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (scenario, proxy), by_workers in rows.items():
        if len(by_workers) < 2 or 1 not in by_workers:
            continue
        one = by_workers[1].rate
        for workers in sorted(by_workers):
            s = by_workers[workers]
            gain = s.rate / one if one else 0.0
            busiest, share = spreads.get((scenario, proxy, workers), (1.0, 0.0))
            cpu = f"{s.cpu_per_unit:.1f}" if s.cpu_per_unit is not None else "—"
            lines.append(
                f"| {scenario} | {proxy} | {workers} | {s.rate:,.0f} | {gain:.2f}x | {gain / workers:.0%} | "
                f"{cpu} | {busiest:.2f} | {share:.1%} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def heading(report: ScenarioReport) -> str:
    workers = "1 worker" if report.workers == 1 else f"{report.workers} workers"
    name = report.scenario.name + (TELEMETRY_SUFFIX if report.telemetry else "")
    extra = ", telemetry off and on" if report.telemetry else ""
    return f"{name} · {workers} — {report.scenario.description}{extra}"


TELEMETRY_DESCRIPTION = (
    "Telemetry on: the client node's access log to a file (Envoy's default format) and X-Ray tracing at "
    "sampling rate 1.00 to a UDP receiver in the harness (meshproxy: ENABLE_ENVOY_XRAY_TRACING=1, "
    "XRAY_SAMPLING_RATE=1.00, AWS_XRAY_DAEMON_ADDRESS; Envoy: envoy.access_loggers.file and "
    "envoy.tracers.xray with a rate-1.0 sampling rule manifest)."
)


def section(report: ScenarioReport, machine: Machine, versions: Versions) -> str:
    """One RESULTS.md section, markers included."""
    return "\n".join(
        [
            f"<!-- bench:begin {report.key} -->",
            f"## {heading(report)}",
            "",
            f"Run {report.date} on {machine.describe()}.  ",
            f"{versions.describe()}.  ",
            f"Load: {report.load.describe(report.scenario)}.  ",
            f"Upstream: {upstream_description(report.scenario)}.  ",
            *([TELEMETRY_DESCRIPTION + "  "] if report.telemetry else []),
            *(
                [f"Other processes used {report.background_cores:.2f} CPU cores on average meanwhile.  "]
                if report.background_cores is not None
                else []
            ),
            f"Envoy config: {ENVOY_CONFIG_SOURCES.get(report.envoy_config, report.envoy_config)}.",
            "",
            table(report),
            f"<!-- bench:end {report.key} -->",
        ]
    )


RESULTS_HEADER = """\
# meshproxy benchmark results

Written by `python -m bench.run` (see bench/README.md): meshproxy and Envoy behind the same App Mesh config
(the bench mesh, bench/mesh.py), nginx (HTTP/1.1, h2c, gRPC) or a small TCP echo/sink app upstream, all on
127.0.0.1. CPU µs/req (µs/msg, s/GB) is the proxy's own user+system CPU time (all its processes) divided by
completed requests (messages, GB); it is the steadiest figure on a shared machine. Each section is replaced
when its scenario, telemetry setting and worker count are run again.
"""

_SECTION = re.compile(r"<!-- bench:begin (?P<key>\S+) -->\n.*?<!-- bench:end (?P=key) -->", re.DOTALL)
_NOTES_BEGIN = "<!-- bench:notes -->"
_NOTES_END = "<!-- bench:notes-end -->"
_NOTES = re.compile(re.escape(_NOTES_BEGIN) + r"\n.*?" + re.escape(_NOTES_END), re.DOTALL)


TARGETS_KEY = "targets"


def targets_section(
    checked: str, reports: Sequence[ScenarioReport], machine: Machine, versions: Versions
) -> str:
    """The RESULTS.md section with the latest run's targets table (bench/targets.py)."""
    names = ", ".join(
        dict.fromkeys(r.scenario.name + (TELEMETRY_SUFFIX if r.telemetry else "") for r in reports)
    )
    date = reports[-1].date if reports else ""
    return "\n".join(
        [
            f"<!-- bench:begin {TARGETS_KEY} -->",
            "## Targets (issue 15): the latest run",
            "",
            f"Run {date} on {machine.describe()}: {names}.  ",
            f"{versions.describe()}.  ",
            f"Load: {reports[-1].load.describe() if reports else ''}. Ratios are to Envoy in the same run.",
            "",
            checked,
            f"<!-- bench:end {TARGETS_KEY} -->",
        ]
    )


def _order(key: str) -> tuple[int, str, int, int]:
    if key == TARGETS_KEY:
        return -1, key, 0, 0
    name, _, workers = key.partition("/workers=")
    telemetry = name.endswith(TELEMETRY_SUFFIX)
    base = name.removesuffix(TELEMETRY_SUFFIX)
    names = list(SCENARIOS)
    index = names.index(base) if base in names else len(names)
    return index, base, int(telemetry), int(workers) if workers.isdigit() else 0


def update_results(existing: str, sections: Mapping[str, str]) -> str:
    """RESULTS.md with `sections` (key -> section text) replacing or joining the ones in `existing`.

    Hand-written notes between `<!-- bench:notes -->` and `<!-- bench:notes-end -->` stay after the header.
    """
    merged = {m.group("key"): m.group(0) for m in _SECTION.finditer(existing)}
    merged.update(sections)
    notes = _NOTES.search(existing)
    body = "\n\n".join(merged[key] for key in sorted(merged, key=_order))
    middle = notes.group(0) + "\n\n" if notes is not None else ""
    return RESULTS_HEADER + "\n" + middle + body + "\n"
