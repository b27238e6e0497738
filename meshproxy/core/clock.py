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

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the next turn of the loop (after the current callback returns)."""
        ...


class LoopClock:
    """The running event loop's clock."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<LoopClock>"

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)


LOOP_CLOCK = LoopClock()
