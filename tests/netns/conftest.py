"""Network-namespace fixtures: a "pod" namespace joined by a veth pair to a "peer" (client / upstream).

    pod  10.250.1.1/24, fd00:250:1::1/64  <-- veth -->  peer  10.250.1.2/24 + 10.250.1.3/24, fd00:250:1::2/64

The pod routes everything else (e.g. 10.250.9.9) to the peer, so a connection to an address that exists
nowhere still leaves the pod and meets the OUTPUT chain. All addresses live only inside namespaces created
here, and the namespaces (with the veth pair and every process started in them) are removed in teardown,
also when the test fails.

Every test in this directory is skipped, with the reason, when not running as root or when `ip netns`,
iptables or setpriv is unavailable.

Processes that must run as UID 1337 (the proxy's identity) use the repo's .venv Python, which is built on
/usr/bin/python3 and readable by any user; the repo root is computed from this file's path.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
# The `meshproxy` command, as `python -m meshproxy.cli` run from the repo root (every command here runs with
# cwd=REPO_ROOT), so it does not depend on how the venv's editable install resolves the package.
MESHPROXY = [str(VENV_PYTHON), "-m", "meshproxy.cli"]
PROBE = Path(__file__).resolve().parent / "probe.py"

PROXY_UID = 1337  # the ignored UID: the proxy's own traffic is not redirected
APP_UID = 1000  # any other identity: the application

POD_V4, PEER_V4, PEER_V4_ALT = "10.250.1.1", "10.250.1.2", "10.250.1.3"
POD_V6, PEER_V6 = "fd00:250:1::1", "fd00:250:1::2"
NOWHERE_V4 = "10.250.9.9"  # routed out of the pod, answered by nobody

COMMAND_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

# Variables of the interception / proxy contract are never inherited from the test runner.
_SCRUBBED_PREFIXES = (
    "APPMESH_",
    "ENVOY_",
    "MESHPROXY_",
    "LISTENER_DRAIN",
    "ENABLE_ENVOY",
    "XRAY_",
    "STATSD_",
)
_counter = itertools.count(1)


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without mesh / proxy variables, plus `extra`; PATH leads with the venv's bin."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and not k.lower().endswith("_proxy")
    }
    env["PATH"] = f"{VENV_PYTHON.parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def netns_unavailable_reason() -> str | None:
    """Why the netns tier cannot run here, or None."""
    if os.geteuid() != 0:
        return "netns tests need root (network namespaces and iptables); run the suite as root"
    for tool in ("ip", "iptables-save", "iptables-restore", "setpriv"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"netns tests need `{tool}`, which is not installed"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` is unavailable here: {exc}"
    if not VENV_PYTHON.exists():
        return f"{VENV_PYTHON} is missing: run scripts/setup"
    return None


@pytest.fixture(scope="session", autouse=True)
def _require_netns() -> None:
    # Session scope: it runs before any module-scoped namespace fixture, so those are skipped too.
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def normalise_save(text: str) -> str:
    """iptables-save output without its timestamp comments and with packet counters zeroed."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in lines)


@dataclass
class Netns:
    """One network namespace we created. Runs commands in it, optionally as another UID/GID."""

    name: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def __repr__(self) -> str:
        live = sum(1 for p in self.processes if p.poll() is None)
        return f"<Netns {self.name} processes={live}>"

    def argv(self, command: Sequence[str], uid: int | None = None, gid: int | None = None) -> list[str]:
        """`ip netns exec NAME [setpriv --reuid U --regid G --clear-groups --] command`."""
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            group = uid if gid is None else gid
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={group}", "--clear-groups", "--"]
        return prefix + [str(c) for c in command]

    def run(
        self,
        command: Sequence[str],
        *,
        uid: int | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT_S,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(command, uid),
            input=stdin,
            env=clean_environ(env),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} in {self.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def spawn(
        self,
        command: Sequence[str],
        *,
        uid: int | None = None,
        env: Mapping[str, str] | None = None,
        output: Any = None,
    ) -> subprocess.Popen[str]:
        """Start a long-running process in the namespace; it is stopped in teardown.

        stdout and stderr are pipes, or both go to `output` (an open file) for chatty processes.
        """
        proc = subprocess.Popen(
            self.argv(command, uid),
            env=clean_environ(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if output is None else output,
            stderr=subprocess.PIPE if output is None else subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def python(self, *args: str) -> list[str]:
        return [str(VENV_PYTHON), *args]

    def nat_save(self, family: str = "ipv4") -> str:
        tool = "iptables-save" if family == "ipv4" else "ip6tables-save"
        return self.run([tool, "-t", "nat"]).stdout

    def full_save(self) -> str:
        return self.run(["iptables-save"]).stdout + self.run(["ip6tables-save"]).stdout

    def stop_processes(self) -> None:
        for proc in self.processes:
            stop_process(proc)
        self.processes.clear()


def stop_process(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL, each bounded; only this process (its own session, started by us)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = READY_TIMEOUT_S) -> str:
    """Read the process's stdout until a line starting with `prefix` (bounded in time)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
        seen.append(line)
    err = ""
    if proc.poll() is not None and proc.stderr is not None:
        err = proc.stderr.read()
    raise AssertionError(f"no {prefix!r} line within {timeout:g} s; stdout={seen!r} stderr={err!r}")


@dataclass
class PodPair:
    """A pod namespace and its peer (the outside world: upstream servers and inbound clients)."""

    pod: Netns
    peer: Netns
    veth_pod: str
    veth_peer: str

    def __repr__(self) -> str:
        return f"<PodPair pod={self.pod.name} peer={self.peer.name}>"

    def start_probe(self, ns: Netns, *args: str, uid: int | None = None) -> subprocess.Popen[str]:
        """Start `probe.py ARGS` in `ns` (as `uid`); returns once it prints READY."""
        proc = ns.spawn(ns.python(str(PROBE), *args), uid=uid)
        wait_for_line(proc, "READY")
        return proc

    def serve(
        self, ns: Netns, name: str, ports: Sequence[int], *, uid: int | None = None, host: str = "0.0.0.0"
    ) -> None:
        """The probe's one-JSON-line TCP server in `ns`, on `host` at each port."""
        self.start_probe(ns, "serve", "--name", name, "--host", host, *[str(p) for p in ports], uid=uid)

    def connect(
        self, ns: Netns, host: str, port: int, *, uid: int | None = None, send: str = ""
    ) -> dict[str, Any]:
        """Connect from `ns` (as `uid`) and return the JSON the server wrote (or {"error": ...})."""
        args = ["connect", host, str(port)] + (["--send", send] if send else [])
        done = ns.run(ns.python(str(PROBE), *args), uid=uid, check=False)
        if not done.stdout.strip():
            raise AssertionError(f"probe connect printed nothing (exit {done.returncode}): {done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


@contextlib.contextmanager
def pod_pair_context(ipv6: bool = True) -> Iterator[PodPair]:
    """Create the two namespaces and the veth pair; always delete them (and stop their processes) after."""
    n = next(_counter)
    tag = f"{os.getpid() % 100000}x{n}"
    pod, peer = Netns(f"mpx-pod-{tag}"), Netns(f"mpx-peer-{tag}")
    veth_pod, veth_peer = f"mpp{tag}"[:15], f"mpu{tag}"[:15]
    created: list[Netns] = []
    try:
        for ns in (pod, peer):
            _ip("netns", "add", ns.name)
            created.append(ns)
        _ip(
            "link",
            "add",
            veth_pod,
            "netns",
            pod.name,
            "type",
            "veth",
            "peer",
            "name",
            veth_peer,
            "netns",
            peer.name,
        )
        for ns, dev, addresses in (
            (pod, veth_pod, [f"{POD_V4}/24"]),
            (peer, veth_peer, [f"{PEER_V4}/24", f"{PEER_V4_ALT}/24"]),
        ):
            ns.run(["ip", "link", "set", "lo", "up"])
            for address in addresses:
                ns.run(["ip", "addr", "add", address, "dev", dev])
            if ipv6:
                v6 = POD_V6 if ns is pod else PEER_V6
                ns.run(["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            ns.run(["ip", "link", "set", dev, "up"])
        pod.run(["ip", "route", "add", "default", "via", PEER_V4])
        if ipv6:
            pod.run(["ip", "-6", "route", "add", "default", "via", PEER_V6])
        yield PodPair(pod, peer, veth_pod, veth_peer)
    finally:
        for ns in created:
            ns.stop_processes()
        for ns in created:
            subprocess.run(
                ["ip", "netns", "del", ns.name], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
            )


@pytest.fixture
def pod_pair() -> Iterator[PodPair]:
    """A fresh pod/peer namespace pair for one test."""
    with pod_pair_context() as pair:
        yield pair


def meshproxy_iptables(
    ns: Netns, command: str, env: Mapping[str, str], *args: str, uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`meshproxy iptables COMMAND` inside `ns` with exactly the given settings."""
    return ns.run([*MESHPROXY, "iptables", command, *args], env=env, uid=uid, check=False)
