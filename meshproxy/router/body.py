"""The request body as the router holds it: for replay on a retry, and while no attempt can take it yet.

Every chunk is kept until the body passes `RETRY_BUFFER_LIMIT` (Envoy's per_connection_buffer_limit_bytes,
1 MiB); past it the request can no longer be retried, and only chunks no attempt has taken yet are held.
"""

from __future__ import annotations

from meshproxy.router.retry import RETRY_BUFFER_LIMIT


class RequestBody:
    __slots__ = ("chunks", "replayable", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0  # bytes received so far
        self.replayable = True

    def __repr__(self) -> str:
        return f"<RequestBody {self.size} bytes replayable={self.replayable} held={len(self.chunks)}>"

    def add(self, data: bytes, forwarded: bool) -> None:
        """`forwarded`: an attempt has taken `data` already (it is kept only for a replay)."""
        self.size += len(data)
        if self.replayable:
            self.chunks.append(data)
            if self.size > RETRY_BUFFER_LIMIT:
                self.replayable = False
                if forwarded:
                    self.chunks = []
        elif not forwarded:
            self.chunks.append(data)

    def taken(self) -> None:
        """An attempt has taken every held chunk; without replay they need not be kept."""
        if not self.replayable:
            self.chunks = []
