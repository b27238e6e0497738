"""Parsers the bench relies on: wrk's result line, /proc stat and status, tool version strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import environment, procstat, wrk

WRK_LINE = (
    "BENCH_WRK requests=101234 duration_us=5001234 bytes=9876543 err_connect=1 err_read=2 err_write=3 "
    "err_status=4 err_timeout=5 p50=812.0 p90=1500.5 p99=2800.0 p999=4100.2 mean=900.1 max=12000.0"
)


def test_wrk_result_line_parses() -> None:
    out = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n" + WRK_LINE + "\n"
    result = wrk.parse_output(out)
    assert result.requests == 101234
    assert result.duration_s == pytest.approx(5.001234)
    assert result.rps == pytest.approx(101234 / 5.001234)
    assert result.socket_errors == 1 + 2 + 3 + 5
    assert result.status_errors == 4
    assert result.timeouts == 5
    assert (result.p50_us, result.p90_us, result.p99_us, result.p999_us) == (812.0, 1500.5, 2800.0, 4100.2)
    assert result.max_us == 12000.0


def test_wrk_output_without_result_line_is_an_error() -> None:
    with pytest.raises(wrk.WrkError, match="no BENCH_WRK line"):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_sets_host_and_prints_p999() -> None:
    script = wrk.lua_script("upstream.bench.local")
    assert 'wrk.headers["Host"] = "upstream.bench.local"' in script
    assert "latency:percentile(99.9)" in script
    assert "Connection" not in script
    assert 'wrk.headers["Connection"] = "close"' in wrk.lua_script("h", connection_close=True)


def test_wrk_command_shape() -> None:
    argv = wrk.command("wrk", "http://127.0.0.1:1/", Path("s.lua"), duration_s=5, connections=32)
    assert argv == ["wrk", "-t1", "-c32", "-d5s", "--latency", "-s", "s.lua", "http://127.0.0.1:1/"]


def _stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int, cstime: int) -> str:
    # proc(5) fields 3..: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime ...
    fields = ["S", str(ppid), "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime)]
    fields += [str(cutime), str(cstime), "20", "0", "1", "0"]
    return f"{pid} ({comm}) " + " ".join(fields)


def test_stat_parse_survives_odd_comm() -> None:
    stat = procstat.parse_stat(_stat_line(42, "we ird) (name", 7, 100, 50, 3, 2))
    assert (stat.pid, stat.ppid, stat.utime, stat.stime, stat.cutime, stat.cstime) == (42, 7, 100, 50, 3, 2)
    assert stat.ticks == 155


@pytest.mark.parametrize("line", ["", "42 no comm here", "42 (x) S 1 2"])
def test_bad_stat_lines_are_errors(line: str) -> None:
    with pytest.raises(procstat.ProcStatError):
        procstat.parse_stat(line)


def test_descendants_walks_the_live_tree_only() -> None:
    stats = {
        s.pid: s
        for s in (
            procstat.parse_stat(_stat_line(10, "main", 1, 0, 0, 0, 0)),
            procstat.parse_stat(_stat_line(11, "worker", 10, 0, 0, 0, 0)),
            procstat.parse_stat(_stat_line(12, "worker", 10, 0, 0, 0, 0)),
            procstat.parse_stat(_stat_line(13, "grandchild", 12, 0, 0, 0, 0)),
            procstat.parse_stat(_stat_line(20, "other", 1, 0, 0, 0, 0)),
        )
    }
    assert procstat.descendants(10, stats) == [10, 11, 12, 13]
    assert procstat.descendants(12, stats) == [12, 13]
    assert procstat.descendants(99, stats) == []


def test_status_values() -> None:
    text = "Name:\tpython\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n"
    assert procstat.parse_status_kib(text, "VmHWM") == 12345
    assert procstat.parse_status_kib("Name:\tkthread\n", "VmHWM") == 0
    with pytest.raises(procstat.ProcStatError):
        procstat.parse_status_kib("VmHWM:\tlots kB\n", "VmHWM")


def test_system_busy_ticks_leave_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 50 9000 70 3 2 1 0 0\ncpu0 50 2 25 4500 35 1 1 0 0 0\nintr 1 2 3\n"
    assert procstat.parse_cpu_busy_ticks(stat) == 100 + 5 + 50 + 3 + 2 + 1
    with pytest.raises(procstat.ProcStatError):
        procstat.parse_cpu_busy_ticks("intr 1 2 3\n")


def test_cpu_model() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7R13 Processor\n"
    assert environment.parse_cpu_model(cpuinfo) == "AMD EPYC 7R13 Processor"
    assert environment.parse_cpu_model("processor : 0\nHardware : BCM2835\n") == "BCM2835"
    assert environment.parse_cpu_model("") == "unknown"


def test_tool_versions() -> None:
    envoy = "\n/x/envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n\n"
    assert environment.parse_envoy_version(envoy) == "1.40.0"
    assert environment.parse_envoy_version("garbage") is None
    assert environment.parse_nginx_version("nginx version: nginx/1.22.1\n") == "1.22.1"
    assert environment.parse_wrk_version(
        "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer\n"
    ) == ("4.1.0-3+b2")
    assert environment.parse_wrk_version("wrk 4.2.0 [epoll] Copyright") == "4.2.0"
    assert environment.parse_h2load_version("h2load nghttp2/1.52.0\n") == "1.52.0"
    assert environment.parse_h2load_version("") is None
