"""Hostile and exhausting clients against a real proxy (issue 14): slow request heads, and a client that
takes every file descriptor the proxy may have.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, recv_until_closed, running_proxy
from .resources import front_and_backend, node_arn

BACKEND = "backend.demo.local"
HEADERS_TIMEOUT_S = 2
SLOW_CLIENTS = 50


@pytest.fixture(scope="module")
def backend(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("backend")


def mesh_resources(backend: ColourApp, hostname: str = "127.0.0.1") -> list[dict[str, object]]:
    return front_and_backend(BACKEND, "backend", backend.port, hostname=hostname)


@pytest.fixture
def proxy(backend: ColourApp, tmp_path: Path) -> Iterator[MeshProxy]:
    env = {"MESHPROXY_REQUEST_HEADERS_TIMEOUT_S": str(HEADERS_TIMEOUT_S)}
    with running_proxy(mesh_resources(backend), node_arn("front"), tmp_path, env=env) as started:
        yield started


def test_slow_heads_get_408_and_are_closed(proxy: MeshProxy) -> None:
    """Clients sending one header byte every 0.3 s (slowloris) are answered 408 once their head has been
    arriving for the request-headers timeout, and the connection closes; before, they were held for ever."""
    clients = [
        socket.create_connection(("127.0.0.1", proxy.egress_port), timeout=5) for _ in range(SLOW_CLIENTS)
    ]
    started = time.monotonic()
    try:
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: " + BACKEND.encode() + b"\r\n")
        while time.monotonic() - started < HEADERS_TIMEOUT_S + 3.0:
            for client in clients:
                with contextlib.suppress(OSError):  # closed already: its 408 is waiting to be read
                    client.sendall(b"X")
            time.sleep(0.3)
            stats = proxy.stats()
            if stats.get("http.egress.downstream_rq_header_timeout") == SLOW_CLIENTS:
                break
        answers = [recv_until_closed(client, timeout=5.0) for client in clients]
    finally:
        for client in clients:
            client.close()
    assert stats["http.egress.downstream_rq_header_timeout"] == SLOW_CLIENTS, stats
    for data, closed in answers:
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
        assert data.endswith(b"request header timeout") and closed
    # an honest client is served meanwhile
    assert proxy.egress(BACKEND, "/").status == 200


# --- out of file descriptors --------------------------------------------------------------------------------

NOFILE = 256
CLIENTS = 300  # more connections than the proxy may have descriptors
RELEASED = 100


def partial_head(i: int) -> bytes:
    return f"GET /held/{i} HTTP/1.1\r\nHost: {BACKEND}\r\n".encode()


def test_out_of_descriptors_accept_waits_and_admin_and_discovery_keep_working(
    backend: ColourApp, tmp_path: Path
) -> None:
    """300 clients against a proxy allowed 256 descriptors. The proxy stops accepting a reserve short of
    the limit: the rest wait in the listen backlog (not reset), the admin port answers, DNS discovery of
    the backend (`localhost`, looked up again every 5 s) keeps working. When 100 clients leave, the waiting
    ones are accepted and every remaining client is served. The episode is logged once, not every 5 s."""
    resources = mesh_resources(backend, hostname="localhost")
    with running_proxy(resources, node_arn("front"), tmp_path, nofile=NOFILE) as proxy:
        clients = []
        try:
            for i in range(CLIENTS):
                client = socket.create_connection(("127.0.0.1", proxy.egress_port), timeout=10)
                client.sendall(partial_head(i))
                clients.append(client)
            time.sleep(0.5)
            stats = proxy.stats()
            accepted = stats[f"listener.127.0.0.1_{proxy.egress_port}.downstream_cx_total"]
            time.sleep(6.0)  # one more DNS lookup of the backend while the clients hold on
            ready = proxy.admin("/ready").status
            for client in clients[:RELEASED]:
                client.close()
            answers = []
            for client in clients[RELEASED:]:
                client.sendall(b"\r\n")
                answers.append(recv_response_head(client))
            after = proxy.egress(BACKEND, "/after", timeout=10)
        finally:
            for client in clients:
                client.close()
        log = proxy.stderr_text()
    assert accepted < CLIENTS - 20, accepted  # accepting paused short of the limit
    assert ready == 200
    assert after.status == 200, after
    assert answers == [b"HTTP/1.1 200 OK"] * (CLIENTS - RELEASED), set(answers)
    assert log.count("out of file descriptors") == 1, log[-3000:]
    assert log.count("file descriptors available again") == 1, log[-3000:]
    assert "discovery failed" not in log and "Too many open files" not in log, log[-3000:]


def recv_response_head(client: socket.socket) -> bytes:
    """The status line of the response on `client` (or what came before it closed)."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in data and (chunk := client.recv(4096)):
            data += chunk
    return data.split(b"\r\n", 1)[0]
