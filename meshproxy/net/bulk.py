"""One direction of a TCP relay that carries a bulk stream: socket to socket through one large buffer that
the worker shares (issue 15: TCP bulk at Envoy's CPU per GB or better, and its throughput).

The TCP proxy relays through asyncio transports, which read each chunk (up to 256 KiB) into a new bytes
object and write it out again; objects that large come from mmap, so every read faults in fresh pages. Once
a direction carries a bulk stream, a `BulkPump` takes it over: `readv` into the worker's bulk buffer, `write`
from it to the sink, woken by the loop when the source is readable. The buffer is reused by every pump of
the worker, so it stays in cache and its pages stay mapped; it holds bytes only within one call, because a
write the sink cannot take whole leaves the remainder in the pump (`pending`, a copy) and the pump stops
reading until the sink has taken it. The transports keep their sockets; the pump works on duplicates of
their descriptors, and the source's transport stops reading first.

Why not splice(2): it was this module's first design (socket -> pipe -> socket, no copy through user space).
On loopback it moved ~2.2 GB/s at ~0.27 CPU-s/GB against Envoy's ~2.8 GB/s at ~0.30; this pump moves
~3.5 GB/s at ~0.22 in the same harness (bench/RESULTS.md, "TCP bulk: splice and the bulk buffer"). Spliced
pages stay referenced by the pipe and the receiver's socket until the receiver copies them, so the sender
keeps allocating fresh pages and the receiver copies cold ones: both ends paid more than the proxy saved.
Envoy copies too (1 MiB buffer limit per connection); the buffer here is one per worker, not per connection.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable

BULK_BUFFER_SIZE = 2 << 20  # one read's most; 1 MiB moved ~15% less on the bench, 256 KiB ~40% less
READS_PER_WAKEUP = 4  # bounds one wake-up's work (8 MiB), so that other connections get the loop too


class BulkBuffer:
    """The worker's bulk buffer. Made on the first pump (bytearray zero-fills: 2 MiB resident from then on),
    not at import, where it would count against every worker's idle memory."""

    __slots__ = ("data", "view")

    def __init__(self) -> None:
        self.data = bytearray(BULK_BUFFER_SIZE)
        self.view = memoryview(self.data)


_WORKER_BUFFER: list[BulkBuffer] = []  # at most one: a list, so that it can be made on first use


def bulk_buffer() -> BulkBuffer:
    if not _WORKER_BUFFER:
        _WORKER_BUFFER.append(BulkBuffer())
    return _WORKER_BUFFER[0]


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


class BulkPump:
    """Moves bytes from one socket to another until the source ends or fails.

    `on_moved(n)` after bytes reached the sink's socket buffer, `on_eof()` once the source ended and all it
    sent went on, `on_error(exc)` when either socket fails. `close()` stops it (idempotent).
    """

    __slots__ = (
        "buffer", "closed", "loop", "on_eof", "on_error", "on_moved", "pending", "pending_at", "sink",
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
        # duplicates: the loop may watch them while the transports keep (and finally close) the originals
        self.source = os.dup(source_fd)
        self.sink = os.dup(sink_fd)
        self.buffer = bulk_buffer()
        self.pending = b""  # read, not yet taken by the sink (only while waiting for it)
        self.pending_at = 0
        self.waiting_sink = False
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "waiting for the sink" if self.waiting_sink else "moving"
        return f"<BulkPump {self.source}->{self.sink} {state} pending={len(self.pending) - self.pending_at}>"

    def start(self) -> None:
        self.loop.add_reader(self.source, self._readable)

    def _readable(self) -> None:
        # Read and write until the source has nothing more (or the sink is full): like Envoy, which reads
        # until EAGAIN, one wake-up moves what arrived meanwhile, not one buffer's worth.
        data, view = self.buffer.data, self.buffer.view
        for _ in range(READS_PER_WAKEUP):
            try:
                size = os.readv(self.source, [data])
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(exc)
                return
            if size == 0:
                self.loop.remove_reader(self.source)
                self.on_eof()
                return
            try:
                written = os.write(self.sink, view[:size])
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._fail(exc)
                return
            if written:
                self.on_moved(written)
            if written < size:  # the sink is full: keep the rest, read nothing more until it is taken
                self.pending = bytes(view[written:size])
                self.pending_at = 0
                self.waiting_sink = True
                self.loop.remove_reader(self.source)
                self.loop.add_writer(self.sink, self._writable)
                return

    def _writable(self) -> None:
        try:
            written = os.write(self.sink, memoryview(self.pending)[self.pending_at :])
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        self.on_moved(written)
        self.pending_at += written
        if self.pending_at < len(self.pending) or self.closed:
            return
        self.pending = b""
        self.pending_at = 0
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
        self.pending = b""
        self.loop.remove_reader(self.source)
        self.loop.remove_writer(self.sink)
        for fd in (self.source, self.sink):
            os.close(fd)
