"""The clock seam: what the router, the pools and the connection managers ask of time.

Production code uses `LOOP_CLOCK` (the running event loop's timers, `time.monotonic`). The component tests
give the same objects a fake clock and advance it by hand, so retries, timeouts and back-offs are tested in
milliseconds and deterministically (STYLE.md habit 5: all I/O and time through small typed seams).
"""

from __future__ import annotations

import asyncio
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


class LoopClock:
    """An event loop's clock. Its members are the loop's own methods and `time.monotonic`, so a call costs
    no Python frame of ours (the request path asks for the time ~10 times per request)."""

    __slots__ = ("call_later", "call_soon", "now")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now: Callable[[], float] = time.monotonic
        self.call_later: Callable[[float, Callable[[], None]], Timer] = loop.call_later
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
