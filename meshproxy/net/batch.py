"""Bytes for one socket, gathered while one event is handled and written with one `transport.write`.

Hot-path notes: every extra write is an extra syscall (uvloop sends at once, it does not merge successive
writes), so the connection managers and upstream connections queue a response's head and body here and hand
the socket one buffer per event.
"""

from __future__ import annotations

import asyncio


class WriteBatch:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __repr__(self) -> str:
        return f"<WriteBatch {len(self.parts)} parts>"

    def __bool__(self) -> bool:
        return bool(self.parts)

    def add(self, data: bytes) -> None:
        if data:
            self.parts.append(data)

    def clear(self) -> None:
        self.parts.clear()

    def write_to(self, transport: asyncio.Transport | None) -> int:
        """Write what is queued (if there is a transport) and empty the batch; returns the bytes written."""
        parts = self.parts
        if not parts:
            return 0
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if transport is None:
            return 0
        transport.write(data)
        return len(data)
