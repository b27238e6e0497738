"""The supervisor's totals across worker processes never go backwards (issue 14, item 9), whatever the
order in which a worker's death and a stats refresh interleave. The supervisor is real; its workers are
stand-ins answering `stats` when the test says (the e2e test kills a real worker under load:
tests/e2e/test_workers.py).
"""

from __future__ import annotations

import asyncio

from meshproxy.settings import Settings
from meshproxy.supervisor import Supervisor, WorkerState
from meshproxy.telemetry.stats import StatsStore
from meshproxy.workers import WorkerCommand, dump_store

from .memory import Run
from .proxy import IDENTITY


class StandInWorker:
    """What the supervisor asks of a worker handle for stats: `call`, and its bookkeeping fields."""

    def __init__(self, requests: int) -> None:
        self.state = WorkerState.LIVE
        self.last_store: StatsStore | None = None
        self.generation = 0
        self.requests = requests
        self.gate: asyncio.Future[None] | None = None  # set: `call` waits for it

    def __repr__(self) -> str:
        return f"<StandInWorker requests={self.requests}>"

    async def call(self, command: WorkerCommand) -> bytes | None:
        assert command is WorkerCommand.STATS
        if self.gate is not None:
            await self.gate
        if self.state is not WorkerState.LIVE:
            return None
        store = StatsStore()
        store.http_conn_manager("egress").downstream_rq_total = self.requests
        return dump_store(store)


def total(supervisor: Supervisor) -> int:
    return supervisor.telemetry.store.http_conn_manager("egress").downstream_rq_total


def test_a_worker_dying_during_a_refresh_is_counted_once(run: Run) -> None:
    async def scenario() -> None:
        supervisor = Supervisor(Settings(identity=IDENTITY, concurrency=2), [])
        first, second = StandInWorker(10), StandInWorker(5)
        supervisor.workers = [first, second]  # type: ignore[list-item]
        await supervisor.refresh_stats()
        assert total(supervisor) == 15

        first.requests, second.requests = 12, 6
        second.gate = asyncio.get_running_loop().create_future()
        refresh = asyncio.ensure_future(supervisor.refresh_stats())
        await asyncio.sleep(0)  # the first worker answered; the refresh waits for the second
        first.state = WorkerState.EXITED
        supervisor.retire(first)  # what the watcher does when the first worker's process ends
        second.gate.set_result(None)
        await refresh
        assert total(supervisor) == 18  # its last 12 once (before the fix: twice, then back to 18)

        first.state, first.requests = WorkerState.LIVE, 1  # restarted: counting from zero again
        await supervisor.refresh_stats()
        assert total(supervisor) == 12 + 1 + 6

    run(scenario())


def test_an_answer_from_a_process_that_died_meanwhile_is_not_kept(run: Run) -> None:
    async def scenario() -> None:
        supervisor = Supervisor(Settings(identity=IDENTITY, concurrency=2), [])
        worker = StandInWorker(10)
        supervisor.workers = [worker]  # type: ignore[list-item]
        await supervisor.refresh_stats()
        worker.requests = 11
        worker.gate = asyncio.get_running_loop().create_future()
        refresh = asyncio.ensure_future(supervisor.refresh_stats())
        await asyncio.sleep(0)
        supervisor.retire(worker)  # the process ended while its answer was on the way
        worker.gate.set_result(None)
        await refresh
        assert worker.last_store is None and total(supervisor) == 10
        worker.gate, worker.requests = None, 2  # the new process
        await supervisor.refresh_stats()
        assert total(supervisor) == 12

    run(scenario())
