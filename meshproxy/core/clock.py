"""The clock seam: what the router, the pools and the connection managers ask of time.

Production code uses `LOOP_CLOCK` (the running event loop's timers, `time.monotonic`). The component tests
give the same objects a fake clock and advance it by hand, so retries, timeouts and back-offs are tested in
milliseconds and deterministically (STYLE.md habit 5: all I/O and time through small typed seams).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (only differences mean anything)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, `delay` seconds from now."""
        ...

    def call_soon(self, callback: Callable[[], None]) -> object:
        """Run `callback` on the next turn of the loop (after the current callback returns)."""
        ...


WHEEL_TICK_S = 0.01  # the wheel's slot: a timer on it fires up to this much late, never early
WHEEL_MIN_DELAY_S = 1.0  # shorter timers (back-offs, sniffing) go to the loop itself


class _WheelTimer:
    """A timer in one of the wheel's slots; `cancel` takes it out (O(1))."""

    __slots__ = ("callback", "slot")

    def __init__(self, slot: set[_WheelTimer], callback: Callable[[], None]) -> None:
        self.slot: set[_WheelTimer] | None = slot
        self.callback = callback

    def __repr__(self) -> str:
        return f"<WheelTimer {'armed' if self.slot is not None else 'done'}>"

    def cancel(self) -> None:
        slot = self.slot
        if slot is not None:
            self.slot = None
            slot.discard(self)


class TimerWheel:
    """Long timers in 10 ms slots: one loop timer per slot instead of one per request (issue 15).

    Every request arms a route timeout (15 s by default) and often a per-try timeout, and nearly all of them
    are cancelled a millisecond later. A loop timer costs a handle, a heap insert and a removal (~0.4 µs);
    here a timer is a set insertion and removal, and the loop wakes at most once per slot that held a timer.
    A timer fires at the end of its slot: up to WHEEL_TICK_S late (under 1 % of the shortest delay that
    comes here), never early. Delays under WHEEL_MIN_DELAY_S go to the loop unchanged.
    """

    __slots__ = ("loop", "min_delay", "slots", "tick")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tick: float = WHEEL_TICK_S,
        min_delay: float = WHEEL_MIN_DELAY_S,
    ) -> None:
        self.loop = loop
        self.tick = tick
        self.min_delay = min_delay
        self.slots: dict[int, set[_WheelTimer]] = {}

    def __repr__(self) -> str:
        return f"<TimerWheel slots={len(self.slots)}>"

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        loop = self.loop
        if delay < self.min_delay:
            return loop.call_later(delay, callback)
        tick = self.tick
        index = math.ceil((loop.time() + delay) / tick)
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = set()
            loop.call_at(index * tick, self._fire, index)
        timer = _WheelTimer(slot, callback)
        slot.add(timer)
        return timer

    def _fire(self, index: int) -> None:
        slot = self.slots.pop(index, None)
        if not slot:
            return
        for timer in list(slot):  # a callback may cancel another timer of this slot
            if timer.slot is slot:
                timer.slot = None
                timer.callback()


# Compiled with mypyc (meshproxy/native.py), a wheel timer costs 0.21 µs against the loop's 0.36 µs (armed
# and cancelled); interpreted, its three Python frames cost more than they save (+1 µs per request with two
# timers, bench/RESULTS.md "Where the time goes"). So the wheel serves the compiled form only.
WHEEL_PAYS = not __file__.endswith(".py")


class LoopClock:
    """An event loop's clock. `now` and `call_soon` are `time.monotonic` and the loop's own method, so a call
    costs no Python frame of ours (the request path asks for the time ~10 times per request); `call_later`
    puts long timers on a `TimerWheel` where that pays (`WHEEL_PAYS`), else is the loop's own method."""

    __slots__ = ("call_later", "call_soon", "now", "wheel")

    def __init__(self, loop: asyncio.AbstractEventLoop, wheel: bool = WHEEL_PAYS) -> None:
        self.now: Callable[[], float] = time.monotonic
        self.wheel = TimerWheel(loop)
        self.call_later: Callable[[float, Callable[[], None]], Timer] = (
            self.wheel.call_later if wheel else loop.call_later
        )
        self.call_soon: Callable[[Callable[[], None]], object] = loop.call_soon

    def __repr__(self) -> str:
        return "<LoopClock>"


class RunningLoopClock:
    """The clock of whichever loop is running when it is asked (for objects made before the loop exists)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<RunningLoopClock>"

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)


LOOP_CLOCK = RunningLoopClock()
