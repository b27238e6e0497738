"""Child processes of the bench (nginx, meshproxy, Envoy): start, wait until ready, stop, always clean up.

Every child runs in its own session (its own process group), so stopping it also stops the worker processes
it forked, and it gets PR_SET_PDEATHSIG=SIGKILL so that it dies with the harness even if the harness itself is
killed without a chance to clean up. `Supervisor` stops every child it started, in reverse order, on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: the child must not dlopen after fork
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ChildError(Exception):
    """A child failed to start, exited early, or never became ready. `log_tail` helps say why."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class ChildState(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"  # ended on its own
    STOPPED = "stopped"  # ended by the supervisor


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """What `wait_ready` polls: GET `path` on 127.0.0.1:`port` with `host`, expecting `status`."""

    port: int
    path: str
    status: int = 200
    host: str | None = None


@dataclass(frozen=True, slots=True)
class TcpProbe:
    """What `wait_ready` polls for a non-HTTP child: a TCP connect to 127.0.0.1:`port`."""

    port: int


def _probe(probe: HttpProbe | TcpProbe) -> str | None:
    """None when the probe answers as expected, else what went wrong (`OSError`s included)."""
    if isinstance(probe, TcpProbe):
        with socket.create_connection(("127.0.0.1", probe.port), timeout=1.0):
            return None
    status, _ = http_get(probe.port, probe.path, host=probe.host, timeout_s=1.0)
    return None if status == probe.status else f"GET {probe.path} answered {status}"


class Child:
    """One started process and its log file (stdout and stderr together)."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.state = ChildState.RUNNING

    @property
    def pid(self) -> int:
        return self.popen.pid

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} {self.state.value} rc={self.popen.returncode}>"

    def alive(self) -> bool:
        if self.state is ChildState.RUNNING and self.popen.poll() is not None:
            self.state = ChildState.EXITED
        return self.state is ChildState.RUNNING

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_ready(self, probe: HttpProbe | TcpProbe, timeout_s: float) -> None:
        """Poll `probe` until it answers as expected; `ChildError` if the child exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if not self.alive():
                raise ChildError(self.name, f"exited with status {self.popen.returncode}", self.log_tail())
            try:
                problem = _probe(probe)
                if problem is None:
                    return
                last = problem
            except OSError as exc:
                last = f"{probe}: {exc}"
            if time.monotonic() > deadline:
                raise ChildError(self.name, f"not ready after {timeout_s:.0f} s ({last})", self.log_tail())
            time.sleep(0.1)

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it is still there after `grace_s`."""
        if self.state is ChildState.STOPPED:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        # The group may hold workers that outlive their parent: always finish with SIGKILL.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        self.state = ChildState.STOPPED

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # the child is its own group leader (start_new_session)


class Supervisor:
    """Starts children and guarantees they are all stopped when it closes (use it as a context manager)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def __repr__(self) -> str:
        running = sum(1 for c in self.children if c.state is ChildState.RUNNING)
        return f"<Supervisor children={len(self.children)} running={running}>"

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def spawn(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Child:
        """Start `argv` with stdout+stderr to `<log_dir>/<name>.log`; `ChildError` if it cannot be started."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # only a prctl call, looked up before the fork
                )
            except OSError as exc:
                raise ChildError(name, f"cannot start {argv[0]}: {exc}") from None
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()


def http_get(port: int, path: str, *, host: str | None = None, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One GET to 127.0.0.1:`port` (optionally with a Host header): status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Host": host} if host is not None else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together so none is handed out twice)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
