"""Medians, ratios, the table and the RESULTS.md merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import mesh, nginx, report, scenarios
from bench.environment import Machine, Versions
from bench.wrk import WrkResult

LOAD = report.LoadShape(connections=32, threads=1, duration_s=5, rounds=3, warmup_s=1)
MACHINE = Machine(nproc=2, cpu_model="Test CPU", kernel="6.1.0")
VERSIONS = Versions(python="3.11.2", envoy="1.40.0", nginx="1.22.1", wrk="4.1.0", meshproxy="0.1.0")


def _wrk(requests: int, p99: float = 2000.0, status_errors: int = 0) -> WrkResult:
    return WrkResult(
        requests=requests,
        duration_s=5.0,
        bytes=requests * 100,
        socket_errors=0,
        status_errors=status_errors,
        timeouts=0,
        p50_us=800.0,
        p90_us=1500.0,
        p99_us=p99,
        p999_us=4000.0,
        mean_us=900.0,
        max_us=9000.0,
    )


def _runs(proxy: str, requests: list[int], cpu_s: list[float]) -> list[report.Measurement]:
    return [
        report.Measurement(proxy, i + 1, _wrk(n), cpu, upstream_cpu_s=0.5)
        for i, (n, cpu) in enumerate(zip(requests, cpu_s, strict=True))
    ]


def _report(
    summaries: tuple[report.ProxySummary, ...], name: str = "small", workers: int = 1
) -> report.ScenarioReport:
    return report.ScenarioReport(
        scenario=scenarios.SCENARIOS[name],
        workers=workers,
        load=LOAD,
        summaries=summaries,
        date="2026-01-01 00:00 UTC",
    )


def test_summary_takes_medians() -> None:
    runs = _runs("envoy", [100_000, 150_000, 120_000], [3.0, 4.5, 3.0])
    s = report.summarize("envoy", runs, peak_rss_kib=65536)
    assert s.ok
    assert s.rounds == 3
    assert s.rps == pytest.approx(120_000 / 5)
    assert s.cpu_us_per_request == pytest.approx(30.0)  # 30, 30, 25 µs/req
    assert s.cpu_us_range == pytest.approx((25.0, 30.0))
    assert s.peak_rss_kib == 65536


def test_summary_without_runs_is_a_failure() -> None:
    s = report.summarize("meshproxy", [], peak_rss_kib=None, failure="exited with status 1")
    assert not s.ok
    assert s.failure == "exited with status 1"


def test_ratios_and_table() -> None:
    mine = report.summarize("meshproxy", _runs("meshproxy", [150_000] * 3, [3.0] * 3), peak_rss_kib=30 * 1024)
    envoy = report.summarize("envoy", _runs("envoy", [100_000] * 3, [3.0] * 3), peak_rss_kib=60 * 1024)
    r = _report((mine, envoy))
    rps_ratio, cpu_ratio = r.ratios() or (0.0, 0.0)
    assert rps_ratio == pytest.approx(1.5)
    assert cpu_ratio == pytest.approx((20.0) / (30.0))
    text = report.table(r)
    assert "| meshproxy | 30,000 | 0.800 | 2.000 | 4.000 | 20.0 (20.0-20.0) | 30.0 | 0 |" in text
    assert "meshproxy / Envoy: rps 1.50x, CPU per request 0.67x (requests per CPU-second 1.50x)" in text


def test_table_reports_a_failed_proxy_and_no_ratio() -> None:
    failed = report.summarize("meshproxy", [], peak_rss_kib=None, failure="not ready after 30 s")
    envoy = report.summarize("envoy", _runs("envoy", [100_000], [3.0]), peak_rss_kib=None)
    r = _report((failed, envoy))
    assert r.ratios() is None
    text = report.table(r)
    assert "| meshproxy | — |" in text
    assert "- meshproxy: not measured: not ready after 30 s" in text
    assert "meshproxy / Envoy" not in text


def test_table_flags_errors() -> None:
    runs = [report.Measurement("envoy", 1, _wrk(1000, status_errors=7), 0.1, 0.0)]
    text = report.table(_report((report.summarize("envoy", runs, peak_rss_kib=None),)))
    assert "- envoy: 7 socket errors or non-2xx/3xx answers" in text


def test_background_load_is_reported_and_flagged_when_noisy() -> None:
    runs = [
        report.Measurement("envoy", 1, _wrk(1000), 0.1, 0.0, other_cpu_s=2.5),  # 0.5 cores over 5 s
        report.Measurement("envoy", 2, _wrk(1000), 0.1, 0.0, other_cpu_s=0.5),  # 0.1 cores
    ]
    assert report.background_cores(runs) == pytest.approx(0.3)
    assert report.background_cores([]) is None
    summary = report.summarize("envoy", runs, peak_rss_kib=None)
    noisy = report.ScenarioReport(
        scenario=scenarios.SCENARIOS["small"],
        workers=1,
        load=LOAD,
        summaries=(summary,),
        date="2026-01-01 00:00 UTC",
        background_cores=0.3,
    )
    assert "noisy machine: other processes used 0.30 cores" in report.table(noisy)
    assert "Other processes used 0.30 CPU cores on average meanwhile." in report.section(
        noisy, MACHINE, VERSIONS
    )
    quiet = report.ScenarioReport(
        scenario=noisy.scenario,
        workers=1,
        load=LOAD,
        summaries=(summary,),
        date=noisy.date,
        background_cores=0.05,
    )
    assert "noisy" not in report.table(quiet)


def test_results_file_replaces_only_the_sections_run() -> None:
    envoy = report.summarize("envoy", _runs("envoy", [100_000], [3.0]), peak_rss_kib=None)
    first = report.update_results(
        "",
        {
            r.key: report.section(r, MACHINE, VERSIONS)
            for r in (
                _report((envoy,), "new-conn"),
                _report((envoy,), "small"),
                _report((envoy,), "small", 2),
            )
        },
    )
    assert first.startswith(report.RESULTS_HEADER)
    keys = [line.split()[2] for line in first.splitlines() if line.startswith("<!-- bench:begin")]
    assert keys == [
        "small/workers=1",
        "small/workers=2",
        "new-conn/workers=1",
    ]  # registry order, then workers

    faster = report.summarize("envoy", _runs("envoy", [200_000], [3.0]), peak_rss_kib=None)
    updated = _report((faster,), "small")
    second = report.update_results(first, {updated.key: report.section(updated, MACHINE, VERSIONS)})
    assert second.count("<!-- bench:begin small/workers=1 -->") == 1
    assert "| envoy | 40,000 |" in second  # replaced
    assert "| envoy | 20,000 |" in second  # the other sections kept
    assert "<!-- bench:begin new-conn/workers=1 -->" in second
    assert report.update_results(second, {}) == second


def test_section_names_machine_and_versions() -> None:
    envoy = report.summarize("envoy", _runs("envoy", [100_000], [3.0]), peak_rss_kib=None)
    text = report.section(_report((envoy,)), MACHINE, VERSIONS)
    assert "2 x Test CPU, Linux 6.1.0" in text
    assert "Envoy 1.40.0" in text
    assert "wrk -t1 -c32, 3 rounds of 5 s per proxy" in text
    assert "Envoy config: App Mesh's rendering" in text


def test_scenario_selection() -> None:
    assert [s.name for s in scenarios.select(["new-conn", "small"])] == ["small", "new-conn"]
    assert len(scenarios.select(["all"])) == len(scenarios.SCENARIOS)
    with pytest.raises(scenarios.ScenarioError, match="planned"):
        scenarios.select(["h2"])
    with pytest.raises(scenarios.ScenarioError, match="unknown scenario"):
        scenarios.select(["nope"])


def test_scenarios_expect_the_bodies_nginx_serves() -> None:
    nginx_prefix = Path("/tmp/bench-prefix")
    conf = nginx.config(nginx_prefix, 18080)
    assert "listen 127.0.0.1:18080" in conf
    assert "master_process off;" in conf
    assert "access_log off;" in conf
    assert f"{nginx_prefix}/error.log" in conf
    assert "/var/" not in conf  # nothing outside the prefix
    sizes = {s.path: s.body_size for s in scenarios.SCENARIOS.values()}
    assert sizes[nginx.SMALL_PATH] == len(nginx.SMALL_BODY)
    for name, size in nginx.BODY_FILES.items():
        assert sizes[nginx.body_path(name)] == size


def test_bench_mesh_resources() -> None:
    resources = json.loads(mesh.BenchMesh(upstream_port=18080).to_json())
    kinds = [next(iter(r)) for r in resources]
    assert kinds == ["mesh", "virtualNode", "virtualNode", "virtualRouter", "route", "virtualService"]
    by_name = {
        (k, r[k].get(f"{k}Name") or r[k].get("routeName")): r[k]
        for r, k in zip(resources, kinds, strict=True)
    }
    upstream = by_name[("virtualNode", "upstream")]["spec"]
    assert upstream["listeners"][0]["portMapping"] == {"port": 18080, "protocol": "http"}
    assert upstream["serviceDiscovery"]["dns"]["hostname"] == "127.0.0.1"
    client = by_name[("virtualNode", "client")]["spec"]
    assert client["backends"] == [{"virtualService": {"virtualServiceName": "upstream.bench.local"}}]
    route = by_name[("route", "all")]["spec"]["httpRoute"]
    assert "retryPolicy" not in route and "timeout" not in route  # App Mesh defaults apply
    assert route["action"]["weightedTargets"] == [{"virtualNode": "upstream", "weight": 100}]
    vs = by_name[("virtualService", "upstream.bench.local")]["spec"]
    assert vs["provider"] == {"virtualRouter": {"virtualRouterName": "upstream-router"}}
    assert mesh.BenchMesh(upstream_port=18080).upstream_cluster == "cds_egress_bench_upstream_http_18080"
