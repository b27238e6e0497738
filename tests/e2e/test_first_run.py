"""First run and upgrades (issue 16): `meshproxy --version`, packaging without warnings, scripts/demo
installing only what the demo needs and skipping pip when nothing changed, the demo's "run it yourself" line
working as printed, scripts/setup waiting for a held apt lock, and an admin access log per user and
instance."""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshproxy import __version__

from .harness import MESHPROXY, REPO_ROOT, MeshProxy, clean_environ, free_ports, wait_for
from .resources import mesh, node_arn, virtual_node

DEMO_TIMEOUT_S = 120.0


def test_version() -> None:
    done = subprocess.run(
        [str(MESHPROXY), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert done.stdout == f"meshproxy {__version__}\n"
    assert importlib.metadata.version("meshproxy") == __version__  # one source: pyproject reads __version__


def test_the_package_metadata_builds_without_a_warning(tmp_path: Path) -> None:
    """PEP 639 license expression: setuptools warned about the old `license = {text = ...}` table."""
    script = "import sys, setuptools.build_meta as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
    metadata = (tmp_path / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {__version__}" in metadata


def test_scripts_venv_skips_pip_when_nothing_changed() -> None:
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "venv")], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip skipped" in done.stdout  # the test venv has every extra: a demo asks for none


# ------------------------------------------------------------------------------------------ the demo


@pytest.fixture
def serving_demo() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = subprocess.Popen(
        [str(MESHPROXY), "demo", "--serve", "--requests", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_environ(),
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "/stats/prometheus" in line:
                break
        yield process, lines
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_the_demo_prints_a_run_it_yourself_command_that_works_as_printed() -> None:
    done = subprocess.run(
        [str(MESHPROXY), "demo", "--requests", "20"], capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
        env=clean_environ(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    command = shlex.split(lines[lines.index(next(x for x in lines if x.startswith("Run it yourself"))) + 1])
    assert command == [str(MESHPROXY), "demo", "--serve"]  # absolute: works from any directory
    assert Path(command[0]).is_file() and os.access(command[0], os.X_OK)


def test_the_serving_demo_answers_the_printed_curl_and_stops_on_ctrl_c(
    serving_demo: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, lines = serving_demo
    curl = next((line.strip() for line in lines if line.strip().startswith("curl -s -H")), None)
    assert curl is not None, "\n".join(lines)
    answers = {
        subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=10).stdout
        for _ in range(20)
    }
    assert answers <= {"blue", "green"} and answers, answers
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0


def test_the_demo_on_a_fresh_checkout_installs_only_what_it_needs(tmp_path: Path) -> None:
    """A copy of the repository without a venv: scripts/demo builds one with meshproxy alone, runs the demo,
    and a second run skips pip."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tracked files")
    checkout = tmp_path / "meshproxy"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = checkout / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = clean_environ()
    first = subprocess.run([str(checkout / "scripts" / "demo"), "--requests", "20"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env, check=False)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    python = checkout / ".venv" / "bin" / "python"
    for tool in ("pytest", "moto", "grpc", "boto3", "mypy"):  # the test and bench toolchain stays out
        probe = subprocess.run(
            [str(python), "-c", f"import {tool}"], capture_output=True, timeout=60, check=False
        )
        assert probe.returncode != 0, f"{tool} was installed for the demo"
    second = subprocess.run([str(checkout / "scripts" / "demo"), "--requests", "20"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env, check=False)  # fmt: skip
    assert second.returncode == 0 and "pip skipped" in second.stdout, second.stdout[-2000:]


# ------------------------------------------------------------------------------------------ apt lock


def test_setups_apt_calls_wait_for_a_held_lock(tmp_path: Path) -> None:
    """scripts/apt-wait around a real apt-get, on apt state of its own (the machine's is not touched)."""
    if shutil.which("apt-get") is None:
        pytest.skip("not a Debian machine")
    for directory in ("lists/partial", "empty", "cache/archives/partial"):
        (tmp_path / directory).mkdir(parents=True)
    apt = ["apt-get", "-o", f"Dir::State::Lists={tmp_path / 'lists'}", "-o", "Dir::Etc::sourcelist=/dev/null",
           "-o", f"Dir::Etc::sourceparts={tmp_path / 'empty'}", "-o", f"Dir::Cache={tmp_path / 'cache'}",
           "update", "-qq"]  # fmt: skip
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with open(tmp_path / "lists" / "lock", "w") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)  # what apt takes (fcntl), while another apt runs
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        plain = subprocess.run(apt, capture_output=True, text=True, timeout=60, check=False)
        assert plain.returncode != 0 and "Could not get lock" in plain.stderr  # apt alone fails at once
        threading.Timer(2.0, release.set).start()
        started = time.monotonic()
        wrapper = str(REPO_ROOT / "scripts" / "apt-wait")
        waited = subprocess.run([wrapper, *apt], capture_output=True, text=True, timeout=120, check=False)
    finally:
        release.set()
        holder.join(10)
    assert waited.returncode == 0, waited.stderr
    assert time.monotonic() - started >= 1.5
    assert "apt-wait: the apt lock is held" in waited.stderr
    setup = (REPO_ROOT / "scripts" / "setup").read_text() + (REPO_ROOT / "scripts" / "venv").read_text()
    calls = [line for line in setup.splitlines() if "apt-get " in line and not line.lstrip().startswith("#")]
    assert calls and all(
        "apt-wait" in line or line.strip().startswith("apt-get install") for line in calls
    ), calls


# ------------------------------------------------------------------------------------------ admin access log


def test_the_default_admin_access_log_is_per_user_and_instance(tmp_path: Path) -> None:
    """Two proxies on one host, one as UID 1337, without ENVOY_ADMIN_ACCESS_LOG_FILE: each writes its own
    file, even when App Mesh's /tmp/envoy_admin_access.log belongs to root."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a proxy as UID 1337")
    shared = Path(tempfile.mkdtemp(prefix="meshproxy-admin-log-"))
    shared.chmod(0o755)
    resources = [mesh(), virtual_node("front", 18080)]
    ports = free_ports(2)
    logs = [
        Path(f"/tmp/envoy_admin_access_{uid}_{port}.log") for uid, port in zip((0, 1337), ports, strict=True)
    ]
    for log in logs:
        log.unlink(missing_ok=True)
    app_mesh_default = Path("/tmp/envoy_admin_access.log")
    created = not app_mesh_default.exists()
    if created:  # the case that broke UID 1337 before: App Mesh's default path, written by root earlier
        app_mesh_default.write_text("")
        app_mesh_default.chmod(0o644)
    processes = []
    try:
        for uid, port in zip((0, 1337), ports, strict=True):
            proxy = MeshProxy(
                resources, node_arn("front"), shared / str(uid), env={"ENVOY_ADMIN_ACCESS_LOG_FILE": ""}
            )
            proxy.admin_port = port
            proxy.workdir.chmod(0o777)
            proxy.write_config().chmod(0o644)
            with proxy.stderr_path.open("wb") as err:
                proxy.process = subprocess.Popen(
                    [str(MESHPROXY), "run", "--config", str(proxy.config_path)], env=proxy.environment(),
                    stdout=subprocess.DEVNULL, stderr=err, user=uid, group=uid, start_new_session=True,
                )  # fmt: skip
            processes.append(proxy)
            proxy.wait_ready()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/server_info?from={uid}", timeout=5
            ) as reply:
                assert reply.status == 200
        for uid, log in zip((0, 1337), logs, strict=True):
            assert wait_for(lambda log=log: log.exists() and "server_info" in log.read_text(), 5.0), log
            assert f"from={uid}" in log.read_text() and log.stat().st_uid == uid
            assert "cannot be opened" not in processes[(0, 1337).index(uid)].stderr_text()
    finally:
        for proxy in processes:
            proxy.stop()
        for log in logs:
            log.unlink(missing_ok=True)
        if created:
            app_mesh_default.unlink(missing_ok=True)
        shutil.rmtree(shared, ignore_errors=True)
