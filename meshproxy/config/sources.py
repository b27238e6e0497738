"""Where configuration comes from: App Mesh's control plane is gone, so the user's own source.

A source hands out configuration bytes when they change; the server compiles them and swaps the snapshot.
`FileSource` polls a file's modification time and size. Other sources (http(s) with ETag) implement the same
`ConfigSource` protocol.
"""

from __future__ import annotations

import asyncio
import os
from typing import Protocol


class SourceError(Exception):
    """The source could not be read (unreachable, unreadable). The last good configuration keeps serving."""


class ConfigSource(Protocol):
    @property
    def name(self) -> str:
        """What to call the source in logs and errors (a path or URL)."""
        ...

    async def fetch(self) -> bytes | None:
        """New configuration bytes, or None when nothing changed since the last fetch. Raises SourceError."""
        ...

    async def close(self) -> None: ...


class FileSource:
    """A file, re-read when its modification time or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<FileSource {self.path} seen={self._seen}>"

    @property
    def name(self) -> str:
        return self.path

    async def fetch(self) -> bytes | None:
        return await asyncio.to_thread(self._read_if_changed)

    def _read_if_changed(self) -> bytes | None:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size)
            if key == self._seen:
                return None
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"{self.path}: {exc.strerror or exc}") from None
        self._seen = key
        return data

    async def close(self) -> None:
        return None


def open_source(spec: str) -> ConfigSource:
    """The source for a --config / MESHPROXY_CONFIG value."""
    return FileSource(spec)
