"""Issue 15's targets table, the meshproxy variants, the idle memory figures, the scaling table and
--quick: what the bench concludes from its measurements, checked on made-up ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import environment, idle, procstat, report, run, scenarios, targets, variants
from bench.load import LoadResult

LOAD = report.LoadShape(connections=32, threads=1, duration_s=5, rounds=3, warmup_s=1)


def _load(requests: int, p99_us: float = 2000.0, nbytes: int = 0) -> LoadResult:
    return LoadResult(requests, 5.0, nbytes, 0, 0, 0, 800.0, 1500.0, p99_us, 4000.0, 900.0, 9000.0)


def _summary(proxy: str, requests: int, cpu_s: float, p99_us: float = 2000.0) -> report.ProxySummary:
    runs = [report.Measurement(proxy, i, _load(requests, p99_us), cpu_s, 0.5) for i in (1, 2, 3)]
    return report.summarize(proxy, runs, peak_rss_kib=None)


def _report(name: str, *summaries: report.ProxySummary, workers: int = 1) -> report.ScenarioReport:
    return report.ScenarioReport(scenarios.SCENARIOS[name], workers, LOAD, summaries, "2026-12-04 10:00 UTC")


def _verdict(found: list[targets.Verdict], measure: targets.Measure, proxy: str) -> targets.Verdict:
    return next(v for v in found if v.target.measure is measure and v.proxy == proxy)


def test_small_targets_are_ratios_to_envoy_in_the_same_run() -> None:
    r = _report(
        "small",
        _summary("meshproxy", 120_000, 2.4, p99_us=1800.0),  # 20 µs/req
        _summary("meshproxy-pure", 80_000, 3.2),  # 40 µs/req
        _summary("envoy", 100_000, 3.0, p99_us=2000.0),  # 30 µs/req
    )
    found = targets.verdicts([r])
    cpu = _verdict(found, targets.Measure.CPU, "meshproxy")
    assert cpu.value == pytest.approx(20 / 30) and cpu.met
    assert _verdict(found, targets.Measure.RATE, "meshproxy").value == pytest.approx(1.2)
    assert _verdict(found, targets.Measure.P99, "meshproxy").met
    pure = _verdict(found, targets.Measure.CPU, "meshproxy-pure")
    assert pure.value == pytest.approx(40 / 30) and pure.met is False
    table = targets.table([r])
    assert "| small | 1 | CPU per unit vs Envoy | <= 0.8x | 0.67x met | 1.33x NOT met |" in table
    assert "of 6 met." in table


def test_work_per_cpu_second_is_the_inverse_of_the_cpu_ratio() -> None:
    r = _report("grpc", _summary("meshproxy", 100_000, 4.0), _summary("envoy", 100_000, 3.0))
    verdict = _verdict(targets.verdicts([r]), targets.Measure.WORK_PER_CPU, "meshproxy")
    assert verdict.value == pytest.approx(0.75) and verdict.met  # >= 0.7x


def test_a_target_without_envoy_is_not_measured_rather_than_met() -> None:
    failed = report.ProxySummary("envoy", failure="exited")
    r = _report("tcp-small", _summary("meshproxy", 100_000, 1.0), failed)
    verdict = _verdict(targets.verdicts([r]), targets.Measure.CPU, "meshproxy")
    assert verdict.value is None and verdict.met is None and "Envoy not measured" in verdict.cell()


def test_idle_targets_are_absolute() -> None:
    mine = report.ProxySummary("meshproxy", rate=1000, idle_rss_kib=34 * 1024, bytes_per_idle_connection=5000)
    r = _report("idle", mine, report.ProxySummary("envoy", rate=1000, idle_rss_kib=64 * 1024))
    found = targets.verdicts([r])
    assert _verdict(found, targets.Measure.IDLE_RSS, "meshproxy").met  # 34 <= 35 MiB
    per_connection = _verdict(found, targets.Measure.RSS_PER_CONNECTION, "meshproxy")
    assert per_connection.value == pytest.approx(5000 / 1024) and per_connection.met is False  # > 4 KiB
    assert "| meshproxy | 34.0 | 4.88 | 1,000 |" in report.table(r)
    machine = environment.Machine(nproc=2, cpu_model="Test CPU", kernel="6.1.0")
    versions = environment.Versions(python="3.11", envoy="1.40", nginx="1.22", wrk="4.1", meshproxy="0.1")
    assert "idle RSS per worker" in report.section(r, machine, versions)  # RESULTS.md takes it too


def test_telemetry_cost_compares_what_telemetry_adds_to_each_proxy() -> None:
    r = report.ScenarioReport(
        scenarios.SCENARIOS["small"],
        1,
        LOAD,
        (
            _summary("meshproxy", 100_000, 2.5),  # 25 µs
            _summary("envoy", 100_000, 3.0),  # 30 µs
            _summary("meshproxy+telemetry", 100_000, 9.0),  # +65 µs
            _summary("envoy+telemetry", 100_000, 11.0),  # +80 µs
        ),
        "2026-12-04 10:00 UTC",
        telemetry=True,
    )
    found = targets.verdicts([r])
    verdict = _verdict(found, targets.Measure.TELEMETRY_COST, "meshproxy")
    assert verdict.value == pytest.approx(65 / 80) and verdict.met
    # the same run answers small's own targets from its telemetry-off rows
    cpu = _verdict(found, targets.Measure.CPU, "meshproxy")
    assert cpu.target.scenario == "small" and cpu.value == pytest.approx(25 / 30) and cpu.met is False
    assert len(found) == 4  # small's three figures and the telemetry cost, each once


def test_idle_memory_per_connection() -> None:
    memory = idle.IdleMemory(idle_rss_kib=30_000, with_connections_kib=34_000, connections=1000)
    assert memory.bytes_per_connection == pytest.approx(4000 * 1024 / 1000)
    assert idle.IdleMemory(30_000, 29_000, 1000).bytes_per_connection == 0  # memory given back: not negative


def test_variants_name_the_form_and_the_checkout(tmp_path: Path) -> None:
    installed = ("/venv/bin/meshproxy",)
    assert variants.variant("meshproxy", installed) == variants.MeshproxyVariant("meshproxy", installed)
    pure = variants.variant("meshproxy-pure", installed)
    assert pure.argv == installed and pure.env == {"MESHPROXY_PURE": "1"}
    (tmp_path / "meshproxy").mkdir()
    (tmp_path / "meshproxy" / "__init__.py").write_text("")
    other = variants.variant(f"meshproxy@{tmp_path}", installed)
    assert other.label == f"meshproxy@{tmp_path.name}"  # not a git checkout: the directory names it
    assert other.env["PYTHONPATH"] == str(tmp_path) and other.env["MESHPROXY_PURE"] == "1"
    assert other.argv[1:] == ("-P", "-m", "meshproxy.cli")  # PYTHONPATH's checkout, not the working directory
    with pytest.raises(variants.VariantError):
        variants.variant(f"meshproxy@{tmp_path / 'missing'}", installed)
    assert report.is_meshproxy_row(other.label) and not report.is_meshproxy_row("meshproxy+telemetry")


def test_scaling_table_compares_each_worker_count_with_one() -> None:
    def measured(workers: int, requests: int, busiest: float) -> report.ScenarioReport:
        runs = [
            report.Measurement("meshproxy", i, _load(requests), 3.0, 0.5, busiest_worker=busiest)
            for i in (1, 2, 3)
        ]
        summary = report.summarize("meshproxy", runs, peak_rss_kib=None)
        r = _report("small", summary, workers=workers)
        return report.ScenarioReport(r.scenario, workers, LOAD, (summary,), r.date, measurements=tuple(runs))

    table = report.scaling_table([measured(1, 100_000, 1.0), measured(2, 180_000, 1.3)])
    assert "| small | meshproxy | 2 | 36,000 | 1.80x | 90% | 16.7 | 1.30 | 0.0% |" in table


def test_worker_spread_and_supervisor_share() -> None:
    before = {10: 1.0, 11: 5.0, 12: 5.0}
    after = {10: 1.5, 11: 9.0, 12: 7.0}  # supervisor 0.5, workers 4 and 2
    busiest, supervisor = procstat.spread(before, after, root=10)
    assert busiest == pytest.approx(4 / 3)
    assert supervisor == pytest.approx(0.5 / 6.5)
    assert procstat.spread({10: 1.0}, {10: 2.0}, root=10) == (1.0, 0.0)  # one process: no workers


def test_quick_is_short_and_leaves_results_alone() -> None:
    options, _, _ = run.parse_args(["--quick"])
    assert [s.name for s in options.scenarios] == [s for s in scenarios.SCENARIOS if s in run.QUICK_SCENARIOS]
    assert options.load.duration_s == run.QUICK_DURATION_S and options.load.rounds == run.QUICK_ROUNDS
    assert not options.write_results
    seconds = run.budget_s(options, 3)
    assert seconds > 0


def test_scaling_goes_up_to_half_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    options, _, _ = run.parse_args(["--scaling"])
    assert options.workers == (1, 2, 4, 8)
    assert options.load.threads == 0  # wrk threads follow the workers
    assert options.load.connections == 64 * 8
