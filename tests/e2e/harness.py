"""The e2e harness: `meshproxy run` as a subprocess on free loopback ports, clients, and stats readers.

A test module builds its mesh (tests/e2e/resources.py), starts its upstream apps on an `AppLoop`
(tests/e2e/apps.py) and shares one proxy across its tests where the config allows. Every wait is bounded; the
proxy is always stopped (POST /quitquitquit, then SIGTERM, then SIGKILL of its process group, each bounded).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .apps import APP_NAME_HEADER
from .resources import Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
MESHPROXY = REPO_ROOT / ".venv" / "bin" / "meshproxy"

# Both HTTP/1.1 parsers the proxy ships (DESIGN decision 4); core routing tests run on each.
PARSERS = ("httptools", "h11")

READY_TIMEOUT_S = 15.0
QUIT_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0

# Variables of the App Mesh / Envoy / meshproxy contract, and proxies, are never inherited from the test
# runner's environment: each proxy gets exactly what its test sets.
_SCRUBBED_PREFIXES = (
    "APPMESH_",
    "ENVOY_",
    "MESHPROXY_",
    "LISTENER_DRAIN",
    "ENABLE_ENVOY",
    "XRAY_",
    "AWS_XRAY",
    "STATSD_",
    "OTEL_",
    "APPNET_",
)
# ... except the one that picks the form under test (scripts/test sets it per form): scrubbed, every proxy the
# e2e and netns tiers started ran compiled whenever a build was present, in the pure run too.
_INHERITED = frozenset({"MESHPROXY_PURE"})


def clean_environ() -> dict[str, str]:
    """os.environ without any mesh, Envoy or HTTP-proxy variables (the form under test is kept)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in _INHERITED or (not k.startswith(_SCRUBBED_PREFIXES) and not k.lower().endswith("_proxy"))
    }


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (all held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP response as a client saw it. Header names are lower-cased; repeats joined by ", "."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict), self.body[:200]
        return document

    @property
    def app(self) -> str | None:
        """Which upstream app answered (None for a local reply)."""
        return self.headers.get(APP_NAME_HEADER)

    def __repr__(self) -> str:
        return f"<Reply {self.status} app={self.app} headers={self.headers} body={self.body[:300]!r}>"


def _reply_of(response: http.client.HTTPResponse) -> Reply:
    headers: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Reply(response.status, headers, response.read())


class Http1Client:
    """One keep-alive http.client connection to a proxy listener; `send` reuses it."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def send(
        self,
        method: str,
        target: str,
        *,
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if host is not None:
            all_headers["Host"] = host
        self.conn.request(method, target, body=body, headers=all_headers)
        return _reply_of(self.conn.getresponse())

    def get(self, target: str, *, host: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        return self.send("GET", target, host=host, headers=headers)

    @property
    def sock(self) -> socket.socket | None:
        sock: socket.socket | None = self.conn.sock
        return sock

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Http1Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_request(
    port: int,
    method: str,
    target: str,
    *,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a fresh connection, closed afterwards."""
    with Http1Client(port, timeout=timeout) as client:
        return client.send(method, target, host=host, headers=headers, body=body)


def recv_until_closed(
    sock: socket.socket, *, timeout: float = 5.0, limit: int = 1 << 20
) -> tuple[bytes, bool]:
    """Read until the peer closes (or `timeout` / `limit`); returns (bytes, closed_by_peer)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(data), False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; returns its final value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def parse_stats(text: str) -> dict[str, int]:
    """`/stats` text -> {name: value} for the integer lines (histogram summaries are skipped)."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        value = value.strip()
        if sep and value.lstrip("-").isdigit():
            stats[name.strip()] = int(value)
    return stats


def grew(before: Mapping[str, int], after: Mapping[str, int], name: str) -> int:
    """How much the counter `name` grew between two /stats reads (an absent stat counts as 0)."""
    return after.get(name, 0) - before.get(name, 0)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc (the proxy may run worker processes)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                queue.extend(int(c) for c in children)
    return found


def proc_status_kib(pid: int, field_name: str) -> int:
    """A `Vm*` line of /proc/<pid>/status, in KiB (0 if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return 0


@dataclass
class MeshProxy:
    """One `meshproxy run --config FILE` subprocess for the node or gateway named by `arn`.

    Ports are chosen free on 127.0.0.1; stdout and stderr go to files in `workdir` (never pipes, which would
    block a chatty proxy).
    """

    resources: Sequence[Resource]
    arn: str
    workdir: Path
    parser: str | None = None
    drain_wait_s: int = 5
    env: Mapping[str, str] = field(default_factory=dict)
    nofile: int | None = None  # RLIMIT_NOFILE for the proxy (run under prlimit)
    ingress_port: int = 0
    egress_port: int = 0
    admin_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.ingress_port, self.egress_port, self.admin_port = free_ports(3)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mesh.json"
        self.stdout_path = self.workdir / "proxy.stdout"
        self.stderr_path = self.workdir / "proxy.stderr"

    def __repr__(self) -> str:
        state = "not started" if self.process is None else f"pid={self.process.pid} rc={self.process.poll()}"
        return (
            f"<MeshProxy {self.arn} {state} ingress={self.ingress_port} egress={self.egress_port} "
            f"admin={self.admin_port} parser={self.parser}>"
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def environment(self) -> dict[str, str]:
        env = clean_environ()
        env.update(
            {
                "APPMESH_RESOURCE_ARN": self.arn,
                "APPMESH_ENVOY_INGRESS_PORT": str(self.ingress_port),
                "APPMESH_ENVOY_EGRESS_PORT": str(self.egress_port),
                "ENVOY_ADMIN_ACCESS_PORT": str(self.admin_port),
                "ENVOY_ADMIN_ACCESS_LOG_FILE": str(self.workdir / "admin_access.log"),
                "LISTENER_DRAIN_WAIT_TIME_S": str(self.drain_wait_s),
                "MESHPROXY_LISTEN_ADDRESS": "127.0.0.1",
            }
        )
        if self.parser is not None:
            env["MESHPROXY_HTTP1_PARSER"] = self.parser
        env.update(self.env)
        return env

    def write_config(self) -> Path:
        self.config_path.write_text(json.dumps(list(self.resources), indent=1))
        return self.config_path

    def spawn(self) -> subprocess.Popen[bytes]:
        """Write the config and start the process (no readiness wait)."""
        self.write_config()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # Own session: teardown can SIGKILL the proxy and any worker it forked, and nothing else.
            limit = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] if self.nofile else []
            self.process = subprocess.Popen(
                [*limit, str(MESHPROXY), "run", "--config", str(self.config_path)],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self.process

    def start(self) -> MeshProxy:
        """Spawn, then wait (bounded) for GET /ready -> 200; fail the test with the proxy's stderr if not."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            rc = self.process.poll()
            if rc is not None:
                pytest.fail(f"meshproxy exited with {rc} before it was ready\n{self.output_tail()}")
            try:
                reply = self.admin("/ready", timeout=1.0)
                if reply.status == 200:
                    return
                last = f"{reply.status} {reply.body!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        pytest.fail(f"meshproxy not ready after {timeout} s (last /ready: {last})\n{self.output_tail()}")

    def output_tail(self, chars: int = 6000) -> str:
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text:
                    parts.append(f"--- proxy {label} (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(parts) or "--- proxy wrote nothing ---"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def admin(self, path: str, *, method: str = "GET", timeout: float = 5.0) -> Reply:
        return http_request(self.admin_port, method, path, timeout=timeout)

    def stats(self) -> dict[str, int]:
        reply = self.admin("/stats")
        assert reply.status == 200, reply
        return parse_stats(reply.body.decode())

    def egress(
        self,
        host: str,
        target: str = "/",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """One request to the egress listener with `Host: host`, on a fresh connection."""
        return http_request(
            self.egress_port, method, target, host=host, headers=headers, body=body, timeout=timeout
        )

    def wait_exit(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """Stop the proxy, bounded: POST /quitquitquit, then SIGTERM (drain), then SIGKILL the group."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.admin("/quitquitquit", method="POST", timeout=1.0)
            if self.wait_exit(QUIT_TIMEOUT_S) is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                if self.wait_exit(self.drain_wait_s + KILL_TIMEOUT_S) is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.wait_exit(KILL_TIMEOUT_S)
        # Workers left behind by a crashed parent share its process group; it is ours to clean up.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


@contextlib.contextmanager
def running_proxy(
    resources: Sequence[Resource],
    arn: str,
    workdir: Path,
    *,
    parser: str | None = None,
    drain_wait_s: int = 5,
    env: Mapping[str, str] | None = None,
    nofile: int | None = None,
) -> Iterator[MeshProxy]:
    """A started, ready proxy; always stopped on exit."""
    proxy = MeshProxy(
        resources, arn, workdir, parser=parser, drain_wait_s=drain_wait_s, env=dict(env or {}), nofile=nofile
    )
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def run_meshproxy(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived meshproxy command (validate, or a run expected to fail), bounded by `timeout`."""
    return subprocess.run(
        [str(MESHPROXY), *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
