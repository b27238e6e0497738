"""Several cores = several worker processes (ENVOY_CONCURRENCY > 1; DESIGN.md decision 8).

The supervisor process owns the admin port and the lifecycle; each worker is a full proxy (its own event loop,
config source, listeners on the same ports through SO_REUSEPORT) without an admin server. A socketpair links
them: the worker says `live` once its listeners are bound and answers `stats` (its store, pickled),
`clusters`, `reset`, `drain` and `quit`. A worker whose supervisor goes away exits.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
from collections.abc import Awaitable, Callable

log = logging.getLogger("meshproxy.workers")

CONTROL_FD_ENV = "MESHPROXY_CONTROL_FD"
WORKER_INDEX_ENV = "MESHPROXY_WORKER_INDEX"
_LENGTH = struct.Struct("!I")
CALL_TIMEOUT_S = 5.0


class WorkerCommand(enum.StrEnum):
    STATS = "stats"
    CLUSTERS = "clusters"
    CLUSTERS_JSON = "clusters-json"
    CONFIG_DUMP = "config-dump"  # meshproxy's own view
    CONFIG_DUMP_ENVOY = "config-dump-envoy"
    RESET = "reset"
    DRAIN = "drain"
    QUIT = "quit"


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class WorkerChannel:
    """The worker's end: serves the supervisor's commands until the channel closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def __repr__(self) -> str:
        return "<WorkerChannel>"

    async def announce_live(self) -> None:
        self.writer.write(frame(b"live"))
        await self.writer.drain()

    async def serve(self, handle: Callable[[WorkerCommand], Awaitable[bytes]]) -> None:
        """Answer commands; returns when the supervisor closes its end (or is gone)."""
        while True:
            try:
                request = await read_frame(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            try:
                command = WorkerCommand(request.decode())
            except ValueError:
                reply = b""
            else:
                reply = await handle(command)
            self.writer.write(frame(reply))
            await self.writer.drain()


# pickle is imported where it is used: a single-process proxy never needs it (~0.3 MiB resident).


def dump_store(store: object) -> bytes:
    import pickle

    return pickle.dumps(store, protocol=pickle.HIGHEST_PROTOCOL)


def load_store(data: bytes) -> object:
    import pickle

    # Only our own worker processes write to this channel (a socketpair we created); pickle is safe here.
    return pickle.loads(data)
