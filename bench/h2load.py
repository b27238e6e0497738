"""h2load (Debian nghttp2-client) as the HTTP/2 and gRPC load generator: command line and output parsers.

h2load speaks h2c with prior knowledge to an `http://` URL. Its text output gives counts, traffic and
min/max/mean/sd of "time for request" but no percentiles, so the bench passes `--log-file` (one row per
request: start time µs, status, duration µs) and takes p50/p90/p99/p99.9 from that file.

Counting follows h2load's own definitions: `succeeded` are 2xx/3xx answers, `failed` includes them with a
non-success status, and `errored` (a subset of `failed`) are network failures and stream resets.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadResult, percentile

# The egress listener routes by :authority (spec §4.3); h2load would send the URL's 127.0.0.1:port.
AUTHORITY_HEADER = ":authority: {host}"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
INACTIVITY_TIMEOUT_S = 5  # a proxy that stops answering ends the run instead of hanging it


class H2loadError(Exception):
    """h2load failed, timed out, or printed output the bench cannot read."""


@dataclass(frozen=True, slots=True)
class H2loadSummary:
    """The figures of h2load's text output (times in microseconds, traffic in bytes)."""

    duration_s: float
    total: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    traffic_total: int
    traffic_headers: int
    traffic_data: int
    request_min_us: float
    request_max_us: float
    request_mean_us: float
    request_sd_us: float


_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_FINISHED = re.compile(r"^finished in (?P<value>[0-9.]+)(?P<unit>us|ms|s),", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (?P<total>\d+) total, \d+ started, \d+ done, (?P<succeeded>\d+) succeeded, "
    r"(?P<failed>\d+) failed, (?P<errored>\d+) errored, (?P<timeout>\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(
    r"^status codes: (?P<s2>\d+) 2xx, (?P<s3>\d+) 3xx, (?P<s4>\d+) 4xx, (?P<s5>\d+) 5xx", re.MULTILINE
)
_TRAFFIC = re.compile(
    r"^traffic: \S+ \((?P<total>\d+)\) total, \S+ \((?P<headers>\d+)\) headers.*?, "
    r"\S+ \((?P<data>\d+)\) data",
    re.MULTILINE,
)
_TIME = r"([0-9.]+)(us|ms|s)"
_REQUEST_TIME = re.compile(rf"^time for request:\s+{_TIME}\s+{_TIME}\s+{_TIME}\s+{_TIME}", re.MULTILINE)


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNIT_S[unit]


def parse_output(stdout: str) -> H2loadSummary:
    """h2load's summary text; `H2loadError` when a line the bench needs is missing."""
    found = {
        "finished": _FINISHED.search(stdout),
        "requests": _REQUESTS.search(stdout),
        "status codes": _STATUS.search(stdout),
        "traffic": _TRAFFIC.search(stdout),
    }
    missing = [name for name, match in found.items() if match is None]
    if missing:
        tail = " | ".join(stdout.strip().splitlines()[-3:]) or "(empty)"
        raise H2loadError(f"no {', '.join(missing)} line in h2load output: {tail}")
    finished, requests, status, traffic = (
        found[k] for k in ("finished", "requests", "status codes", "traffic")
    )
    assert finished is not None and requests is not None and status is not None and traffic is not None
    times = [0.0, 0.0, 0.0, 0.0]
    request_time = _REQUEST_TIME.search(stdout)
    if request_time is not None:  # absent when no request completed
        groups = request_time.groups()
        times = [_seconds(groups[i], groups[i + 1]) * 1e6 for i in range(0, 8, 2)]
    return H2loadSummary(
        duration_s=_seconds(finished.group("value"), finished.group("unit")),
        total=int(requests.group("total")),
        succeeded=int(requests.group("succeeded")),
        failed=int(requests.group("failed")),
        errored=int(requests.group("errored")),
        timeout=int(requests.group("timeout")),
        status_2xx=int(status.group("s2")),
        status_3xx=int(status.group("s3")),
        status_4xx=int(status.group("s4")),
        status_5xx=int(status.group("s5")),
        traffic_total=int(traffic.group("total")),
        traffic_headers=int(traffic.group("headers")),
        traffic_data=int(traffic.group("data")),
        request_min_us=times[0],
        request_max_us=times[1],
        request_mean_us=times[2],
        request_sd_us=times[3],
    )


def parse_log(lines: Iterable[str]) -> list[float]:
    """Request durations (µs) from an h2load `--log-file`, sorted. Rows: start µs, status, duration µs."""
    durations: list[float] = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) < 3:
            if line.strip():
                raise H2loadError(f"h2load log line {number} has {len(fields)} fields: {line[:80]!r}")
            continue
        try:
            durations.append(float(fields[2]))
        except ValueError:
            raise H2loadError(f"h2load log line {number}: bad duration {fields[2][:20]!r}") from None
    durations.sort()
    return durations


def result(summary: H2loadSummary, durations: list[float]) -> LoadResult:
    """One `LoadResult`: succeeded requests, body bytes, percentiles from the log (text figures without)."""
    return LoadResult(
        requests=summary.succeeded,
        duration_s=summary.duration_s,
        bytes=summary.traffic_data,
        socket_errors=summary.errored,
        status_errors=summary.failed - summary.errored,
        timeouts=summary.timeout,
        p50_us=percentile(durations, 50),
        p90_us=percentile(durations, 90),
        p99_us=percentile(durations, 99),
        p999_us=percentile(durations, 99.9),
        mean_us=summary.request_mean_us,
        max_us=summary.request_max_us if not durations else max(durations[-1], summary.request_max_us),
    )


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def protobuf_string_field(number: int, value: str) -> bytes:
    """A protobuf message holding one string field (field numbers 1-15, values under 128 bytes)."""
    data = value.encode()
    if not 1 <= number <= 15 or len(data) > 127:
        raise ValueError("only small field numbers and short strings are encoded here")
    return bytes([number << 3 | 2, len(data)]) + data


def command(
    h2load: str,
    url: str,
    *,
    authority: str,
    duration_s: float,
    clients: int,
    streams: int,
    log_file: Path,
    data_file: Path | None = None,
    headers: tuple[str, ...] = (),
    requests: int | None = None,
) -> list[str]:
    """`h2load -t1 -c<clients> -m<streams> -D<s> --log-file F -H ':authority: host' [-d body] url`.

    With `requests`, a count-based run (`-n`) instead of a timed one: the sanity probe's single request.
    """
    bound = [f"-n{requests}"] if requests is not None else ["-D", str(max(1, round(duration_s)))]
    argv = [
        h2load,
        "-t1",
        f"-c{clients}",
        f"-m{streams}",
        *bound,
        f"--connection-inactivity-timeout={INACTIVITY_TIMEOUT_S}",
        f"--log-file={log_file}",
        "-H",
        AUTHORITY_HEADER.format(host=authority),
    ]
    for header in headers:
        argv += ["-H", header]
    if data_file is not None:
        argv += ["-d", str(data_file)]
    return [*argv, url]


def run(argv: list[str], *, log_file: Path, timeout_s: float) -> LoadResult:
    """Run h2load to completion (bounded by `timeout_s`), parse its output and its log, delete the log."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise H2loadError(f"h2load did not finish within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise H2loadError(f"cannot run h2load: {exc}") from None
    try:
        if done.returncode != 0:
            raise H2loadError(
                f"h2load exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
            )
        summary = parse_output(done.stdout)
        try:
            with log_file.open() as log:
                durations = parse_log(log)
        except OSError as exc:
            raise H2loadError(f"cannot read h2load's log: {exc}") from None
        return result(summary, durations)
    finally:
        log_file.unlink(missing_ok=True)  # 100k+ rows per run: keep the run directory small
