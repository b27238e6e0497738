"""The `idle` scenario: what a proxy costs in memory while it waits (issue 15: idle RSS per worker and per
idle connection).

After the proxy answered its sanity request: the resident set of its whole process tree (VmRSS, summed),
divided by the worker count, is the idle RSS per worker. Then `IDLE_CONNECTIONS` keep-alive connections are
opened one after the other, each makes one request and reads the whole answer (so each is a real HTTP
connection the proxy holds, with its codec, as an application's connection pool would leave it), and
stays open; the growth of the resident set, divided by their number, is the memory per idle connection.
Blocking sockets with timeouts: every step is bounded.
"""

from __future__ import annotations

import resource
import socket
import time
from dataclasses import dataclass

from bench import procstat

IDLE_CONNECTIONS = 1000
SETTLE_S = 1.0  # let the proxy finish what the last request started before its memory is read
TIMEOUT_S = 5.0


class IdleError(Exception):
    """A connection could not be opened or did not get its answer."""


@dataclass(frozen=True, slots=True)
class IdleMemory:
    idle_rss_kib: int  # the whole tree, before the connections
    with_connections_kib: int
    connections: int

    @property
    def bytes_per_connection(self) -> float:
        return max(0, self.with_connections_kib - self.idle_rss_kib) * 1024 / self.connections


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS (resident now) over `root` and its live descendants, in KiB."""
    stats = procstat.all_stats()
    total = 0
    for pid in procstat.descendants(root, stats):
        try:
            text = (procstat.PROC / str(pid) / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += procstat.parse_status_kib(text, "VmRSS")
    return total


def _one_request(sock: socket.socket, host: str, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            raise IdleError("the proxy closed a connection")
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise IdleError("the proxy closed a connection mid-answer")
        body += data
    if not head.startswith(b"HTTP/1.1 200"):
        raise IdleError(f"answer {head[:40]!r}")


def measure(root: int, port: int, host: str, path: str, connections: int = IDLE_CONNECTIONS) -> IdleMemory:
    """The proxy (process tree `root`, HTTP on `port`) idle, then holding `connections` idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    time.sleep(SETTLE_S)
    idle = tree_rss_kib(root)
    held: list[socket.socket] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
            held.append(sock)
            _one_request(sock, host, path)
        time.sleep(SETTLE_S)
        loaded = tree_rss_kib(root)
    except OSError as exc:
        raise IdleError(f"after {len(held)} connections: {exc}") from None
    finally:
        for sock in held:
            sock.close()
    return IdleMemory(idle, loaded, connections)
