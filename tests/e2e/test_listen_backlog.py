"""The listen backlog is Envoy's 4096 on every port the proxy listens on (issue 14, defect 1).

`loop.create_server(sock=...)` listens again with its own backlog (100 by default), which undid the 4096
the socket was created with: bursts of connects then stalled in SYN retransmits. `ss -ltn` prints a
listening socket's backlog as its Send-Q.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, running_proxy
from .resources import front_and_backend, node_arn

BACKEND = "backend.demo.local"
EXPECTED_BACKLOG = min(4096, int(Path("/proc/sys/net/core/somaxconn").read_text()))

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def listen_backlogs(port: int) -> list[int]:
    """The backlog (Send-Q) of every TCP socket listening on `port` (one per worker with SO_REUSEPORT)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def backend(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("backend")


@pytest.mark.parametrize("workers", [1, 2])
def test_every_listening_socket_has_a_backlog_of_4096(
    backend: ColourApp, tmp_path: Path, workers: int
) -> None:
    resources = front_and_backend(BACKEND, "backend", backend.port)
    env = {"ENVOY_CONCURRENCY": str(workers)}
    with running_proxy(resources, node_arn("front"), tmp_path, env=env) as proxy:
        backlogs = {
            name: listen_backlogs(port)
            for name, port in (
                ("ingress", proxy.ingress_port),
                ("egress", proxy.egress_port),
                ("admin", proxy.admin_port),
            )
        }
    assert_backlogs(proxy, backlogs, workers)


def assert_backlogs(proxy: MeshProxy, backlogs: dict[str, list[int]], workers: int) -> None:
    assert len(backlogs["ingress"]) == len(backlogs["egress"]) == workers, backlogs
    assert len(backlogs["admin"]) == 1, backlogs
    for name, values in backlogs.items():
        assert values == [EXPECTED_BACKLOG] * len(values), (name, values, proxy.output_tail())
