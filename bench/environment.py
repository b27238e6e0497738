"""Where and with what a bench ran: machine (cores, CPU model, kernel) and tool versions."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Machine:
    nproc: int
    cpu_model: str
    kernel: str

    def describe(self) -> str:
        return f"{self.nproc} x {self.cpu_model}, Linux {self.kernel}"


@dataclass(frozen=True, slots=True)
class Versions:
    python: str
    envoy: str | None
    nginx: str
    wrk: str
    meshproxy: str
    h2load: str | None = None

    def describe(self) -> str:
        envoy = self.envoy if self.envoy is not None else "not installed"
        h2load = f", h2load {self.h2load}" if self.h2load is not None else ""
        return (
            f"Python {self.python}, meshproxy {self.meshproxy}, Envoy {envoy}, "
            f"nginx {self.nginx}, wrk {self.wrk}{h2load}"
        )


def parse_cpu_model(cpuinfo: str) -> str:
    """The first `model name` of /proc/cpuinfo (x86), else `Hardware`/`CPU part` (arm), else 'unknown'."""
    for key in ("model name", "Hardware", "CPU part"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return "unknown"


def parse_envoy_version(text: str) -> str | None:
    """`envoy --version` prints `envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`."""
    match = re.search(r"version:\s*\S*?/(\d+\.\d+\.\d+\S*?)/", text)
    return match.group(1) if match else None


def parse_nginx_version(text: str) -> str | None:
    match = re.search(r"nginx/(\S+)", text)
    return match.group(1) if match else None


def parse_h2load_version(text: str) -> str | None:
    """`h2load --version` prints `h2load nghttp2/1.52.0`."""
    match = re.search(r"nghttp2/(\S+)", text)
    return match.group(1) if match else None


def parse_wrk_version(text: str) -> str | None:
    match = re.search(r"^wrk (?:\S+/)?(\d[\w.+~-]*)", text, re.MULTILINE)
    return match.group(1) if match else None


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def machine() -> Machine:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return Machine(nproc=os.cpu_count() or 0, cpu_model=parse_cpu_model(cpuinfo), kernel=platform.release())


def meshproxy_version() -> str:
    """Package version plus the git commit of the tree, marked `-dirty` when meshproxy/ has local changes."""
    try:
        version = metadata.version("meshproxy")
    except metadata.PackageNotFoundError:
        version = "?"
    sha = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    if not re.fullmatch(r"[0-9a-f]{4,40}", sha):
        return version
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--", "meshproxy"]).strip()
    return f"{version} (git {sha}{'-dirty' if dirty else ''}, {installed_form()} as installed)"


def installed_form() -> str:
    """`compiled` when the install carries a mypyc build (scripts/build), else `pure` (`meshproxy-pure` in
    --proxies runs the sources of a compiled install)."""
    package = REPO / "meshproxy"
    return "compiled" if list(package.glob("_native__mypyc*.so")) else "pure"


def versions(*, envoy: str | None, nginx: str, wrk: str, h2load: str | None = None) -> Versions:
    return Versions(
        python=platform.python_version(),
        envoy=parse_envoy_version(_output([envoy, "--version"])) if envoy is not None else None,
        nginx=parse_nginx_version(_output([nginx, "-v"])) or "?",
        wrk=parse_wrk_version(_output([wrk, "-v"])) or "?",
        meshproxy=meshproxy_version(),
        h2load=parse_h2load_version(_output([h2load, "--version"])) if h2load is not None else None,
    )
