"""The supervisor of ENVOY_CONCURRENCY worker processes (meshproxy/workers.py has the protocol).

It owns the admin port: /ready and /server_info report LIVE once every worker is; /stats and
/stats/prometheus report totals across workers (and across workers that died, so counters never go back);
DogStatsD is flushed from those totals. SIGTERM drains every worker for LISTENER_DRAIN_WAIT_TIME_S, then the
supervisor exits 0. A worker that dies while the proxy is LIVE is restarted and counted
(`meshproxy.worker_restarts`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from meshproxy.admin.server import AdminServer, worker_entry
from meshproxy.dataplane import Dataplane, ServerState
from meshproxy.settings import Settings
from meshproxy.telemetry.aggregate import merge_stores, retire
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore
from meshproxy.workers import (
    CALL_TIMEOUT_S,
    CONTROL_FD_ENV,
    WORKER_INDEX_ENV,
    WorkerCommand,
    frame,
    load_store,
    read_frame,
)

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.supervisor")

_START_TIMEOUT_S = 60.0  # a worker that is not LIVE by then is treated as failed (its config, its ports)
_EXIT_GRACE_S = 5.0
_RESTART_BACKOFF_S = 1.0


class WorkerState(enum.Enum):
    STARTING = "starting"
    LIVE = "live"
    STOPPING = "stopping"
    EXITED = "exited"


class WorkerHandle:
    """One worker process and the supervisor's end of its control channel."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = WorkerState.STARTING
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.live = asyncio.Event()
        self._lock = asyncio.Lock()
        self.last_store: StatsStore | None = None  # the stats of the running process, as last read
        self.generation = 0  # the process's: a store read from an earlier one never lands on a later one
        self._live_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<WorkerHandle {self.index} {self.state.value} pid={pid}>"

    async def spawn(self, argv: Sequence[str]) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env[CONTROL_FD_ENV] = str(child.fileno())
        env[WORKER_INDEX_ENV] = str(self.index)
        # -P (Python 3.11): `-m` would otherwise put the working directory first on sys.path, and a
        # `meshproxy/` folder there would run instead of the installed package (issue 11).
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "meshproxy", "run", *argv, env=env, pass_fds=(child.fileno(),)
        )
        child.close()
        self.reader, self.writer = await asyncio.open_connection(sock=parent)
        self.state = WorkerState.STARTING
        self.live.clear()
        self._live_task = asyncio.get_running_loop().create_task(self._await_live())

    async def _await_live(self) -> None:
        assert self.reader is not None
        try:
            if await read_frame(self.reader) == b"live":
                self.state = WorkerState.LIVE
                self.live.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def call(self, command: WorkerCommand) -> bytes | None:
        """One request/reply on the control channel; None if the worker cannot answer now."""
        if (
            self.state not in (WorkerState.LIVE, WorkerState.STOPPING)
            or self.reader is None
            or self.writer is None
        ):
            return None
        async with self._lock:
            try:
                self.writer.write(frame(command.value.encode()))
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await self.writer.drain()
                    return await read_frame(self.reader)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return None

    def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.store = StatsStore()
        self.store.server.server_concurrency = settings.concurrency
        self.telemetry = Telemetry(settings, self.store)
        self.dataplane = Dataplane(settings, self.store, None)
        address = "::" if settings.admin_ipv6 else "0.0.0.0"
        if settings.listen_address in ("127.0.0.1", "::1"):
            address = settings.listen_address
        self.admin = AdminServer(self.dataplane, self.telemetry, self, address, settings.admin_port)
        self.workers = [WorkerHandle(i) for i in range(settings.concurrency)]
        self.retired: list[StatsStore] = []
        self.restarts = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[bytes | None]] = set()

    def __repr__(self) -> str:
        return f"<Supervisor {self.dataplane.state.name} workers={self.workers}>"

    # ------------------------------------------------------------------ Lifecycle (admin)
    def listeners(self) -> list[HttpListener]:
        return []  # the listeners live in the workers; /listeners there lists none

    async def config_dump(self, envoy: bool) -> dict[str, object]:
        """Worker 0's (every worker runs the same snapshot), asked at each request so it is never stale."""
        command = WorkerCommand.CONFIG_DUMP_ENVOY if envoy else WorkerCommand.CONFIG_DUMP
        for worker in self.workers:
            data = await worker.call(command)
            if data is not None:
                return cast(dict[str, object], json.loads(data))
        return {"configs": []}

    def drain(self, inbound_only: bool, exit_after: bool) -> None:
        if self.dataplane.state is not ServerState.DRAINING:
            self.dataplane.set_state(ServerState.DRAINING)
            log.info("draining %d workers for %ss", len(self.workers), self.settings.drain_wait_s)
        self._tell_all(WorkerCommand.DRAIN, stopping=exit_after)

    def _tell_all(self, command: WorkerCommand, stopping: bool) -> None:
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            if stopping and worker.state is WorkerState.LIVE:
                worker.state = WorkerState.STOPPING  # its exit is expected: no restart
            task = loop.create_task(worker.call(command))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def quit(self) -> None:
        self._tell_all(WorkerCommand.QUIT, stopping=True)

    async def refresh_stats(self) -> None:
        """Read every worker's stats, then total them with the retired ones in one step: a worker that dies
        meanwhile (its store moving to `retired`) is counted once, before or after, so totals never go
        back (issue 14)."""
        for worker in self.workers:
            generation = worker.generation
            data = await worker.call(WorkerCommand.STATS)
            if data is not None and worker.generation == generation:
                worker.last_store = cast(StatsStore, load_store(data))
        stores = [worker.last_store for worker in self.workers if worker.last_store is not None]
        self.telemetry.store = merge_stores(self.store, [*stores, *self.retired])

    def retire(self, worker: WorkerHandle) -> None:
        """`worker`'s process is gone: its last counts are kept (gauges zeroed), under no worker any more."""
        worker.generation += 1
        if worker.last_store is not None:
            self.retired.append(retire(worker.last_store))
            worker.last_store = None

    async def cluster_status(self, as_json: bool) -> str | dict[str, object]:
        command = WorkerCommand.CLUSTERS_JSON if as_json else WorkerCommand.CLUSTERS
        for worker in self.workers:
            data = await worker.call(command)
            if data is not None:
                return cast(dict[str, object], json.loads(data)) if as_json else data.decode()
        return {"cluster_statuses": []} if as_json else ""

    async def worker_status(self) -> list[dict[str, object]]:
        await self.refresh_stats()
        return [
            worker_entry(w.index, w.process.pid if w.process else None, w.state.name, w.last_store)
            for w in self.workers
        ]

    def reset_counters(self) -> None:
        self.retired.clear()
        self.store.reset_counters()
        self._tell_all(WorkerCommand.RESET, stopping=False)

    # ------------------------------------------------------------------ running
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            loop.add_signal_handler(sig, self.drain, False, True)
        try:
            await self.admin.start()
        except OSError as exc:
            log.critical("cannot bind the admin port %s: %s", self.settings.admin_port, exc)
            return 1
        self.dataplane.set_state(ServerState.INITIALIZING)
        await self.telemetry.start()
        try:
            for worker in self.workers:
                await worker.spawn(self.argv)
                self._tasks.append(loop.create_task(self._watch(worker)))
            if not await self._all_live():
                return 1
            self.store.server.control_plane_connected_state = 1
            self.dataplane.set_state(ServerState.LIVE)
            log.info("LIVE: %s with %d workers", self.settings.identity.node_id, len(self.workers))
            self._tasks.append(loop.create_task(self._refresh_loop()))
            await self._stop.wait()
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._stop_workers()
            for task in self._tasks:
                task.cancel()
            await self.telemetry.stop()
            await self.admin.stop()

    async def _all_live(self) -> bool:
        waits = [asyncio.ensure_future(w.live.wait()) for w in self.workers]
        exits = [asyncio.ensure_future(w.process.wait()) for w in self.workers if w.process is not None]
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                while not all(w.live.is_set() for w in self.workers):
                    done, _ = await asyncio.wait([*waits, *exits], return_when=asyncio.FIRST_COMPLETED)
                    if any(task in done for task in exits):
                        log.critical("a worker exited before it was LIVE; see its errors above")
                        return False
        except TimeoutError:
            log.critical("workers not LIVE within %ss", _START_TIMEOUT_S)
            return False
        finally:
            for task in (*waits, *exits):
                task.cancel()
        return True

    async def _watch(self, worker: WorkerHandle) -> None:
        """Restart a worker that dies while the proxy is LIVE; let it go when stopping."""
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            worker.close_channel()
            self.retire(worker)
            if (
                self._stop.is_set()
                or worker.state is WorkerState.STOPPING
                or (self.dataplane.state is not ServerState.LIVE)
            ):
                worker.state = WorkerState.EXITED
                if all(w.state is WorkerState.EXITED for w in self.workers):
                    self._stop.set()
                return
            self.restarts += 1
            self.store.server.worker_restarts += 1
            log.error("worker %d exited with %s; restarting it", worker.index, code)
            await asyncio.sleep(_RESTART_BACKOFF_S)
            await worker.spawn(self.argv)

    async def _refresh_loop(self) -> None:
        # DogStatsD flushes read the totals; keep them at most a second old.
        while True:
            await asyncio.sleep(1.0)
            await self.refresh_stats()

    async def _stop_workers(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.drain_wait_s + _EXIT_GRACE_S
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            if worker.state is not WorkerState.STOPPING:
                worker.state = WorkerState.STOPPING
                process.terminate()
            try:
                async with asyncio.timeout(max(0.1, deadline - asyncio.get_running_loop().time())):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
