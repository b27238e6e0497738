"""Issue 15's targets ("Cheaper than Envoy"), checked against one run: one table, each target met or not.

Every target is a ratio to Envoy measured in the same run (medians of the rounds), except the idle memory
ones, which are absolute. A target whose scenario was not part of the run is left out of the table; one
whose proxies could not both be measured says so.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bench import report
from bench.report import ENVOY, ScenarioReport


class Measure(enum.Enum):
    CPU = "CPU per unit vs Envoy"  # lower is better
    RATE = "throughput vs Envoy"
    P99 = "p99 latency vs Envoy"
    WORK_PER_CPU = "work per CPU-second vs Envoy"  # the inverse of the CPU ratio; higher is better
    IDLE_RSS = "idle RSS per worker (MiB)"
    RSS_PER_CONNECTION = "RSS per idle connection (KiB)"
    TELEMETRY_COST = "CPU added by telemetry vs Envoy's"


@dataclass(frozen=True, slots=True)
class Target:
    scenario: str  # a scenario name, or `<name>+telemetry`
    measure: Measure
    limit: float
    at_most: bool  # the figure must be <= limit (else >=)

    def describe(self) -> str:
        unit = "" if self.measure in (Measure.IDLE_RSS, Measure.RSS_PER_CONNECTION) else "x"
        return f"{'<=' if self.at_most else '>='} {self.limit:g}{unit}"


TARGETS: tuple[Target, ...] = (
    Target("small", Measure.CPU, 0.8, at_most=True),
    Target("small", Measure.RATE, 1.1, at_most=False),
    Target("small", Measure.P99, 1.0, at_most=True),
    Target("new-conn-64k", Measure.CPU, 1.0, at_most=True),
    Target("tcp-bulk", Measure.CPU, 1.0, at_most=True),
    Target("tcp-bulk", Measure.RATE, 1.0, at_most=False),
    Target("tcp-small", Measure.CPU, 0.8, at_most=True),
    Target("h2-h2", Measure.WORK_PER_CPU, 0.7, at_most=False),
    Target("grpc", Measure.WORK_PER_CPU, 0.7, at_most=False),
    Target("idle", Measure.IDLE_RSS, 35.0, at_most=True),
    Target("idle", Measure.RSS_PER_CONNECTION, 4.0, at_most=True),
    Target("small+telemetry", Measure.TELEMETRY_COST, 1.0, at_most=True),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    workers: int
    proxy: str
    value: float | None  # None: not measured (the reason in `note`)
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.target.limit if self.target.at_most else self.value >= self.target.limit

    def cell(self) -> str:
        if self.value is None:
            return f"— ({self.note})" if self.note else "—"
        unit = "" if self.target.measure in (Measure.IDLE_RSS, Measure.RSS_PER_CONNECTION) else "x"
        return f"{self.value:.2f}{unit} {'met' if self.met else 'NOT met'}"


def _figure(target: Target, r: ScenarioReport, proxy: str) -> tuple[float | None, str]:
    mine, envoy = r.summary(proxy), r.summary(ENVOY)
    if mine is None or not mine.ok:
        return None, "not measured"
    match target.measure:
        case Measure.IDLE_RSS:
            return _mib(mine.idle_rss_kib), ""
        case Measure.RSS_PER_CONNECTION:
            return (mine.bytes_per_idle_connection / 1024 if mine.bytes_per_idle_connection else None), ""
        case Measure.TELEMETRY_COST:
            return _telemetry_cost_ratio(r, proxy)
    if envoy is None or not envoy.ok:
        return None, "Envoy not measured"
    ratio = r.ratio(proxy, ENVOY)
    if ratio is None:
        return None, "no ratio"
    rate, cpu = ratio
    match target.measure:
        case Measure.CPU:
            return cpu, ""
        case Measure.RATE:
            return rate, ""
        case Measure.WORK_PER_CPU:
            return 1 / cpu, ""
        case Measure.P99:
            return (mine.p99_us / envoy.p99_us if envoy.p99_us else None), ""
    return None, "unknown measure"


def _mib(kib: int | None) -> float | None:
    return kib / 1024 if kib else None


def _telemetry_cost_ratio(r: ScenarioReport, proxy: str) -> tuple[float | None, str]:
    """(meshproxy's added CPU per request) / (Envoy's), both with telemetry on minus off, same run."""

    def added(name: str) -> float | None:
        off, on = r.summary(name), r.summary(report.with_telemetry(name))
        if off is None or on is None or off.cpu_per_unit is None or on.cpu_per_unit is None:
            return None
        return on.cpu_per_unit - off.cpu_per_unit

    mine, envoy = added(proxy), added(ENVOY)
    if mine is None or envoy is None or envoy <= 0:
        return None, "needs both proxies with telemetry off and on"
    return mine / envoy, ""


def verdicts(reports: Sequence[ScenarioReport]) -> list[Verdict]:
    """Each target against each meshproxy variant of each report of its scenario (and worker count). A report
    measured with telemetry off and on (`--telemetry on`) answers both its scenario's targets, from its
    telemetry-off rows, and the `+telemetry` target."""
    out: list[Verdict] = []
    for target in TARGETS:
        for r in reports:
            names = {r.scenario.name}
            if r.telemetry:
                names.add(r.scenario.name + report.TELEMETRY_SUFFIX)
            if target.scenario not in names:
                continue
            for s in r.summaries:
                if report.is_meshproxy_row(s.proxy):
                    value, note = _figure(target, r, s.proxy)
                    out.append(Verdict(target, r.workers, s.proxy, value, note))
    return out


def table(reports: Sequence[ScenarioReport]) -> str:
    """One Markdown table: a row per target (and worker count), a column per meshproxy variant."""
    found = verdicts(reports)
    if not found:
        return ""
    proxies = list(dict.fromkeys(v.proxy for v in found))
    rows: dict[tuple[Target, int], dict[str, Verdict]] = {}
    for v in found:
        rows.setdefault((v.target, v.workers), {})[v.proxy] = v
    lines = [
        "| scenario | workers | figure | target | " + " | ".join(proxies) + " |",
        "|---|---:|---|---|" + "---|" * len(proxies),
    ]
    for (target, workers), cells in rows.items():
        row = " | ".join(cells[p].cell() if p in cells else "—" for p in proxies)
        lines.append(
            f"| {target.scenario} | {workers} | {target.measure.value} | {target.describe()} | {row} |"
        )
    met = sum(1 for v in found if v.met)
    lines.append("")
    lines.append(f"{met} of {len(found)} met.")
    return "\n".join(lines)
