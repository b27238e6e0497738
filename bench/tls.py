"""The mesh-TLS bench (issue 13): meshproxy against Envoy with TLS on, in the same run, alternating.

```
.venv/bin/python -m bench.tls                          # every TLS scenario, 3 rounds x 5 s
.venv/bin/python -m bench.tls --scenario tls-mtls --duration 10 --rounds 5
```

An addition beside `bench.run` (it reuses its processes, wrk and /proc readers and leaves its scenarios and
RESULTS.md alone); its results go to bench/RESULTS-tls.md. Both proxies run the same App Mesh file,
Envoy from meshproxy's own rendering of it (meshproxy.config.envoy: the TLS contexts App Mesh configured):

- `tls-mtls`: wrk (HTTP/1.1 keep-alive, plaintext) -> egress -> mTLS -> nginx (TLS, client certificate
  verified); per request;
- `tls-mtls-handshake`: the same, but nginx closes each connection: one client-side mTLS handshake per
  request (`cluster.<name>.ssl.handshake`);
- `tls-terminate`: wrk over TLS, keep-alive -> the client node's STRICT listener (ingress) -> nginx in
  plaintext; per request;
- `tls-terminate-handshake`: wrk over TLS with `Connection: close`: one full server handshake per request
  (`listener.<addr>.ssl.handshake`).

wrk cannot present a client certificate, so the terminating scenarios check no client certificate; mTLS is
measured where the proxy presents one (origination), which App Mesh's clients did on every call.

Figures per proxy (medians over rounds): requests per second, CPU microseconds per request (utime+stime of
the proxy's process tree, /proc), handshakes per CPU-second, and the TLS sessions resumed. The ratio line is
meshproxy / Envoy. As in bench.run, CPU per request is the figure to compare; the numbers are recorded,
not chased.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import environment, mesh, nginx, procstat, wrk
from bench.envoy_config import EnvoyConfigError, compile_config_file, envoy_argv
from bench.load import LoadResult
from bench.processes import Child, ChildError, HttpProbe, Supervisor, free_ports, http_get

OUT = environment.REPO / "bench" / "out"
RESULTS = environment.REPO / "bench" / "RESULTS-tls.md"
CONNECTIONS = 32
NOTES = "<!-- bench:notes -->"  # hand-written notes below this line survive a rerun
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TlsScenario:
    name: str
    description: str
    terminate: bool  # TLS on the proxy's listener (wrk speaks it), else originated to nginx
    handshake_per_request: bool


SCENARIOS = {
    s.name: s
    for s in (
        TlsScenario(
            "tls-mtls", "mTLS origination, keep-alive (egress -> nginx verifying the client)", False, False
        ),
        TlsScenario(
            "tls-mtls-handshake", "mTLS origination, a new upstream connection per request", False, True
        ),
        TlsScenario("tls-terminate", "TLS termination on a STRICT listener, keep-alive", True, False),
        TlsScenario("tls-terminate-handshake", "TLS termination, a new connection per request", True, True),
    )
}


def nginx_config(prefix: Path, certs: Path, ports: dict[str, int]) -> str:
    """nginx: `mtls` (TLS, client certificate required, keep-alive), `mtls-close` (the same, closing every
    connection after its response), `plain` (HTTP/1.1). One worker, as in bench/nginx.py."""
    p = prefix.resolve()
    tls = f"""
        ssl_certificate {certs}/upstream.pem;
        ssl_certificate_key {certs}/upstream.key;
        ssl_client_certificate {certs}/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;"""
    answer = 'location = / { default_type text/plain; return 200 "ok"; }'
    return f"""\
{nginx.prologue(p)}
    server {{ listen 127.0.0.1:{ports["mtls"]} ssl backlog=4096; {tls} {answer} }}
    server {{ listen 127.0.0.1:{ports["mtls-close"]} ssl backlog=4096; keepalive_timeout 0; {tls} {answer} }}
    server {{ listen 127.0.0.1:{ports["plain"]} backlog=4096; {answer} }}
}}
"""


def mesh_resources(scenario: TlsScenario, certs: Path, ports: dict[str, int]) -> list[dict[str, Any]]:
    """The bench mesh (bench/mesh.py `http`) with TLS: the client policy (trust, client certificate) for
    origination, or a STRICT listener on the client node for termination."""
    upstream = ports["mtls-close" if scenario.handshake_per_request else "mtls"]
    resources = mesh.BenchMesh(upstream_port=ports["plain"] if scenario.terminate else upstream).resources()
    client = resources[1]["virtualNode"]["spec"]
    files = {"certificateChain": str(certs / "client.pem"), "privateKey": str(certs / "client.key")}
    if scenario.terminate:
        client.pop("backends")
        client["listeners"] = [
            {
                "portMapping": {"port": ports["plain"], "protocol": "http"},
                "tls": {"mode": "STRICT", "certificate": {"file": files}},
            }
        ]
        client["serviceDiscovery"] = {"dns": {"hostname": "127.0.0.1"}}
    else:
        trust = {"file": {"certificateChain": str(certs / "ca.pem")}}
        client["backendDefaults"] = {
            "clientPolicy": {"tls": {"validation": {"trust": trust}, "certificate": {"file": files}}}
        }
    return resources


def write_certificates(directory: Path) -> None:
    """A CA, nginx's certificate (for 127.0.0.1, the upstream node's DNS name: App Mesh's default SAN) and
    the proxies' certificate (client certificate, and the listener's for termination)."""
    import trustme  # a test dependency, which the bench needs anyway (scripts/setup installs both)

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, identity in (("upstream", "127.0.0.1"), ("client", "client.bench.local")):
        leaf = ca.issue_cert(identity)
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))


@dataclass
class Proxy:
    label: str
    child: Child
    port: int  # where wrk connects
    admin: int
    stat: str  # the handshake counter of the TLS side under test


@dataclass
class Measured:
    rps: list[float] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)
    handshakes_per_cpu_s: list[float] = field(default_factory=list)
    resumed: list[float] = field(default_factory=list)
    errors: int = 0

    def medians(self) -> dict[str, float]:
        return {
            "rps": statistics.median(self.rps) if self.rps else 0.0,
            "cpu_us_per_request": statistics.median(self.cpu_us_per_request)
            if self.cpu_us_per_request
            else 0.0,
            "handshakes_per_cpu_s": statistics.median(self.handshakes_per_cpu_s)
            if self.handshakes_per_cpu_s
            else 0.0,
            "resumed_share": statistics.median(self.resumed) if self.resumed else 0.0,
            "errors": float(self.errors),
        }


def stats(admin: int) -> dict[str, int]:
    _, body = http_get(admin, "/stats", timeout_s=5.0)
    values: dict[str, int] = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            values[name.strip()] = int(value)
    return values


class TlsBench:
    def __init__(self, args: argparse.Namespace, out_dir: Path, supervisor: Supervisor) -> None:
        self.args = args
        self.out = out_dir
        self.supervisor = supervisor
        self.certs = out_dir / "certs"
        self.ports = dict(zip(("mtls", "mtls-close", "plain"), free_ports(3), strict=True))
        self.envoy = args.envoy or shutil.which("envoy") or str(environment.REPO / ".venv" / "bin" / "envoy")

    def start_nginx(self) -> None:
        prefix = self.out / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, self.certs.resolve(), self.ports))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        child = self.supervisor.spawn(
            "nginx",
            [binary, "-p", f"{prefix.resolve()}/", "-e", f"{prefix.resolve()}/error.log", "-c", str(conf)],
        )
        child.wait_ready(HttpProbe(self.ports["plain"], "/"), timeout_s=10)

    def mesh_file(self, scenario: TlsScenario) -> Path:
        path = self.out / f"mesh-{scenario.name}.json"
        path.write_text(json.dumps(mesh_resources(scenario, self.certs.resolve(), self.ports), indent=2))
        return path

    def handshake_stat(self, scenario: TlsScenario, port: int) -> str:
        if scenario.terminate:
            return f"listener.127.0.0.1_{port}.ssl.handshake"
        upstream = self.ports["mtls-close" if scenario.handshake_per_request else "mtls"]
        cluster = mesh.egress_cluster_name(mesh.MESH, mesh.UPSTREAM_NODE, "http", upstream)
        return f"cluster.{cluster}.ssl.handshake"

    def start_meshproxy(self, scenario: TlsScenario) -> Proxy:
        admin, ingress, egress = free_ports(3)
        env = dict(os.environ)
        env.update(
            {
                "APPMESH_RESOURCE_ARN": mesh.CLIENT_RESOURCE_ARN,
                "APPMESH_ENVOY_INGRESS_PORT": str(ingress),
                "APPMESH_ENVOY_EGRESS_PORT": str(egress),
                "ENVOY_ADMIN_ACCESS_PORT": str(admin),
                "ENVOY_ADMIN_ACCESS_LOG_FILE": str(self.out / "meshproxy-admin.log"),
                "MESHPROXY_LISTEN_ADDRESS": "127.0.0.1",
            }
        )
        meshproxy = str(environment.REPO / ".venv" / "bin" / "meshproxy")
        child = self.supervisor.spawn(
            f"meshproxy-{scenario.name}",
            [meshproxy, "run", "--config", str(self.mesh_file(scenario))],
            env=env,
        )
        child.wait_ready(HttpProbe(admin, "/ready"), timeout_s=READY_TIMEOUT_S)
        port = ingress if scenario.terminate else egress
        return Proxy("meshproxy", child, port, admin, self.handshake_stat(scenario, port))

    def start_envoy(self, scenario: TlsScenario) -> Proxy:
        from meshproxy.config.envoy import (
            ProxyAddresses,
            admin_and_node,
            resources_from_snapshot,
            side_resources,
            static_bootstrap,
        )

        admin, port = free_ports(2)
        try:
            snapshot = compile_config_file(
                str(self.mesh_file(scenario)), mesh.CLIENT_RESOURCE_ARN, egress_port=port
            )
        except EnvoyConfigError as exc:
            raise ChildError("envoy", str(exc)) from None
        every = resources_from_snapshot(snapshot, ProxyAddresses("127.0.0.1", port, port))
        node = mesh.CLIENT_RESOURCE_ARN
        bootstrap = static_bootstrap(
            admin_and_node(node, node, admin), side_resources(every, ingress=scenario.terminate)
        )
        config = self.out / f"envoy-{scenario.name}.json"
        config.write_text(json.dumps(bootstrap, indent=1))
        argv = envoy_argv(self.envoy, config, 1, "--base-id", str(admin))
        child = self.supervisor.spawn(f"envoy-{scenario.name}", argv)
        child.wait_ready(HttpProbe(admin, "/ready"), timeout_s=READY_TIMEOUT_S)
        return Proxy("envoy", child, port, admin, self.handshake_stat(scenario, port))

    def wrk_run(self, scenario: TlsScenario, proxy: Proxy, duration: float) -> LoadResult:
        scheme = "https" if scenario.terminate else "http"
        close = scenario.terminate and scenario.handshake_per_request
        script = self.out / f"wrk-{scenario.name}.lua"
        script.write_text(wrk.lua_script(mesh.VIRTUAL_SERVICE, connection_close=close))
        argv = wrk.command(
            self.args.wrk,
            f"{scheme}://127.0.0.1:{proxy.port}/",
            script,
            duration_s=duration,
            connections=CONNECTIONS,
        )
        return wrk.run(argv, timeout_s=duration + 20)

    def measure(self, scenario: TlsScenario, proxy: Proxy, into: Measured) -> None:
        before_cpu, before = procstat.tree_cpu_seconds(proxy.child.pid), stats(proxy.admin)
        result = self.wrk_run(scenario, proxy, self.args.duration)
        cpu = procstat.tree_cpu_seconds(proxy.child.pid) - before_cpu
        after = stats(proxy.admin)
        handshakes = after.get(proxy.stat, 0) - before.get(proxy.stat, 0)
        resumed_stat = proxy.stat.replace(".handshake", ".session_reused")
        resumed = after.get(resumed_stat, 0) - before.get(resumed_stat, 0)
        into.rps.append(result.rps)
        into.cpu_us_per_request.append(cpu * 1e6 / max(1, result.requests))
        into.handshakes_per_cpu_s.append(handshakes / cpu if cpu > 0 else 0.0)
        into.resumed.append(resumed / handshakes if handshakes else 0.0)
        into.errors += result.errors

    def run(self, scenario: TlsScenario) -> dict[str, dict[str, float]]:
        proxies = [self.start_meshproxy(scenario), self.start_envoy(scenario)]
        try:
            for proxy in proxies:
                status, body = (
                    http_get(proxy.port, "/", host=mesh.VIRTUAL_SERVICE)
                    if not scenario.terminate
                    else (200, b"ok")
                )
                if (status, body) != (200, b"ok"):
                    raise ChildError(proxy.label, f"the first exchange answered {status} {body[:80]!r}")
                self.wrk_run(scenario, proxy, 1.0)  # warm-up
            measured = {proxy.label: Measured() for proxy in proxies}
            for _ in range(self.args.rounds):
                for proxy in proxies:
                    self.measure(scenario, proxy, measured[proxy.label])
            return {label: m.medians() for label, m in measured.items()}
        finally:
            for proxy in proxies:
                proxy.child.stop()


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| Scenario | Proxy | rps | CPU µs/req | handshakes / CPU-s | sessions resumed | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, by_proxy in results.items():
        for label, m in by_proxy.items():
            lines.append(
                f"| {name} | {label} | {m['rps']:.0f} | {m['cpu_us_per_request']:.1f} | "
                f"{m['handshakes_per_cpu_s']:.0f} | {m['resumed_share']:.0%} | {m['errors']:.0f} |"
            )
        if {"meshproxy", "envoy"} <= by_proxy.keys():
            ours, theirs = by_proxy["meshproxy"], by_proxy["envoy"]
            cpu = (
                ours["cpu_us_per_request"] / theirs["cpu_us_per_request"]
                if theirs["cpu_us_per_request"]
                else 0
            )
            rps = ours["rps"] / theirs["rps"] if theirs["rps"] else 0
            lines.append(f"| {name} | meshproxy / Envoy | {rps:.2f}x | {cpu:.2f}x | | | |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="all", help=f"comma-separated: {', '.join(SCENARIOS)}, or all")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--envoy", default=None)
    parser.add_argument("--no-results-file", action="store_true")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    out = OUT / time.strftime("tls-%Y%m%d-%H%M%S")
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with Supervisor(out / "logs") as supervisor:
        bench = TlsBench(args, out, supervisor)
        write_certificates(bench.certs)
        bench.start_nginx()
        for name in names:
            print(f"bench.tls: {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = bench.run(SCENARIOS[name])
            except ChildError as exc:
                print(f"bench.tls: {name} not measured: {exc}", file=sys.stderr)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if not args.no_results_file and results:
        machine = environment.machine().describe()
        versions = environment.versions(
            envoy=args.envoy or bench.envoy, nginx=shutil.which("nginx") or "nginx", wrk=args.wrk
        ).describe()
        header = (
            f"# TLS bench (bench/tls.py)\n\n{time.strftime('%Y-%m-%d')}, {machine}; {versions}. "
            f"{args.rounds} rounds x {args.duration:g} s per proxy, alternating, wrk -t1 -c{CONNECTIONS}; "
            f"medians. Load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after "
            "(above ~1 the machine was shared: compare the ratios, not the absolute figures).\n\n"
        )
        notes = ""
        if RESULTS.exists() and NOTES in RESULTS.read_text():
            notes = "\n" + RESULTS.read_text().split(NOTES, 1)[1].rstrip() + "\n"
        RESULTS.write_text(header + text + "\n" + (f"\n{NOTES}" + notes if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
