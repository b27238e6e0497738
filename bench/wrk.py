"""wrk as the HTTP/1.1 load generator: its Lua script, its command line, and the parse of its result line.

wrk's own `--latency` text stops at p99, so the script's `done` hook prints one machine-readable line with
every figure the bench reports, p99.9 included. Latencies are microseconds, as wrk keeps them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.load import LoadResult

RESULT_MARK = "BENCH_WRK"

_FIELDS = (
    "requests",
    "duration_us",
    "bytes",
    "err_connect",
    "err_read",
    "err_write",
    "err_status",
    "err_timeout",
    "p50",
    "p90",
    "p99",
    "p999",
    "mean",
    "max",
)

_DONE = f"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "{RESULT_MARK} requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d err_write=%d err_status=%d "
    .. "err_timeout=%d p50=%.1f p90=%.1f p99=%.1f p999=%.1f mean=%.1f max=%.1f\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
"""

_LINE = re.compile(RESULT_MARK + r" " + r" ".join(rf"{name}=(?P<{name}>[0-9.]+)" for name in _FIELDS))


class WrkError(Exception):
    """wrk failed, timed out, or printed no result line."""


def lua_script(host: str, *, connection_close: bool = False) -> str:
    """The wrk script: `Host` for the egress route, optionally `Connection: close`, and the result line."""
    lines = [f'wrk.headers["Host"] = "{host}"']
    if connection_close:
        # wrk opens a new connection after every response that closes it: one connection per request.
        lines.append('wrk.headers["Connection"] = "close"')
    return "\n".join(lines) + "\n" + _DONE


def parse_output(stdout: str) -> LoadResult:
    """The result line printed by `lua_script`'s done hook."""
    match = _LINE.search(stdout)
    if match is None:
        tail = stdout.strip().splitlines()[-3:]
        raise WrkError(f"no {RESULT_MARK} line in wrk output: {' | '.join(tail) or '(empty)'}")
    v = {name: float(match.group(name)) for name in _FIELDS}
    return LoadResult(
        requests=int(v["requests"]),
        duration_s=v["duration_us"] / 1e6,
        bytes=int(v["bytes"]),
        socket_errors=int(v["err_connect"] + v["err_read"] + v["err_write"] + v["err_timeout"]),
        status_errors=int(v["err_status"]),
        timeouts=int(v["err_timeout"]),
        p50_us=v["p50"],
        p90_us=v["p90"],
        p99_us=v["p99"],
        p999_us=v["p999"],
        mean_us=v["mean"],
        max_us=v["max"],
    )


def command(
    wrk: str, url: str, script: Path, *, duration_s: float, connections: int, threads: int = 1
) -> list[str]:
    """`wrk -t1 -c32 -d<dur>s --latency -s script url`: the hot-path notes' load shape."""
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run(argv: list[str], *, timeout_s: float) -> LoadResult:
    """Run wrk to completion (bounded by `timeout_s`) and parse its result line."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise WrkError(f"cannot run wrk: {exc}") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_output(done.stdout)
