"""Bytes for one socket, gathered while one event is handled and written with one `transport.write`.

Hot-path notes: every extra write is an extra syscall (uvloop sends at once, it does not merge successive
writes), so the connection managers and upstream connections queue a message's parts in a plain list (a C
`append`, no Python frame) and hand the socket one buffer per event with `write_batch`.
"""

from __future__ import annotations

import asyncio


def write_batch(transport: asyncio.Transport | None, parts: list[bytes]) -> int:
    """Write what `parts` holds (if there is a transport) and empty it; returns the bytes written."""
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    parts.clear()
    if transport is None:
        return 0
    transport.write(data)
    return len(data)
