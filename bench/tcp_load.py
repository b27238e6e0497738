"""The TCP load generator (`python -m bench.tcp_load`), and the parse of its result line.

Two loads, each bounded by a count and by time, on 127.0.0.1 only:

- `pingpong`: C connections, each sending one `--size`-byte message, waiting for all of it to come back, then
  sending the next, until `--duration` seconds have passed or `--max-messages` messages are done. uvloop and
  asyncio Protocols: the per-message cost of the client stays near the proxy's. Latency is each message's
  round trip (perf_counter_ns).
- `bulk`: one connection streaming `--bytes` (or until `--duration`) in 1 MiB writes from one reused buffer
  to the sink (bench/tcp_upstream.py), then a half-close; the sink answers with the count it received. The
  figure is that count over the time from the first write to the answer.

The result is one line: `BENCH_TCP messages=... duration_us=... bytes=... errors=... p50=... ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import cast

import uvloop

from bench.load import LoadResult, percentile
from bench.tcp_upstream import SINK_REPLY

RESULT_MARK = "BENCH_TCP"
_FIELDS = ("messages", "duration_us", "bytes", "errors", "p50", "p90", "p99", "p999", "mean", "max")
_LINE = re.compile(RESULT_MARK + r" " + r" ".join(rf"{name}=(?P<{name}>[0-9.]+)" for name in _FIELDS))
BULK_CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 10.0  # after the half-close, the sink's count must come back within this long


class TcpLoadError(Exception):
    """The TCP load client failed or printed no result line."""


def result_line(
    *, messages: int, duration_s: float, nbytes: int, errors: int, latencies_us: Sequence[float]
) -> str:
    """The machine-readable result line; `latencies_us` must be sorted."""
    mean = sum(latencies_us) / len(latencies_us) if latencies_us else 0.0
    figures = {
        "messages": str(messages),
        "duration_us": str(round(duration_s * 1e6)),
        "bytes": str(nbytes),
        "errors": str(errors),
        "p50": f"{percentile(latencies_us, 50):.1f}",
        "p90": f"{percentile(latencies_us, 90):.1f}",
        "p99": f"{percentile(latencies_us, 99):.1f}",
        "p999": f"{percentile(latencies_us, 99.9):.1f}",
        "mean": f"{mean:.1f}",
        "max": f"{latencies_us[-1] if latencies_us else 0.0:.1f}",
    }
    return RESULT_MARK + " " + " ".join(f"{name}={figures[name]}" for name in _FIELDS)


def parse_output(stdout: str) -> LoadResult:
    match = _LINE.search(stdout)
    if match is None:
        tail = " | ".join(stdout.strip().splitlines()[-3:]) or "(empty)"
        raise TcpLoadError(f"no {RESULT_MARK} line in tcp_load output: {tail}")
    v = {name: float(match.group(name)) for name in _FIELDS}
    return LoadResult(
        requests=int(v["messages"]),
        duration_s=v["duration_us"] / 1e6,
        bytes=int(v["bytes"]),
        socket_errors=int(v["errors"]),
        status_errors=0,
        timeouts=0,
        p50_us=v["p50"],
        p90_us=v["p90"],
        p99_us=v["p99"],
        p999_us=v["p999"],
        mean_us=v["mean"],
        max_us=v["max"],
    )


# pingpong


class PingPong(asyncio.Protocol):
    """One connection of the request/response load: one message in flight at a time."""

    __slots__ = ("done", "expected", "load", "received", "sent_at", "transport")

    def __init__(self, load: PingPongLoad) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.expected = len(load.message)
        self.sent_at = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self) -> None:
        assert self.transport is not None
        self.received = 0
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.load.message)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received < self.expected:
            return
        load = self.load
        if self.received > self.expected:
            load.errors += 1  # more than was sent: not an echo
        load.latencies_ns.append(time.perf_counter_ns() - self.sent_at)
        load.messages += 1
        if load.running and load.messages < load.max_messages:
            self.send()
        else:
            self.finish()

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.load.running:
                self.load.errors += 1  # the proxy or the app closed the connection mid-run
            self.done.set_result(None)


class PingPongLoad:
    def __init__(self, message: bytes, max_messages: int) -> None:
        self.message = message
        self.max_messages = max_messages
        self.running = True
        self.messages = 0
        self.errors = 0
        self.latencies_ns: list[int] = []

    def __repr__(self) -> str:
        return f"<PingPongLoad messages={self.messages} errors={self.errors} running={self.running}>"

    def stop(self) -> None:
        self.running = False


async def pingpong(port: int, connections: int, size: int, duration_s: float, max_messages: int) -> str:
    loop = asyncio.get_running_loop()
    load = PingPongLoad(bytes(range(256)) * (size // 256) + bytes(range(size % 256)), max_messages)
    protocols: list[PingPong] = []
    for _ in range(connections):
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: PingPong(load), "127.0.0.1", port), CONNECT_TIMEOUT_S
        )
        protocols.append(protocol)
    start = time.perf_counter()
    timer = loop.call_later(duration_s, load.stop)
    for protocol in protocols:
        protocol.send()
    try:
        # Each connection ends after its message in flight at the deadline; a stuck one is cut off.
        await asyncio.wait_for(asyncio.gather(*(p.done for p in protocols)), duration_s + REPLY_TIMEOUT_S)
    except TimeoutError:
        load.errors += sum(1 for p in protocols if not p.done.done())
        for protocol in protocols:
            protocol.finish()
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    latencies = sorted(ns / 1000 for ns in load.latencies_ns)
    return result_line(
        messages=load.messages,
        duration_s=elapsed,
        nbytes=load.messages * size * 2,
        errors=load.errors,
        latencies_us=latencies,
    )


# bulk


def bulk(port: int, total_bytes: int, duration_s: float) -> str:
    chunk = memoryview(bytes(BULK_CHUNK))
    errors = 0
    with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)  # a stalled proxy cannot hold a write or the reply forever
        start = time.perf_counter()
        deadline = start + duration_s
        sent = 0
        while sent < total_bytes and time.perf_counter() < deadline:
            piece = chunk[: min(BULK_CHUNK, total_bytes - sent)]
            sock.sendall(piece)
            sent += len(piece)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < SINK_REPLY.size:
            more = sock.recv(SINK_REPLY.size - len(reply))
            if not more:
                break
            reply += more
        elapsed = time.perf_counter() - start
    if len(reply) == SINK_REPLY.size:
        (received,) = SINK_REPLY.unpack(reply)
    else:
        received, errors = 0, 1
    if received != sent:
        errors = 1
    return result_line(messages=0, duration_s=elapsed, nbytes=received, errors=errors, latencies_us=[])


def command(
    python: str,
    kind: str,
    port: int,
    *,
    duration_s: float,
    connections: int = 1,
    size: int = 64,
    max_messages: int = 10_000_000,
    total_bytes: int = 2 << 30,
) -> list[str]:
    argv = [python, "-m", "bench.tcp_load", kind, "--port", str(port), "--duration", f"{duration_s:g}"]
    if kind == "pingpong":
        argv += ["--connections", str(connections), "--size", str(size), "--max-messages", str(max_messages)]
    else:
        argv += ["--bytes", str(total_bytes)]
    return argv


def run(argv: list[str], *, timeout_s: float, cwd: str | None = None) -> LoadResult:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise TcpLoadError(f"tcp_load did not finish within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise TcpLoadError(f"cannot run tcp_load: {exc}") from None
    if done.returncode != 0:
        raise TcpLoadError(f"tcp_load exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_output(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tcp_load", description=__doc__)
    parser.add_argument("kind", choices=("pingpong", "bulk"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds (1..600)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (pingpong)")
    parser.add_argument("--max-messages", type=int, default=10_000_000)
    parser.add_argument("--bytes", type=int, default=2 << 30, help="bytes to stream (bulk)")
    args = parser.parse_args(argv)
    checks = [
        (not 1 <= args.port <= 65535, "--port must be 1..65535"),
        (not 0 < args.duration <= 600, "--duration must be 0..600 seconds"),
        (not 1 <= args.connections <= 10000, "--connections must be 1..10000"),
        (not 1 <= args.size <= 1 << 20, "--size must be 1..1048576"),
        (not 1 <= args.max_messages <= 100_000_000, "--max-messages must be 1..1e8"),
        (not 1 <= args.bytes <= 1 << 40, "--bytes must be 1..2^40"),
    ]
    for failed, message in checks:
        if failed:
            parser.error(message)
    try:
        if args.kind == "pingpong":
            line = uvloop.run(
                pingpong(args.port, args.connections, args.size, args.duration, args.max_messages)
            )
        else:
            line = bulk(args.port, args.bytes, args.duration)
    except (OSError, TimeoutError) as exc:
        print(f"tcp_load: {exc!r}", file=sys.stderr)
        return 1
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
