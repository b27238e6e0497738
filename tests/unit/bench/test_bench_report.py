"""Medians, ratios, the table and the RESULTS.md merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import mesh, nginx, report, scenarios
from bench.environment import Machine, Versions
from bench.load import LoadResult

LOAD = report.LoadShape(connections=32, threads=1, duration_s=5, rounds=3, warmup_s=1)
MACHINE = Machine(nproc=2, cpu_model="Test CPU", kernel="6.1.0")
VERSIONS = Versions(python="3.11.2", envoy="1.40.0", nginx="1.22.1", wrk="4.1.0", meshproxy="0.1.0")


def _wrk(requests: int, p99: float = 2000.0, status_errors: int = 0) -> LoadResult:
    return LoadResult(
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
    assert s.rate == pytest.approx(120_000 / 5)
    assert s.cpu_per_unit == pytest.approx(30.0)  # 30, 30, 25 µs/req
    assert s.cpu_range == pytest.approx((25.0, 30.0))
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
    assert "- envoy: 7 socket errors or wrong answers" in text


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
    assert [s.name for s in scenarios.select(["tcp-bulk", "grpc", "h2"])] == ["h2", "grpc", "tcp-bulk"]
    assert len(scenarios.select(["all"])) == len(scenarios.SCENARIOS)
    with pytest.raises(scenarios.ScenarioError, match="unknown scenario"):
        scenarios.select(["nope"])


def test_scenarios_expect_the_bodies_nginx_serves() -> None:
    nginx_prefix = Path("/tmp/bench-prefix")
    conf = nginx.config(nginx_prefix, 18080, 18081)
    assert "listen 127.0.0.1:18080 backlog" in conf
    assert "listen 127.0.0.1:18081 http2 backlog" in conf  # h2c with prior knowledge, no TLS
    assert "master_process off;" in conf
    assert "access_log off;" in conf
    assert f"{nginx_prefix}/error.log" in conf
    assert "/var/" not in conf  # nothing outside the prefix
    sizes = {s.path: s.body_size for s in scenarios.SCENARIOS.values() if s.is_http}
    assert sizes[nginx.SMALL_PATH] == len(nginx.SMALL_BODY)
    assert sizes[nginx.GRPC_PATH] == len(nginx.GRPC_RESPONSE) == 5
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


def test_nginx_answers_grpc_with_a_trailer(tmp_path: Path) -> None:
    conf_path = nginx.prepare(tmp_path, 18080, 18081)
    conf = conf_path.read_text()
    grpc_block = conf[conf.index(f"location = {nginx.GRPC_PATH}") :]
    grpc_block = grpc_block[: grpc_block.index("}")]
    assert "default_type application/grpc;" in grpc_block
    assert "add_trailer grpc-status 0;" in grpc_block  # trailers matter for gRPC
    assert "error_page 405 =200 $uri;" in grpc_block  # POST to a static file
    assert (tmp_path / "files" / nginx.GRPC_RESPONSE_FILE).read_bytes() == b"\x00" * 5
    assert (tmp_path / "files" / "64k.bin").stat().st_size == 65536
    with pytest.raises(ValueError, match="two ports"):
        nginx.config(tmp_path, 18080, 18080)


def _by_kind(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for resource in resources:
        ((kind, body),) = resource.items()
        out[(kind, body.get(f"{kind}Name") or body.get("routeName") or "")] = body
    return out


@pytest.mark.parametrize(
    ("protocol", "route_kind", "match"),
    [
        (mesh.MeshProtocol.HTTP2, "http2Route", {"prefix": "/"}),
        (mesh.MeshProtocol.GRPC, "grpcRoute", {}),  # no service or method: every call
    ],
)
def test_bench_mesh_http2_and_grpc_variants(protocol: mesh.MeshProtocol, route_kind: str, match: Any) -> None:
    bench = mesh.BenchMesh(upstream_port=18081, protocol=protocol)
    resources = _by_kind(bench.resources())
    node = resources[("virtualNode", "upstream")]["spec"]
    assert node["listeners"] == [{"portMapping": {"port": 18081, "protocol": protocol.value}}]
    router = resources[("virtualRouter", "upstream-router")]["spec"]
    assert router["listeners"][0]["portMapping"] == {"port": 80, "protocol": protocol.value}
    route = resources[("route", "all")]["spec"]
    assert list(route) == [route_kind]
    assert route[route_kind]["match"] == match
    assert bench.upstream_cluster == f"cds_egress_bench_upstream_{protocol.value}_18081"


def test_bench_mesh_tcp_variant_is_the_client_nodes_own_tcp_listener() -> None:
    bench = mesh.BenchMesh(upstream_port=19000, protocol=mesh.MeshProtocol.TCP)
    resources = bench.resources()
    assert [next(iter(r)) for r in resources] == ["mesh", "virtualNode"]
    client = _by_kind(resources)[("virtualNode", "client")]["spec"]
    assert client["listeners"] == [{"portMapping": {"port": 19000, "protocol": "tcp"}}]
    assert "backends" not in client
    assert bench.upstream_cluster == "cds_ingress_bench_client_tcp_19000"


def test_bench_mesh_access_log_is_on_the_client_node() -> None:
    plain = _by_kind(mesh.BenchMesh(upstream_port=1).resources())[("virtualNode", "client")]["spec"]
    assert "logging" not in plain
    logged = mesh.BenchMesh(upstream_port=1, access_log="/tmp/a.log").resources()
    spec = _by_kind(logged)[("virtualNode", "client")]["spec"]
    assert spec["logging"] == {"accessLog": {"file": {"path": "/tmp/a.log"}}}  # no format: Envoy's default


def _load(requests: int, nbytes: int, duration_s: float = 5.0, p99: float = 500.0) -> LoadResult:
    return LoadResult(requests, duration_s, nbytes, 0, 0, 0, 100.0, 200.0, p99, p99, 150.0, p99)


def test_bulk_figures_are_mb_per_second_and_cpu_seconds_per_gb() -> None:
    figure = scenarios.Figure.BYTES
    run = report.Measurement("envoy", 1, _load(0, 2_000_000_000, duration_s=1.0), 0.5, 0.1, figure=figure)
    assert run.rate == pytest.approx(2000.0)
    assert run.cpu_per_unit == pytest.approx(0.25)
    mine = report.Measurement("meshproxy", 1, _load(0, 2_000_000_000, 1.25), 0.6, 0.1, figure=figure)
    r = report.ScenarioReport(
        scenario=scenarios.SCENARIOS["tcp-bulk"],
        workers=1,
        load=LOAD,
        summaries=(
            report.summarize("meshproxy", [mine], peak_rss_kib=None),
            report.summarize("envoy", [run], peak_rss_kib=None),
        ),
        date="2026-01-01 00:00 UTC",
    )
    text = report.table(r)
    assert "| proxy | MB/s | p50 ms | p99 ms | p99.9 ms | CPU s/GB (range) |" in text
    assert "| envoy | 2,000 | — | — | — | 0.250 | — | 0 |" in text  # no latency for a stream
    assert "meshproxy / Envoy: MB/s 0.80x, CPU per GB 1.20x (GB per CPU-second 0.83x)" in text
    assert "bench.tcp_load bulk, one connection, up to 2 GiB" in report.section(r, MACHINE, VERSIONS)


def test_message_figures_count_messages() -> None:
    figure = scenarios.Figure.MESSAGES
    run = report.Measurement("envoy", 1, _load(100_000, 12_800_000), 1.5, 0.5, figure=figure)
    assert run.cpu_per_unit == pytest.approx(15.0)
    r = report.ScenarioReport(
        scenario=scenarios.SCENARIOS["tcp-small"],
        workers=1,
        load=LOAD,
        summaries=(report.summarize("envoy", [run], peak_rss_kib=None),),
        date="2026-01-01 00:00 UTC",
    )
    assert "| proxy | msg/s |" in report.table(r)
    assert "| envoy | 20,000 | 0.100 | 0.500 | 0.500 | 15.0 |" in report.table(r)
    section = report.section(r, MACHINE, VERSIONS)
    assert "bench.tcp_load pingpong, 32 connections, one 64-byte message in flight on each" in section
    assert "Upstream: bench.tcp_upstream echo" in section


def test_load_descriptions_name_the_generator() -> None:
    assert LOAD.describe(scenarios.SCENARIOS["h2"]).startswith("h2load -t1 -c4 -m10, 3 rounds")
    assert "POST of one framed protobuf message" in LOAD.describe(scenarios.SCENARIOS["grpc"])
    assert LOAD.describe(scenarios.SCENARIOS["small"]).startswith("wrk -t1 -c32, 3 rounds")
    assert report.upstream_description(scenarios.SCENARIOS["h2"]) == "nginx, HTTP/1.1 (http node)"
    assert report.upstream_description(scenarios.SCENARIOS["h2-h2"]) == "nginx, h2c (http2 node)"


def _telemetry_report() -> report.ScenarioReport:
    def runs(proxy: str, cpu_s: float) -> list[report.Measurement]:
        return [report.Measurement(proxy, 1, _wrk(100_000), cpu_s, 0.5)]

    count = report.TelemetryCount(requests=100_000, xray_segments=99_000, access_log_lines=100_000)
    return report.ScenarioReport(
        scenario=scenarios.SCENARIOS["small"],
        workers=1,
        load=LOAD,
        summaries=(
            report.summarize("meshproxy", runs("meshproxy", 2.0), peak_rss_kib=None),
            report.summarize("envoy", runs("envoy", 3.0), peak_rss_kib=None),
            report.summarize(
                "meshproxy+telemetry", runs("meshproxy+telemetry", 5.0), peak_rss_kib=None, telemetry=count
            ),
            report.summarize("envoy+telemetry", runs("envoy+telemetry", 4.0), peak_rss_kib=None),
        ),
        date="2026-01-01 00:00 UTC",
        telemetry=True,
    )


def test_telemetry_report_has_off_on_costs_for_both_proxies() -> None:
    r = _telemetry_report()
    assert r.key == "small+telemetry/workers=1"
    assert report.heading(r).startswith("small+telemetry · 1 worker")
    text = report.table(r)
    assert "meshproxy / Envoy: rps 1.00x, CPU per request 0.67x" in text
    assert "meshproxy / Envoy, telemetry on: rps 1.00x, CPU per request 1.25x" in text
    assert "telemetry cost, meshproxy: CPU 20.0 -> 50.0 µs/req (+30.0, 2.50x), rps 1.00x" in text
    assert "telemetry cost, envoy: CPU 30.0 -> 40.0 µs/req (+10.0, 1.33x), rps 1.00x" in text
    assert (
        "- meshproxy+telemetry: 99,000 X-Ray segments and 100,000 access-log lines for 100,000 requests "
        "(0.99 and 1.00 per request)"
    ) in text
    assert "ENABLE_ENVOY_XRAY_TRACING=1" in report.section(r, MACHINE, VERSIONS)
    assert report.telemetry_cost_line(_report((r.summaries[0],)), "meshproxy") is None


def test_results_file_orders_telemetry_sections_after_plain_and_keeps_notes() -> None:
    envoy = report.summarize("envoy", _runs("envoy", [100_000], [3.0]), peak_rss_kib=None)
    tele = _telemetry_report()
    notes = "<!-- bench:notes -->\n## Where the time goes\n\nhand-written\n<!-- bench:notes-end -->"
    existing = report.RESULTS_HEADER + "\n" + notes + "\n"
    text = report.update_results(
        existing,
        {
            tele.key: report.section(tele, MACHINE, VERSIONS),
            "small/workers=2": report.section(_report((envoy,), "small", 2), MACHINE, VERSIONS),
            "grpc/workers=1": report.section(_report((envoy,), "grpc"), MACHINE, VERSIONS),
            "small/workers=1": report.section(_report((envoy,), "small"), MACHINE, VERSIONS),
        },
    )
    keys = [line.split()[2] for line in text.splitlines() if line.startswith("<!-- bench:begin")]
    assert keys == ["small/workers=1", "small/workers=2", "small+telemetry/workers=1", "grpc/workers=1"]
    assert text.count("hand-written") == 1
    assert text.index("hand-written") < text.index("<!-- bench:begin")
    assert report.update_results(text, {}) == text
