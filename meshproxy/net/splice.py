"""One direction of a TCP relay moved by the kernel: socket -> pipe -> socket with splice(2), no copy through
user space (Linux; issue 15: TCP bulk at Envoy's CPU per GB or better).

The TCP proxy relays through asyncio transports, which read each chunk into a new bytes object and write it
out again: two copies through Python per chunk. Once a direction carries a bulk stream, a `SplicePump` takes
it over: `splice(source -> pipe)` then `splice(pipe -> sink)`, woken by the loop when the source is readable
(and, while the sink's buffer is full, when the sink is writable). The transports keep their sockets; the
pump works on duplicates of their descriptors, and the source's transport stops reading first. Small
messages stay on the transports: for them splice would be two syscalls where a read and a write are two as
well, with the pipe in between (hot-path notes: os.splice 0.204 CPU-s/GB against 0.300 for Protocols).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import sys
from collections.abc import Callable

PIPE_SIZE = 1 << 20  # bytes one splice may move (the pipe is enlarged to this where the kernel allows)
READS_PER_WAKEUP = 16  # bounds one wake-up's work, so that other connections get the loop too
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def splice_supported() -> bool:
    return sys.platform == "linux" and hasattr(os, "splice")


def socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The descriptor of a transport's TCP socket; None for anything else (TLS, pipes, memory transports)."""
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return None


class SplicePump:
    """Moves bytes from one socket to another through a pipe until the source ends or fails.

    `on_moved(n)` after bytes reached the sink's socket buffer, `on_eof()` once the source ended and all it
    sent went on, `on_error(exc)` when either socket fails. `close()` stops it (idempotent).
    """

    __slots__ = (
        "buffered", "closed", "loop", "on_eof", "on_error", "on_moved", "pipe_r", "pipe_w", "sink",
        "source", "waiting_sink",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source_fd: int,
        sink_fd: int,
        on_moved: Callable[[int], None],
        on_eof: Callable[[], None],
        on_error: Callable[[OSError], None],
    ) -> None:
        self.loop = loop
        self.on_moved = on_moved
        self.on_eof = on_eof
        self.on_error = on_error
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: a 64 KiB pipe works too
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        # duplicates: the loop may watch them while the transports keep (and finally close) the originals
        self.source = os.dup(source_fd)
        self.sink = os.dup(sink_fd)
        self.buffered = 0  # in the pipe, not yet in the sink's socket
        self.waiting_sink = False
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "waiting for the sink" if self.waiting_sink else "moving"
        return f"<SplicePump {self.source}->{self.sink} {state} buffered={self.buffered}>"

    def start(self) -> None:
        self.loop.add_reader(self.source, self._readable)

    def _readable(self) -> None:
        # Source to sink until the source has nothing more (or the sink is full): like Envoy, which reads
        # until EAGAIN, one wake-up moves what arrived meanwhile, not one pipe's worth.
        for _ in range(READS_PER_WAKEUP):
            try:
                moved = os.splice(self.source, self.pipe_w, PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(exc)
                return
            if moved == 0:
                self.loop.remove_reader(self.source)
                self.on_eof()
                return
            self.buffered += moved
            self._drain()
            if self.buffered or self.closed:
                return  # the sink is full: _drain waits for it

    def _drain(self) -> None:
        """Pipe -> sink until the pipe is empty (then read again) or the sink is full (then wait for it)."""
        while self.buffered and not self.closed:
            try:
                moved = os.splice(self.pipe_r, self.sink, self.buffered, flags=_FLAGS)
            except BlockingIOError:
                if not self.waiting_sink:
                    self.waiting_sink = True
                    self.loop.remove_reader(self.source)  # nothing more is read until the sink takes this
                    self.loop.add_writer(self.sink, self._drain)
                return
            except OSError as exc:
                self._fail(exc)
                return
            self.buffered -= moved
            self.on_moved(moved)
        if self.waiting_sink and not self.closed:
            self.waiting_sink = False
            self.loop.remove_writer(self.sink)
            self.loop.add_reader(self.source, self._readable)

    def _fail(self, exc: OSError) -> None:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            exc = ConnectionResetError(exc.errno, os.strerror(exc.errno or 0))
        self.close()
        self.on_error(exc)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.source)
        self.loop.remove_writer(self.sink)
        for fd in (self.source, self.sink, self.pipe_r, self.pipe_w):
            os.close(fd)
