"""Running out of file descriptors without falling over (issue 14, defect 7).

Every accepted connection and every upstream connection costs a descriptor; RLIMIT_NOFILE bounds them. Left
alone, the accepting side hits EMFILE first, and the event loop (libuv) then accepts and closes everything
queued on the listening socket to get out of it: clients in the backlog are reset, and the admin port and
service discovery (getaddrinfo, DNS sockets) fail for want of a descriptor while clients hold them all.

The `DescriptorGuard` keeps a reserve instead: when fewer than `reserve` descriptors are left, the data
listeners stop accepting (their sockets keep listening, so new connections wait in the backlog), which leaves
the reserve to the admin port, discovery and the upstream connections of requests in flight. It checks
again after a back-off and resumes once twice the reserve is free. Each episode is logged once, at its start
and at its end.

The check is cheap enough for the accept path: descriptors are handed out lowest number first, so when
duplicating a descriptor gives a number at or above `limit - reserve`, every number below is in use. The
guard looks every few accepts and once a second; the exact count (/proc/self/fd) is read only while paused.

The event loop accepts everything queued in one go and calls the protocol factory for each connection, and
a server cannot be closed from inside its factory. So crossing `limit - reserve` schedules the pause, and a
burst that reaches half-way into the reserve is stopped at once: the factory raises `AcceptPaused`, which
makes the loop stop accepting there (that one connection is closed with the pause; the server swallows the
exception, see server.py). Connections still queued stay in the backlog.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import resource

from meshproxy.core.clock import Clock, Timer
from meshproxy.net.listen import Acceptor

log = logging.getLogger("meshproxy.listener")

CHECK_EVERY_ACCEPTS = 8
MIN_RESERVE = 32  # at least four checks' worth of accepts before the hard edge
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0


class AcceptPaused(OSError):
    """Raised by a listener's protocol factory at the hard edge of the reserve, to stop an accept burst."""


def default_reserve(limit: int) -> int:
    """Descriptors kept free: a sixteenth of the limit, at least 32 and at most 1024."""
    return max(MIN_RESERVE, min(1024, limit // 16))


def open_descriptors() -> int:
    """How many descriptors this process holds (Linux: /proc/self/fd, less the one reading it)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        return -1  # not even one descriptor to read it with: treat as exhausted


class GuardState(enum.Enum):
    ACCEPTING = "accepting"
    PAUSING = "pausing"  # the reserve is reached: the pause runs on the next turn of the loop
    PAUSED = "paused"  # out of descriptors: the data listeners leave connections in the backlog


class DescriptorGuard:
    """Pauses the watched acceptors while descriptors run short; one per process."""

    __slots__ = (
        "acceptors", "backoff", "clock", "countdown", "edge", "limit", "paused_at", "reserve", "reserve_fd",
        "resuming", "state", "threshold", "timer",
    )  # fmt: skip

    def __init__(self, clock: Clock, limit: int | None = None, reserve: int | None = None) -> None:
        self.clock = clock
        self.limit = limit if limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.reserve = reserve if reserve is not None else default_reserve(self.limit)
        self.threshold = self.limit - self.reserve
        self.edge = self.limit - self.reserve // 2
        self.acceptors: list[Acceptor] = []
        self.state = GuardState.ACCEPTING
        self.countdown = CHECK_EVERY_ACCEPTS
        self.backoff = FIRST_BACKOFF_S
        self.paused_at = 0.0
        self.timer: Timer | None = None
        self.resuming: asyncio.Task[None] | None = None
        self.reserve_fd = os.open(os.devnull, os.O_RDONLY)  # what the probe duplicates

    def __repr__(self) -> str:
        return f"<DescriptorGuard {self.state.value} limit={self.limit} reserve={self.reserve}>"

    def watch(self, acceptor: Acceptor) -> None:
        self.acceptors.append(acceptor)

    # ---------------------------------------------------------------- checks
    def on_accept(self) -> None:
        """A data listener accepted a connection: look every few accepts. Raises `AcceptPaused` half-way
        into the reserve (the loop stops accepting this burst there)."""
        self.countdown -= 1
        if self.countdown > 0:
            return
        self.countdown = CHECK_EVERY_ACCEPTS
        lowest = self._lowest_free()
        if lowest < self.threshold:
            return
        if self.state is GuardState.ACCEPTING:
            self.state = GuardState.PAUSING
            self.clock.call_soon(self._pause)
        if lowest >= self.edge:
            raise AcceptPaused(errno.EMFILE, "out of file descriptors: accepting paused")

    def check(self) -> None:
        """Pause accepting if fewer than `reserve` descriptors are left (also called once a second)."""
        if self.state is GuardState.ACCEPTING and self._lowest_free() >= self.threshold:
            self._pause()

    def _lowest_free(self) -> int:
        try:
            fd = os.dup(self.reserve_fd)
        except OSError:
            return self.limit  # EMFILE: none left at all
        os.close(fd)
        return fd

    # ---------------------------------------------------------------- an episode
    def _pause(self) -> None:
        if self.state is GuardState.PAUSED:
            return
        self.state = GuardState.PAUSED
        self.paused_at = self.clock.now()
        self.backoff = FIRST_BACKOFF_S
        for acceptor in self.acceptors:
            acceptor.pause()
        log.warning(
            "out of file descriptors (%d in use, limit %d): not accepting new connections until some "
            "close; they wait in the listen backlog, and %d descriptors stay free for the admin port, "
            "service discovery and upstream connections",
            open_descriptors(),
            self.limit,
            self.reserve,
        )
        self.timer = self.clock.call_later(self.backoff, self._retry)

    def _retry(self) -> None:
        self.timer = None
        if self.state is not GuardState.PAUSED:
            return
        in_use = open_descriptors()
        if 0 <= in_use < self.limit - 2 * self.reserve:
            self.resuming = asyncio.get_running_loop().create_task(self._resume(in_use))
            return
        self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
        self.timer = self.clock.call_later(self.backoff, self._retry)

    async def _resume(self, in_use: int) -> None:
        self.state = GuardState.ACCEPTING
        self.countdown = CHECK_EVERY_ACCEPTS
        for acceptor in self.acceptors:
            try:
                await acceptor.start()
            except OSError:  # cannot create the server again yet: try again after the back-off
                self.state = GuardState.PAUSED
                self.timer = self.clock.call_later(self.backoff, self._retry)
                return
        log.warning(
            "file descriptors available again (%d in use): accepting new connections after %.1f s",
            in_use,
            self.clock.now() - self.paused_at,
        )

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.resuming is not None:
            self.resuming.cancel()
        if self.reserve_fd >= 0:
            os.close(self.reserve_fd)
            self.reserve_fd = -1
