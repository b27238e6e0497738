"""The HTTP/2 and TCP load generators' pure parts: h2load output and log parsing, its command line, gRPC
framing, and bench.tcp_load's result line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import h2load, tcp_load
from bench.load import LoadResult, percentile

# Real h2load 1.52 output of a timed run (-D 5) through a proxy.
H2LOAD_TIMED = """\
starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 5s of main duration
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 5.00s, 18137.80 req/s, 1.04MB/s
requests: 90729 total, 90729 started, 90689 done, 90689 succeeded, 40 failed, 12 errored, 1 timeout
status codes: 90689 2xx, 0 3xx, 0 4xx, 28 5xx
traffic: 5.21MB (5463322) total, 2.97MB (3114446) headers (space savings 64.50%), 177.13KB (181378) data
                     min         max         mean         sd        +/- sd
time for request:      312us     25.71ms      2.19ms      1.41ms    81.20%
time for connect:      176us       210us       193us        23us   100.00%
time to 1st byte:      584us       681us       632us        67us   100.00%
req/s           :    4400.60     4667.76     4534.18      118.20   100.00%
"""

# ... and of a count-based probe that could not connect at all (h2load still exits 0).
H2LOAD_REFUSED = """\
starting benchmark...
spawning thread #0: 1 total client(s). 1 total requests

finished in 588us, 0.00 req/s, 0B/s
requests: 1 total, 0 started, 0 done, 0 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 0B (0) total, 0B (0) headers (space savings 0.00%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:        0us         0us         0us         0us     0.00%
"""


def test_h2load_timed_output_parses() -> None:
    s = h2load.parse_output(H2LOAD_TIMED)
    assert s.duration_s == pytest.approx(5.0)
    assert (s.total, s.succeeded, s.failed, s.errored, s.timeout) == (90729, 90689, 40, 12, 1)
    assert (s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx) == (90689, 0, 0, 28)
    assert (s.traffic_total, s.traffic_headers, s.traffic_data) == (5463322, 3114446, 181378)
    assert s.request_min_us == pytest.approx(312)
    assert s.request_max_us == pytest.approx(25710)
    assert s.request_mean_us == pytest.approx(2190)
    assert s.request_sd_us == pytest.approx(1410)


def test_h2load_result_counts_successes_and_splits_errors() -> None:
    durations = h2load.parse_log(["1795311656783937\t200\t302\n", "1795311656783938\t200\t2500\n", "\n"])
    result = h2load.result(h2load.parse_output(H2LOAD_TIMED), durations)
    assert result.requests == 90689
    assert result.rps == pytest.approx(90689 / 5.0)
    assert result.bytes == 181378  # body bytes only: the harness compares them with the body size
    assert result.socket_errors == 12  # errored: network failures and resets
    assert result.status_errors == 28  # failed but not errored: non-2xx/3xx answers
    assert result.timeouts == 1
    assert (result.p50_us, result.p99_us) == (302.0, 2500.0)
    assert result.mean_us == pytest.approx(2190)
    assert result.max_us == pytest.approx(25710)  # the text's max when the log holds less


def test_h2load_output_of_a_refused_probe_has_no_successes() -> None:
    result = h2load.result(h2load.parse_output(H2LOAD_REFUSED), [])
    assert result.requests == 0
    assert result.socket_errors == 1
    assert result.duration_s == pytest.approx(588e-6)
    assert result.p99_us == 0.0


@pytest.mark.parametrize(
    "text",
    ["", "connect to 127.0.0.1:1 failed\n", H2LOAD_TIMED.replace("status codes:", "codes:")],
)
def test_h2load_output_without_the_needed_lines_is_an_error(text: str) -> None:
    with pytest.raises(h2load.H2loadError, match="h2load output"):
        h2load.parse_output(text)


def test_h2load_log_gives_sorted_durations_and_rejects_junk() -> None:
    rows = ["1\t200\t900\n", "2\t200\t100\n", "3\t503\t500\n"]
    assert h2load.parse_log(rows) == [100.0, 500.0, 900.0]
    with pytest.raises(h2load.H2loadError, match="line 1"):
        h2load.parse_log(["garbage\n"])
    with pytest.raises(h2load.H2loadError, match="bad duration"):
        h2load.parse_log(["1\t200\tslow\n"])


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    assert percentile(values, 99.9) == 999.0
    assert percentile(values, 100) == 1000.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_h2load_timed_command() -> None:
    argv = h2load.command(
        "h2load",
        "http://127.0.0.1:15001/",
        authority="upstream.bench.local",
        duration_s=5,
        clients=4,
        streams=10,
        log_file=Path("/tmp/x.tsv"),
    )
    assert argv[:6] == ["h2load", "-t1", "-c4", "-m10", "-D", "5"]
    assert "--log-file=/tmp/x.tsv" in argv
    assert argv[argv.index("-H") + 1] == ":authority: upstream.bench.local"  # a plain host: gets a 404
    assert argv[-1] == "http://127.0.0.1:15001/"
    assert "-d" not in argv
    assert not any(a.startswith("-n") for a in argv)


def test_h2load_grpc_probe_command() -> None:
    argv = h2load.command(
        "h2load",
        "http://127.0.0.1:15001/bench.Bench/Unary",
        authority="upstream.bench.local",
        duration_s=0,
        clients=1,
        streams=1,
        log_file=Path("l.tsv"),
        data_file=Path("req.bin"),
        headers=h2load.GRPC_HEADERS,
        requests=1,
    )
    assert "-n1" in argv and "-D" not in argv
    headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    assert headers == [":authority: upstream.bench.local", "content-type: application/grpc", "te: trailers"]
    assert argv[argv.index("-d") + 1] == "req.bin"


def test_grpc_framing() -> None:
    message = h2load.protobuf_string_field(1, "ping")
    assert message == b"\x0a\x04ping"  # field 1, wire type 2 (length-delimited), 4 bytes
    assert h2load.grpc_frame(message) == b"\x00\x00\x00\x00\x06\x0a\x04ping"
    assert h2load.grpc_frame(b"") == b"\x00\x00\x00\x00\x00"
    with pytest.raises(ValueError):
        h2load.protobuf_string_field(16, "x")


def test_tcp_result_line_round_trips() -> None:
    line = tcp_load.result_line(
        messages=3, duration_s=2.5, nbytes=384, errors=1, latencies_us=[10.0, 20.0, 30.0]
    )
    result = tcp_load.parse_output("noise\n" + line + "\n")
    assert result == LoadResult(
        requests=3,
        duration_s=2.5,
        bytes=384,
        socket_errors=1,
        status_errors=0,
        timeouts=0,
        p50_us=20.0,
        p90_us=30.0,
        p99_us=30.0,
        p999_us=30.0,
        mean_us=20.0,
        max_us=30.0,
    )
    assert result.rps == pytest.approx(1.2)


def test_tcp_bulk_result_is_bytes_without_latency() -> None:
    line = tcp_load.result_line(messages=0, duration_s=0.5, nbytes=2_000_000_000, errors=0, latencies_us=[])
    result = tcp_load.parse_output(line)
    assert result.mb_per_s == pytest.approx(4000.0)
    assert result.requests == 0 and result.p99_us == 0.0


def test_tcp_output_without_result_line_is_an_error() -> None:
    with pytest.raises(tcp_load.TcpLoadError, match="no BENCH_TCP line"):
        tcp_load.parse_output("tcp_load: ConnectionRefusedError()\n")


def test_tcp_load_commands() -> None:
    ping = tcp_load.command("py", "pingpong", 15000, duration_s=5, connections=32, size=64, max_messages=100)
    assert ping == [
        "py", "-m", "bench.tcp_load", "pingpong", "--port", "15000", "--duration", "5",
        "--connections", "32", "--size", "64", "--max-messages", "100",
    ]  # fmt: skip
    bulk = tcp_load.command("py", "bulk", 15000, duration_s=5, total_bytes=1 << 20)
    assert bulk[-2:] == ["--bytes", str(1 << 20)]


@pytest.mark.parametrize(
    "argv",
    [
        ["pingpong", "--port", "0", "--duration", "1"],
        ["pingpong", "--port", "1", "--duration", "0"],
        ["bulk", "--port", "1", "--duration", "1", "--bytes", "0"],
        ["pingpong", "--port", "1", "--duration", "1", "--connections", "0"],
    ],
)
def test_tcp_load_rejects_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        tcp_load.main(argv)
    assert exc.value.code == 2
