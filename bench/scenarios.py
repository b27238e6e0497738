"""The bench scenarios: what load, against which upstream path, with which expected response body.

`LoadKind` is the hook for the scenarios still to come: HTTP/2 (h2load), gRPC and TCP each get a kind, a
load-generator adapter in bench/run.py, and for TCP a tcp listener in bench/mesh.py and a tcp_proxy
listener in bench/envoy_config.py. Until then they are listed in `PLANNED`, so `--scenario` can name them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bench import nginx


class LoadKind(enum.Enum):
    HTTP1_WRK = "http/1.1 (wrk)"
    HTTP2_H2LOAD = "h2c (h2load)"  # planned
    GRPC = "grpc"  # planned
    TCP = "tcp"  # planned


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured workload. `body_size` is the upstream response body the sanity request must see."""

    name: str
    description: str
    load: LoadKind
    path: str
    body_size: int
    connection_close: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "small",
            "HTTP/1.1 keep-alive, 2-byte body",
            LoadKind.HTTP1_WRK,
            nginx.SMALL_PATH,
            len(nginx.SMALL_BODY),
        ),
        Scenario(
            "body-1k",
            "HTTP/1.1 keep-alive, 1 KiB body",
            LoadKind.HTTP1_WRK,
            nginx.body_path("1k.bin"),
            nginx.BODY_FILES["1k.bin"],
        ),
        Scenario(
            "body-64k",
            "HTTP/1.1 keep-alive, 64 KiB body",
            LoadKind.HTTP1_WRK,
            nginx.body_path("64k.bin"),
            nginx.BODY_FILES["64k.bin"],
        ),
        Scenario(
            "new-conn",
            "HTTP/1.1, new connection per request (Connection: close), 2-byte body",
            LoadKind.HTTP1_WRK,
            nginx.SMALL_PATH,
            len(nginx.SMALL_BODY),
            connection_close=True,
        ),
    )
}

DEFAULT_SCENARIO = "small"

PLANNED: dict[str, str] = {
    "h2": "HTTP/2 cleartext via h2load",
    "grpc": "gRPC unary",
    "tcp-small": "TCP, small messages",
    "tcp-bulk": "TCP, one bulk stream",
}


class ScenarioError(Exception):
    """An unknown or not yet implemented scenario was asked for."""


def select(names: list[str]) -> list[Scenario]:
    """Scenarios by name, in registry order; `all` means every implemented one."""
    if "all" in names:
        return list(SCENARIOS.values())
    chosen: list[Scenario] = []
    for name in names:
        if name in PLANNED:
            raise ScenarioError(f"scenario {name!r} ({PLANNED[name]}) is planned but not implemented yet")
        if name not in SCENARIOS:
            known = ", ".join([*SCENARIOS, "all"])
            raise ScenarioError(f"unknown scenario {name!r}; known: {known}")
    for scenario in SCENARIOS.values():
        if scenario.name in names:
            chosen.append(scenario)
    return chosen
