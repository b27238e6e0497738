"""Bench results: per-run measurements, per-proxy medians, the table, and bench/RESULTS.md.

RESULTS.md holds one section per (scenario, workers), between HTML-comment markers; a run replaces the
sections it measured and keeps the others, so running one scenario does not erase the rest.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.environment import Machine, Versions
from bench.scenarios import SCENARIOS, Scenario
from bench.wrk import WrkResult

MESHPROXY = "meshproxy"
ENVOY = "envoy"
DIRECT = "direct"  # wrk straight to nginx: the floor both proxies are compared against


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed wrk run against one proxy. `cpu_s` is the proxy tree's CPU seconds during the run."""

    proxy: str
    round: int
    wrk: WrkResult
    cpu_s: float | None  # None for the direct baseline (no proxy process)
    upstream_cpu_s: float
    other_cpu_s: float = 0.0  # CPU used by everything but the proxy, nginx, wrk and the harness

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.wrk.duration_s if self.wrk.duration_s > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or self.wrk.requests == 0:
            return None
        return self.cpu_s * 1e6 / self.wrk.requests


@dataclass(frozen=True, slots=True)
class ProxySummary:
    """Medians over a proxy's rounds in one scenario; `failure` is set when it could not be measured."""

    proxy: str
    rounds: int = 0
    rps: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0
    cpu_us_per_request: float | None = None
    cpu_us_range: tuple[float, float] | None = None  # min and max over the rounds: how noisy the machine was
    peak_rss_kib: int | None = None
    errors: int = 0  # socket errors + non-2xx/3xx answers, summed over rounds
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.rounds > 0


def summarize(
    proxy: str, runs: Sequence[Measurement], *, peak_rss_kib: int | None, failure: str | None = None
) -> ProxySummary:
    """Medians of rps, latencies and CPU per request over `runs` (the steadiest figure is CPU per request)."""
    if not runs:
        return ProxySummary(proxy=proxy, failure=failure or "not measured")
    cpu = [c for c in (r.cpu_us_per_request for r in runs) if c is not None]
    return ProxySummary(
        proxy=proxy,
        rounds=len(runs),
        rps=statistics.median(r.wrk.rps for r in runs),
        p50_us=statistics.median(r.wrk.p50_us for r in runs),
        p99_us=statistics.median(r.wrk.p99_us for r in runs),
        p999_us=statistics.median(r.wrk.p999_us for r in runs),
        cpu_us_per_request=statistics.median(cpu) if cpu else None,
        cpu_us_range=(min(cpu), max(cpu)) if cpu else None,
        peak_rss_kib=peak_rss_kib,
        errors=sum(r.wrk.socket_errors + r.wrk.status_errors for r in runs),
        failure=failure,
    )


@dataclass(frozen=True, slots=True)
class LoadShape:
    connections: int
    threads: int
    duration_s: float
    rounds: int
    warmup_s: float

    def describe(self) -> str:
        return (
            f"wrk -t{self.threads} -c{self.connections}, {self.rounds} rounds of {self.duration_s:g} s per "
            f"proxy, proxies alternating, after a {self.warmup_s:g} s warm-up; medians"
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

    @property
    def key(self) -> str:
        return section_key(self.scenario.name, self.workers)

    def summary(self, proxy: str) -> ProxySummary | None:
        for s in self.summaries:
            if s.proxy == proxy:
                return s
        return None

    def ratios(self) -> tuple[float, float] | None:
        """(rps, CPU per request) of meshproxy over Envoy, when both were measured."""
        mine, envoy = self.summary(MESHPROXY), self.summary(ENVOY)
        if mine is None or envoy is None or not mine.ok or not envoy.ok or envoy.rps <= 0:
            return None
        if mine.cpu_us_per_request is None or not envoy.cpu_us_per_request:
            return None
        return mine.rps / envoy.rps, mine.cpu_us_per_request / envoy.cpu_us_per_request


ENVOY_CONFIG_SOURCES = {
    "appmesh": "App Mesh's rendering of bench/mesh.json (bench/envoy_config.py bench_bootstrap)",
    "snapshot": "meshproxy's compiled snapshot of bench/mesh.json (bootstrap_from_snapshot)",
}


NOISY_CORES = 0.25  # background load above this makes the figures unreliable: say so next to them


def background_cores(runs: Sequence[Measurement]) -> float | None:
    """Mean CPU cores used by processes outside the bench while it measured."""
    if not runs:
        return None
    return max(0.0, statistics.fmean(r.other_cores for r in runs))


def section_key(scenario: str, workers: int) -> str:
    return f"{scenario}/workers={workers}"


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def table(report: ScenarioReport) -> str:
    """The per-proxy table (Markdown, readable as plain text too), the ratio line and any failures."""
    lines = [
        "| proxy | rps | p50 ms | p99 ms | p99.9 ms | CPU µs/req (range) | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for s in report.summaries:
        if not s.ok:
            lines.append(f"| {s.proxy} | — | — | — | — | — | — | — |")
            notes.append(f"- {s.proxy}: not measured: {s.failure}")
            continue
        cpu = f"{s.cpu_us_per_request:.1f}" if s.cpu_us_per_request is not None else "—"
        if s.cpu_us_range is not None and s.rounds > 1:
            cpu += f" ({s.cpu_us_range[0]:.1f}-{s.cpu_us_range[1]:.1f})"
        rss = f"{s.peak_rss_kib / 1024:.1f}" if s.peak_rss_kib else "—"
        lines.append(
            f"| {s.proxy} | {s.rps:,.0f} | {_ms(s.p50_us)} | {_ms(s.p99_us)} | {_ms(s.p999_us)} "
            f"| {cpu} | {rss} | {s.errors} |"
        )
        if s.failure is not None:
            notes.append(f"- {s.proxy}: stopped early ({s.rounds} rounds): {s.failure}")
        if s.errors:
            notes.append(f"- {s.proxy}: {s.errors} socket errors or non-2xx/3xx answers")
    ratios = report.ratios()
    if ratios is not None:
        rps_ratio, cpu_ratio = ratios
        lines.append("")
        lines.append(
            f"meshproxy / Envoy: rps {rps_ratio:.2f}x, CPU per request {cpu_ratio:.2f}x "
            f"(requests per CPU-second {1 / cpu_ratio:.2f}x)"
        )
    if report.background_cores is not None and report.background_cores > NOISY_CORES:
        notes.append(
            f"- noisy machine: other processes used {report.background_cores:.2f} cores on average during "
            "the measurements"
        )
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def heading(report: ScenarioReport) -> str:
    workers = "1 worker" if report.workers == 1 else f"{report.workers} workers"
    return f"{report.scenario.name} · {workers} — {report.scenario.description}"


def section(report: ScenarioReport, machine: Machine, versions: Versions) -> str:
    """One RESULTS.md section, markers included."""
    return "\n".join(
        [
            f"<!-- bench:begin {report.key} -->",
            f"## {heading(report)}",
            "",
            f"Run {report.date} on {machine.describe()}.  ",
            f"{versions.describe()}.  ",
            f"Load: {report.load.describe()}.  ",
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
(bench/mesh.json), nginx upstream, all on 127.0.0.1. CPU µs/req is the proxy's own user+system CPU time
(all its processes) divided by completed requests; it is the steadiest figure on a shared machine. Each
section is replaced when its scenario and worker count are run again.
"""

_SECTION = re.compile(r"<!-- bench:begin (?P<key>\S+) -->\n.*?<!-- bench:end (?P=key) -->", re.DOTALL)


def _order(key: str) -> tuple[int, str, int]:
    name, _, workers = key.partition("/workers=")
    names = list(SCENARIOS)
    index = names.index(name) if name in names else len(names)
    return index, name, int(workers) if workers.isdigit() else 0


def update_results(existing: str, sections: Mapping[str, str]) -> str:
    """RESULTS.md with `sections` (key -> section text) replacing or joining the ones in `existing`."""
    merged = {m.group("key"): m.group(0) for m in _SECTION.finditer(existing)}
    merged.update(sections)
    body = "\n\n".join(merged[key] for key in sorted(merged, key=_order))
    return RESULTS_HEADER + "\n" + body + "\n"
