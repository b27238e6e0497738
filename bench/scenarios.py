"""The bench scenarios: what load, against which upstream path, with which expected response body.

Each scenario names its load generator (`LoadKind`), the bench mesh variant both proxies are configured
from (`mesh.MeshProtocol`), and what its figures count (`Figure`): HTTP requests, TCP messages, or bytes of
one bulk stream. bench/run.py has one adapter per load kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bench import nginx
from bench.mesh import MeshProtocol


class LoadKind(enum.Enum):
    HTTP1_WRK = "http/1.1 (wrk)"
    HTTP2_H2LOAD = "h2c (h2load)"
    GRPC_H2LOAD = "grpc unary (h2load)"
    TCP_PINGPONG = "tcp request/response (bench.tcp_load)"
    TCP_BULK = "tcp bulk stream (bench.tcp_load)"
    IDLE = "idle keep-alive connections (bench.idle)"


class Figure(enum.Enum):
    """What throughput and CPU are counted per: requests, messages, or bulk bytes."""

    REQUESTS = "req"
    MESSAGES = "msg"
    BYTES = "GB"
    MEMORY = "connection"  # idle: resident memory, no load


H2_CLIENTS = 4  # h2load -c: connections
H2_STREAMS = 10  # h2load -m: concurrent streams per connection
TCP_MESSAGE_SIZE = 64
TCP_BULK_BYTES = 2 << 30  # one stream of 2 GiB, or as much as the duration allows


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured workload. `body_size` is the upstream response body the sanity request must see."""

    name: str
    description: str
    load: LoadKind
    path: str
    body_size: int
    connection_close: bool = False
    protocol: MeshProtocol = MeshProtocol.HTTP
    figure: Figure = Figure.REQUESTS

    @property
    def is_http(self) -> bool:
        return self.protocol is not MeshProtocol.TCP

    @property
    def uses_h2load(self) -> bool:
        return self.load in (LoadKind.HTTP2_H2LOAD, LoadKind.GRPC_H2LOAD)


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
        Scenario(
            "new-conn-64k",
            "HTTP/1.1, new connection per request (Connection: close), 64 KiB body",
            LoadKind.HTTP1_WRK,
            nginx.body_path("64k.bin"),
            nginx.BODY_FILES["64k.bin"],
            connection_close=True,
        ),
        Scenario(
            "h2",
            f"h2c multiplexed ({H2_CLIENTS} connections x {H2_STREAMS} streams), HTTP/1.1 to nginx, 2-byte "
            "body",
            LoadKind.HTTP2_H2LOAD,
            nginx.SMALL_PATH,
            len(nginx.SMALL_BODY),
        ),
        Scenario(
            "h2-h2",
            f"h2c multiplexed ({H2_CLIENTS} x {H2_STREAMS}), h2c to nginx (http2 node and route), "
            "2-byte body",
            LoadKind.HTTP2_H2LOAD,
            nginx.SMALL_PATH,
            len(nginx.SMALL_BODY),
            protocol=MeshProtocol.HTTP2,
        ),
        Scenario(
            "grpc",
            f"gRPC unary over h2c ({H2_CLIENTS} x {H2_STREAMS}), grpc node and grpcRoute, nginx h2c answer",
            LoadKind.GRPC_H2LOAD,
            nginx.GRPC_PATH,
            len(nginx.GRPC_RESPONSE),
            protocol=MeshProtocol.GRPC,
        ),
        Scenario(
            "tcp-small",
            f"TCP ingress (tcp listener), {TCP_MESSAGE_SIZE}-byte request/response messages to an echo app",
            LoadKind.TCP_PINGPONG,
            "",
            TCP_MESSAGE_SIZE,
            protocol=MeshProtocol.TCP,
            figure=Figure.MESSAGES,
        ),
        Scenario(
            "tcp-bulk",
            f"TCP ingress (tcp listener), one stream of up to {TCP_BULK_BYTES >> 30} GiB to a sink app",
            LoadKind.TCP_BULK,
            "",
            0,
            protocol=MeshProtocol.TCP,
            figure=Figure.BYTES,
        ),
        Scenario(
            "idle",
            "resident memory idle, then holding 1000 idle keep-alive HTTP/1.1 connections (one request each)",
            LoadKind.IDLE,
            nginx.SMALL_PATH,
            len(nginx.SMALL_BODY),
            figure=Figure.MEMORY,
        ),
    )
}

DEFAULT_SCENARIO = "small"


class ScenarioError(Exception):
    """An unknown scenario was asked for."""


def select(names: list[str]) -> list[Scenario]:
    """Scenarios by name, in registry order; `all` means every one."""
    if "all" in names:
        return list(SCENARIOS.values())
    for name in names:
        if name not in SCENARIOS:
            known = ", ".join([*SCENARIOS, "all"])
            raise ScenarioError(f"unknown scenario {name!r}; known: {known}")
    return [scenario for scenario in SCENARIOS.values() if scenario.name in names]
