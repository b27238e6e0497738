"""`python -m bench.soak`: meshproxy and Envoy side by side for a long, bounded run at a fixed request rate,
reporting what a soak is for: does resident memory keep growing (the RSS slope), does anything fail, and
what does it cost in CPU (issue 14).

Both proxies run at the same time, from the bench's App Mesh config (bench/mesh.py, the `http` variant;
Envoy's bootstrap is App Mesh's rendering, bench/envoy_config.py), in front of the same nginx. Each gets the
same paced load from this process (asyncio on uvloop, `--rate` requests per second over `--connections`
keep-alive connections): one request in `--churn` closes its connection (`Connection: close`, so accepts and
closes are exercised too), one in ten fetches 1 KiB, one in fifty a path nginx answers 404. Every
`--sample` seconds the harness reads each proxy's process tree from /proc: resident memory (VmRSS) and CPU
seconds. A request fails when it gets no answer, a wrong status, or a short body.

    .venv/bin/python -m bench.soak                          # 10 minutes, 200 requests/s each
    .venv/bin/python -m bench.soak --duration 120 --rate 100

The RSS slope is a least-squares fit over the samples after the first fifth of the run (warm-up: pools,
caches and allocator arenas fill first), in KiB per minute. The run is bounded: `--duration` at most an hour
and every child stopped on exit. Results (JSON and the markdown section) go to bench/out/soak-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import environment, mesh, nginx, procstat
from bench.envoy_config import bench_bootstrap, bootstrap_yaml, envoy_argv
from bench.processes import Child, HttpProbe, Supervisor, free_ports
from bench.run import OUT_DIR, find_tools, say

MAX_DURATION_S = 3600.0
READY_TIMEOUT_S = 30.0
WARM_UP_FRACTION = 0.2
REQUEST_TIMEOUT_S = 10.0
PATHS = (  # (path, expected status, weight in 50)
    (nginx.SMALL_PATH, 200, 44),
    (nginx.body_path("1k.bin"), 200, 5),
    ("/missing", 404, 1),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one proxy: seconds since the start, resident KiB, CPU seconds, requests so far."""

    t: float
    rss_kib: int
    cpu_s: float
    ok: int
    failed: int


@dataclass(slots=True)
class Tally:
    ok: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class ProxyReport:
    proxy: str
    requests: int
    failed: int
    failure_reasons: dict[str, int]
    cpu_percent: float  # of one core, over the whole run
    cpu_us_per_request: float
    rss_start_mib: float  # at the end of the warm-up
    rss_end_mib: float
    rss_max_mib: float
    rss_slope_kib_per_min: float


# ------------------------------------------------------------------------------------------ pure figures


def rss_slope_kib_per_min(samples: Sequence[Sample]) -> float:
    """Least-squares slope of resident memory over time, KiB per minute (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(s.t for s in samples) / n
    mean_r = sum(s.rss_kib for s in samples) / n
    var = sum((s.t - mean_t) ** 2 for s in samples)
    if var == 0:
        return 0.0
    cov = sum((s.t - mean_t) * (s.rss_kib - mean_r) for s in samples)
    return cov / var * 60.0


def after_warm_up(samples: Sequence[Sample], fraction: float = WARM_UP_FRACTION) -> list[Sample]:
    if not samples:
        return []
    start = samples[-1].t * fraction
    return [s for s in samples if s.t >= start]


def summarize(proxy: str, samples: Sequence[Sample], tally: Tally) -> ProxyReport:
    steady = after_warm_up(samples)
    first, last = samples[0], samples[-1]
    cpu = last.cpu_s - first.cpu_s
    elapsed = last.t - first.t
    requests = tally.ok + tally.failed
    return ProxyReport(
        proxy=proxy,
        requests=requests,
        failed=tally.failed,
        failure_reasons=dict(tally.reasons),
        cpu_percent=100.0 * cpu / elapsed if elapsed > 0 else 0.0,
        cpu_us_per_request=1e6 * cpu / requests if requests else 0.0,
        rss_start_mib=steady[0].rss_kib / 1024 if steady else 0.0,
        rss_end_mib=last.rss_kib / 1024,
        rss_max_mib=max(s.rss_kib for s in samples) / 1024,
        rss_slope_kib_per_min=rss_slope_kib_per_min(steady),
    )


def markdown(
    reports: Sequence[ProxyReport], *, duration_s: float, rate: float, when: str, machine: str
) -> str:
    lines = [
        f"### Soak: {_span(duration_s)} at {rate:g} requests/s each, both proxies at once ({when})",
        "",
        f"Machine: {machine}. `python -m bench.soak --duration {duration_s:g} --rate {rate:g}`.",
        "",
        "| Proxy | Requests | Failed | CPU (% of a core) | CPU per request | RSS after warm-up | RSS at end "
        "| RSS peak | RSS slope |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(
            f"| {r.proxy} | {r.requests:,} | {r.failed} | {r.cpu_percent:.1f} "
            f"| {r.cpu_us_per_request:.0f} µs "
            f"| {r.rss_start_mib:.1f} MiB | {r.rss_end_mib:.1f} MiB | {r.rss_max_mib:.1f} MiB "
            f"| {r.rss_slope_kib_per_min:+.1f} KiB/min |"
        )
    return "\n".join(lines) + "\n"


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def path_for(index: int) -> tuple[str, int]:
    """The request mix, deterministic: 44 small, 5 of 1 KiB, 1 missing in every 50."""
    slot = index % 50
    for path, status, weight in PATHS:
        if slot < weight:
            return path, status
        slot -= weight
    raise AssertionError("weights add up to 50")


# ------------------------------------------------------------------------------------------------ load


async def one_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, close: bool
) -> tuple[int, bool]:
    """Send one GET and read its answer: (status, whole body received)."""
    connection = "Connection: close\r\n" if close else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {mesh.VIRTUAL_SERVICE}\r\n{connection}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, len(body) == length


async def paced_connection(
    port: int, start: float, interval: float, stop: float, first: int, step: int, churn: int, tally: Tally
) -> None:
    """One client connection sending every `interval` seconds from `start` until `stop`."""
    index = first
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    due = start
    loop = asyncio.get_running_loop()
    while due < stop:
        await asyncio.sleep(max(0.0, due - loop.time()))
        due += interval
        path, expected = path_for(index)
        close = index % churn == churn - 1
        index += step
        try:
            if streams is None:
                streams = await asyncio.open_connection("127.0.0.1", port)
            status, whole = await asyncio.wait_for(one_request(*streams, path, close), REQUEST_TIMEOUT_S)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            tally.fail(type(exc).__name__)
            status, whole, close = 0, False, True
        else:
            if status == expected and whole:
                tally.ok += 1
            else:
                tally.fail(f"status {status}" if status != expected else "short body")
        if close and streams is not None:
            streams[1].close()
            streams = None
    if streams is not None:
        streams[1].close()


async def load(port: int, rate: float, connections: int, duration_s: float, churn: int, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    interval = connections / rate
    tasks = [
        paced_connection(
            port,
            start + i * interval / connections,
            interval,
            start + duration_s,
            i,
            connections,
            churn,
            tally,
        )
        for i in range(connections)
    ]
    await asyncio.gather(*tasks)


def tree_rss_kib(root: int) -> int:
    stats = procstat.all_stats()
    total = 0
    for pid in procstat.descendants(root, stats):
        with contextlib.suppress(OSError):
            total += procstat.parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
    return total


async def sample(
    children: dict[str, Child],
    tallies: dict[str, Tally],
    every_s: float,
    duration_s: float,
    samples: dict[str, list[Sample]],
) -> None:
    started = time.monotonic()
    while True:
        t = time.monotonic() - started
        for name, child in children.items():
            tally = tallies[name]
            samples[name].append(
                Sample(
                    t, tree_rss_kib(child.pid), procstat.tree_cpu_seconds(child.pid), tally.ok, tally.failed
                )
            )
        if t >= duration_s:
            return
        await asyncio.sleep(min(every_s, max(0.0, duration_s - t)))


# --------------------------------------------------------------------------------------------- the run


def start_meshproxy(
    supervisor: Supervisor, meshproxy: Sequence[str], out: Path, upstream: int
) -> tuple[Child, int]:
    admin, ingress, egress = free_ports(3)
    config = out / "mesh.json"
    config.write_text(mesh.BenchMesh(upstream_port=upstream).to_json())
    env = dict(os.environ)
    env.update(
        {
            "APPMESH_RESOURCE_ARN": mesh.CLIENT_RESOURCE_ARN,
            "APPMESH_ENVOY_INGRESS_PORT": str(ingress),
            "APPMESH_ENVOY_EGRESS_PORT": str(egress),
            "ENVOY_ADMIN_ACCESS_PORT": str(admin),
            "ENVOY_ADMIN_ACCESS_LOG_FILE": str(out / "meshproxy-admin.log"),
            "MESHPROXY_LISTEN_ADDRESS": "127.0.0.1",
        }
    )
    child = supervisor.spawn("meshproxy", [*meshproxy, "run", "--config", str(config)], env=env)
    child.wait_ready(HttpProbe(admin, "/ready"), READY_TIMEOUT_S)
    return child, egress


def start_envoy(supervisor: Supervisor, envoy: str, out: Path, upstream: int) -> tuple[Child, int]:
    admin, listen = free_ports(2)
    config = out / "envoy.yaml"
    config.write_text(
        bootstrap_yaml(bench_bootstrap(upstream_port=upstream, egress_port=listen, admin_port=admin))
    )
    child = supervisor.spawn("envoy", envoy_argv(envoy, config))
    child.wait_ready(HttpProbe(admin, "/ready"), READY_TIMEOUT_S)
    return child, listen


def run(options: argparse.Namespace) -> int:
    tools = find_tools(None)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = OUT_DIR / f"soak-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    with Supervisor(out) as supervisor:
        nginx_port, nginx_h2 = free_ports(2)
        conf = nginx.prepare(out / "nginx", nginx_port, nginx_h2)
        upstream = supervisor.spawn("nginx", nginx.command(tools.nginx, out / "nginx", conf))
        upstream.wait_ready(HttpProbe(nginx_port, nginx.SMALL_PATH), 10.0)
        children: dict[str, Child] = {}
        ports: dict[str, int] = {}
        children["meshproxy"], ports["meshproxy"] = start_meshproxy(
            supervisor, tools.meshproxy, out, nginx_port
        )
        if tools.envoy is not None:
            children["envoy"], ports["envoy"] = start_envoy(supervisor, tools.envoy, out, nginx_port)
        else:
            say("soak: Envoy is not installed (the [bench] extra): meshproxy alone")
        tallies = {name: Tally() for name in children}
        samples: dict[str, list[Sample]] = {name: [] for name in children}
        say(f"soak: {options.duration:g} s at {options.rate:g} requests/s each, {out}")

        async def soak() -> None:
            await asyncio.gather(
                sample(children, tallies, options.sample, options.duration + 0.5, samples),
                *(
                    load(
                        ports[n],
                        options.rate,
                        options.connections,
                        options.duration,
                        options.churn,
                        tallies[n],
                    )
                    for n in children
                ),
            )

        import uvloop

        uvloop.run(soak())
        for name, child in children.items():
            if not child.alive():
                tallies[name].fail(f"{name} exited")
    reports = [summarize(name, samples[name], tallies[name]) for name in children]
    machine = environment.machine()
    text = markdown(
        reports, duration_s=options.duration, rate=options.rate, when=when, machine=machine.describe()
    )
    (out / "soak.md").write_text(text)
    (out / "soak.json").write_text(
        json.dumps(
            {
                "reports": [asdict(r) for r in reports],
                "samples": {n: [asdict(s) for s in v] for n, v in samples.items()},
            },
            indent=1,
        )
    )
    print(text)
    return 0 if all(r.failed == 0 for r in reports) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of load (default 600, at most 3600)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second to each proxy (200)")
    parser.add_argument("--connections", type=int, default=8, help="client connections per proxy (8)")
    parser.add_argument(
        "--churn", type=int, default=20, help="one request in this many closes its connection"
    )
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between readings (10)")
    options = parser.parse_args(argv)
    if not 0 < options.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}]")
    if options.rate <= 0 or options.connections <= 0 or options.churn < 1 or options.sample <= 0:
        parser.error("--rate, --connections, --churn and --sample must be positive")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
