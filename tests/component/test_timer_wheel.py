"""The timer wheel (core/clock.py) on a real uvloop loop: long timers fire at the end of their 10 ms slot,
never early and never more than a slot late; cancelled ones never fire; short ones go to the loop itself.

The wheel is built with a small minimum delay so that the test waits tens of milliseconds, not seconds.
Lateness is bounded by the slot and by how late the loop itself runs a timer: the bounds below are the
slot plus the loop's own scheduling slack, never "how fast" anything is.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator

import pytest
import uvloop

from meshproxy.core.clock import WHEEL_MIN_DELAY_S, WHEEL_TICK_S, LoopClock, Timer, TimerWheel

TICK = 0.01


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        yield run


def test_timers_fire_in_their_slot_never_early(runner: asyncio.Runner) -> None:
    async def scenario() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop, tick=TICK, min_delay=0.0)
        fired: list[tuple[float, float]] = []
        done = loop.create_future()
        delays = [0.013, 0.02, 0.021, 0.035, 0.05]

        def record(delay: float, armed: float) -> None:
            fired.append((delay, loop.time() - armed))

        for delay in delays:
            wheel.call_later(delay, functools.partial(record, delay, loop.time()))
        wheel.call_later(0.06, lambda: done.set_result(None))
        await asyncio.wait_for(done, 5)
        assert not wheel.slots  # every slot fired and was dropped
        return fired

    fired = runner.run(scenario())
    assert sorted(d for d, _ in fired) == [0.013, 0.02, 0.021, 0.035, 0.05]
    for delay, after in fired:
        assert after >= delay - 0.001, (delay, after)  # uvloop's clock has millisecond resolution
        assert after <= delay + TICK + 0.5, (delay, after)  # its slot, plus a busy machine's slack


def test_a_cancelled_timer_never_fires_even_when_a_slot_mate_cancels_it(runner: asyncio.Runner) -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop, tick=TICK, min_delay=0.0)
        fired: list[str] = []
        cancelled = wheel.call_later(0.02, lambda: fired.append("cancelled"))
        cancelled.cancel()
        cancelled.cancel()  # idempotent
        timers: list[Timer] = []

        def fire(name: int) -> None:
            fired.append(f"slot-mate {name}")
            for timer in timers:
                timer.cancel()  # the others in this slot must not run any more

        # five timers in one slot: whichever runs first cancels the rest
        timers.extend(wheel.call_later(0.0301 + i / 10_000, functools.partial(fire, i)) for i in range(5))
        await asyncio.sleep(0.1)
        return fired

    fired = runner.run(scenario())
    assert "cancelled" not in fired
    assert len(fired) == 1, fired


def test_short_timers_go_to_the_loop_and_the_clock_uses_the_wheel(runner: asyncio.Runner) -> None:
    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop, wheel=True)
        short = clock.call_later(WHEEL_MIN_DELAY_S / 2, lambda: None)
        after_short = len(clock.wheel.slots)
        long = clock.call_later(15.0, lambda: None)
        after_long = len(clock.wheel.slots)
        short.cancel()
        long.cancel()
        return after_short, after_long

    assert runner.run(scenario()) == (0, 1)
    assert WHEEL_TICK_S <= WHEEL_MIN_DELAY_S / 100  # a wheel timer is at most 1 % late
