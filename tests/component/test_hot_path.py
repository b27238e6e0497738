"""The hot path stays honest (issues 8 and 15), counted rather than timed: per request on HTTP/1.1 and HTTP/2
and per round trip on TCP, the proxy makes one read and one write per socket per event (hot-path notes:
every extra `transport.write` is an extra syscall), a bounded number of memory allocations and Python calls,
and leaves nothing behind in memory.

The proxy runs in this process on uvloop, on real loopback sockets; its clients and its upstream run in a
separate process (hot_path_peer.py) so that every count taken of this process is the proxy's alone:

- syscalls: `syscr` / `syscw` of /proc/self/io, the kernel's own count of read(2)- and write(2)-family calls
  (uvloop reads and writes sockets with them; nothing is patched);
- allocations: calls of the interpreter's allocators (PyMem and PyObject domains), counted by a small C hook
  (alloc_counter.c, built with the system C compiler, as a compiled meshproxy build needs anyway);
- Python calls: function calls seen by `sys.setprofile` (in the compiled form, only the code that still runs
  interpreted shows: compiled functions are C).

Each figure is the difference between a batch of 2N and a batch of N requests on warm connections, divided
by N, so the fixed cost of driving the peer cancels out. Budgets have a little room above what was measured
(bench/RESULTS.md "Counts per request"); a change that adds a write, an allocation per request or a Python
frame on the path shows here.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
import uvloop

from meshproxy import native
from meshproxy.config.compile import DEFAULT_TCP_RETRY_POLICY, compile_snapshot
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
from meshproxy.config.load import check_resources
from meshproxy.core.direction import ListenerDirection
from meshproxy.dataplane import Dataplane
from meshproxy.listeners.listener import HttpListener
from meshproxy.settings import load_settings
from meshproxy.tcp.proxy import TcpProxySession
from meshproxy.telemetry.stats import StatsStore, TcpProxyStats
from meshproxy.upstream.cluster import ClusterRuntime

from .proxy import tcp_cluster

PEER = Path(__file__).with_name("hot_path_peer.py")
COUNTER_SOURCE = Path(__file__).with_name("alloc_counter.c")
BATCH = 200  # N: requests in the first batch; the second has 2N
PEER_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Budget:
    reads: float  # read syscalls per request (or round trip)
    writes: float
    allocations: int
    calls: int


# What one request may cost, by kind and form. Measured on 2026-12-04 (bench/RESULTS.md "Counts per
# request"); the allocation and call budgets leave about 10 % of room.
BUDGETS: dict[tuple[str, str], Budget] = {
    ("http1", "pure"): Budget(reads=2, writes=2, allocations=200, calls=112),
    ("http1", "compiled"): Budget(reads=2, writes=2, allocations=120, calls=8),
    ("h2", "pure"): Budget(reads=2, writes=2, allocations=225, calls=140),
    ("h2", "compiled"): Budget(reads=2, writes=2, allocations=200, calls=44),
    ("tcp", "pure"): Budget(reads=2, writes=2, allocations=12, calls=9),
    ("tcp", "compiled"): Budget(reads=2, writes=2, allocations=10, calls=1),
}


def io_counts() -> tuple[int, int]:
    """(read-family, write-family) syscalls this process has made."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines() if line)
    return int(fields["syscr"]), int(fields["syscw"])


class AllocationCounter:
    """The C hook in alloc_counter.c, loaded with ctypes.PyDLL (its calls hold the GIL)."""

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.PyDLL(str(library))
        self.lib.allocation_count.restype = ctypes.c_ulonglong

    def __enter__(self) -> AllocationCounter:
        self.lib.start_counting()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.stop_counting()

    def count(self) -> int:
        return int(self.lib.allocation_count())


@pytest.fixture(scope="module")
def allocation_counter(tmp_path_factory: pytest.TempPathFactory) -> AllocationCounter:
    compiler = shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if compiler is None or not Path(include, "Python.h").is_file():
        pytest.skip("needs a C compiler and Python's headers (Debian build-essential, python3-dev)")
    library = tmp_path_factory.mktemp("alloc") / "alloc_counter.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", f"-I{include}", "-o", str(library), str(COUNTER_SOURCE)],
        check=True,
        timeout=60,
    )
    return AllocationCounter(library)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        yield run


class Peer:
    """hot_path_peer.py: the upstream and the clients, in their own process."""

    def __init__(self, process: asyncio.subprocess.Process, upstream_port: int) -> None:
        self.process = process
        self.upstream_port = upstream_port

    @classmethod
    async def start(cls, upstream: str) -> Peer:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(PEER), upstream, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), PEER_TIMEOUT_S)
        assert line.startswith(b"PORT "), line
        return cls(process, int(line.split()[1]))

    async def run(self, kind: str, port: int, count: int) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{kind} {port} {count}\n".encode())
        answer = await asyncio.wait_for(self.process.stdout.readline(), PEER_TIMEOUT_S)
        assert answer == b"ok\n", answer

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@dataclass(frozen=True, slots=True)
class PerRequest:
    reads: float
    writes: float
    allocations: float
    calls: float


async def per_request(
    batch: Callable[[int], Awaitable[None]], counter: AllocationCounter | None
) -> PerRequest:
    """Each figure as (cost of 2N requests - cost of N requests) / N, on warm connections."""

    async def syscalls(count: int) -> tuple[int, int]:
        reads, writes = io_counts()
        await batch(count)
        after = io_counts()
        return after[0] - reads, after[1] - writes

    async def allocations(count: int) -> int:
        assert counter is not None
        before = counter.count()
        await batch(count)
        return counter.count() - before

    async def calls(count: int) -> int:
        seen = 0

        def profile(frame: FrameType, event: str, arg: object) -> None:
            nonlocal seen
            if event == "call":
                seen += 1

        sys.setprofile(profile)
        try:
            await batch(count)
        finally:
            sys.setprofile(None)
        return seen

    await batch(BATCH)  # warm: connections pooled, caches filled
    gc.disable()  # a collection inside one batch would count its own allocations
    try:
        short, long = await syscalls(BATCH), await syscalls(2 * BATCH)
        reads, writes = (long[0] - short[0]) / BATCH, (long[1] - short[1]) / BATCH
        allocated = 0.0
        if counter is not None:
            with counter:
                allocated = (await allocations(2 * BATCH) - await allocations(BATCH)) / BATCH
        called = (await calls(2 * BATCH) - await calls(BATCH)) / BATCH
    finally:
        gc.enable()
    return PerRequest(reads, writes, allocated, called)


async def egress_listener(upstream_port: int) -> HttpListener:
    settings = load_settings({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/front"})
    read = read_document(colour_mesh(upstream_port, upstream_port, upstream_port))
    resources, issues = check_resources(read.resources, read.issues)
    assert not [i for i in issues if i.is_error], issues
    dataplane = Dataplane(settings, StatsStore())
    dataplane.apply(compile_snapshot(resources, settings.identity, version="test"))
    listener = HttpListener(
        ListenerDirection.EGRESS, "127.0.0.1", 0, dataplane, dataplane.server_codec_factory
    )
    await listener.start()
    return listener


def measure_http(kind: str, runner: asyncio.Runner, counter: AllocationCounter) -> PerRequest:
    async def scenario() -> PerRequest:
        peer = await Peer.start("http")
        listener = await egress_listener(peer.upstream_port)
        try:
            return await per_request(lambda n: peer.run(kind, listener.port, n), counter)
        finally:
            await listener.stop_accepting()
            listener.clusters.shutdown()
            await peer.stop()

    return runner.run(scenario())


def measure_tcp(runner: asyncio.Runner, counter: AllocationCounter) -> PerRequest:
    async def scenario() -> PerRequest:
        peer = await Peer.start("tcp")
        cluster = tcp_cluster([("127.0.0.1", peer.upstream_port)], "cds_ingress_demo_db_tcp_7100")
        stats = TcpProxyStats()

        def accept() -> asyncio.Protocol:
            return Accepting(cluster, stats)

        server = await asyncio.get_running_loop().create_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await per_request(lambda n: peer.run("tcp", port, n), counter)
        finally:
            server.close()
            cluster.shutdown()
            await peer.stop()

    return runner.run(scenario())


class Accepting(asyncio.Protocol):
    """Hands each accepted connection to a TCP proxy session, as the listener's dispatcher does."""

    def __init__(self, cluster: ClusterRuntime, stats: TcpProxyStats) -> None:
        self.cluster = cluster
        self.stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        session = TcpProxySession(
            transport,  # type: ignore[arg-type]
            b"",
            self.cluster,
            self.stats,
            DEFAULT_TCP_RETRY_POLICY,
            30.0,
        )
        transport.set_protocol(session.protocol)
        session.start()


def check(kind: str, measured: PerRequest) -> None:
    budget = BUDGETS[(kind, native.form())]
    print(f"{kind} ({native.form()}): {measured}")
    # one read and one write per socket per event: client -> proxy -> upstream -> proxy -> client. (Within
    # 0.05: driving the peer costs a pipe read or two per batch, which does not always cancel out exactly;
    # one more syscall per request is 1.0.)
    assert abs(measured.reads - budget.reads) < 0.05, measured
    assert abs(measured.writes - budget.writes) < 0.05, measured
    assert measured.allocations <= budget.allocations, measured
    assert measured.calls <= budget.calls, measured


def test_http1_request_costs(runner: asyncio.Runner, allocation_counter: AllocationCounter) -> None:
    check("http1", measure_http("http1", runner, allocation_counter))


def test_h2_request_costs(runner: asyncio.Runner, allocation_counter: AllocationCounter) -> None:
    check("h2", measure_http("h2", runner, allocation_counter))


def test_tcp_round_trip_costs(runner: asyncio.Runner, allocation_counter: AllocationCounter) -> None:
    check("tcp", measure_tcp(runner, allocation_counter))


def test_requests_leave_nothing_behind(runner: asyncio.Runner) -> None:
    async def scenario() -> int:
        peer = await Peer.start("http")
        listener = await egress_listener(peer.upstream_port)
        try:
            await peer.run("http1", listener.port, 200)  # warm caches (date header, pools, interned names)
            gc.collect()
            before = sys.getallocatedblocks()
            await peer.run("http1", listener.port, 2000)
            gc.collect()
            return sys.getallocatedblocks() - before
        finally:
            await listener.stop_accepting()
            listener.clusters.shutdown()
            await peer.stop()

    growth = runner.run(scenario())
    # 2000 requests: a leak of even one object per request would show as thousands of blocks.
    assert growth < 500, f"{growth} memory blocks still allocated after 2000 requests"
