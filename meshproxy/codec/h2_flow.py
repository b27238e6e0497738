"""HTTP/2 flow control for one stream, shared by the downstream and upstream stream classes (RFC 9113 §5.2).

`StreamFlow` is both directions of one stream: it withholds WINDOW_UPDATEs while the router pauses reading,
and tells the other side to pause while this stream cannot send (its window or the socket is full).
`OutboundBody` queues a body and sends it as the windows allow. No I/O, no asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from meshproxy.codec.h2 import H2Codec
from meshproxy.core.events import Headers


class _Carrier(Protocol):
    """The stream's connection, as flow control sees it."""

    write_paused: bool  # its socket's buffer is full (asyncio pause_writing)

    def acknowledge(self, sid: int, length: int) -> None: ...


_C = TypeVar("_C", bound=_Carrier)


class StreamFlow(Generic[_C]):
    """Backpressure for one HTTP/2 stream, shared by the downstream and upstream stream classes (generic in
    the connection type, so that each subclass keeps its own connection's type: mypyc does not let a
    subclass narrow an attribute's declared type).

    Reading: while the router has reading paused, received DATA is not acknowledged (`unacked` counts it), so
    the peer's flow-control window closes; resuming acknowledges it and the peer may send again.
    Writing: while the stream's send window or the connection's socket is full, `producer_changed(True)`
    asks whoever feeds the stream to stop; `producer_changed(False)` when it can take more again.
    """

    __slots__ = ("producer_paused", "read_paused", "unacked", "write_blocked")
    connection: _C
    stream_id: int
    read_paused: bool
    unacked: int
    write_blocked: bool  # queued DATA waits for a WINDOW_UPDATE
    producer_paused: bool

    def producer_changed(self, paused: bool) -> None:
        raise NotImplementedError

    def update_producer(self) -> None:
        paused = self.write_blocked or self.connection.write_paused
        if paused is not self.producer_paused:
            self.producer_paused = paused
            self.producer_changed(paused)

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if self.unacked:
                unacked, self.unacked = self.unacked, 0
                self.connection.acknowledge(self.stream_id, unacked)


def update_producers(streams: Iterable[StreamFlow[_C]]) -> None:
    """The connection's socket filled up or drained (asyncio pause_writing / resume_writing): every stream
    pauses or resumes whoever feeds it."""
    for stream in list(streams):
        stream.update_producer()


class OutboundBody:
    """A message body waiting to go out on one stream as flow control allows (RFC 9113 §5.2).

    `push` queues data, `finish` marks the end (with optional trailers); `drain` sends what the stream and
    connection windows allow and says whether data is left waiting for a WINDOW_UPDATE.
    """

    __slots__ = ("chunks", "ended", "finished", "offset", "size", "trailers")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # bytes of chunks[0] already sent
        self.size = 0
        self.finished = False  # the end (and trailers) were requested
        self.ended = False  # END_STREAM was sent
        self.trailers: Headers | None = None

    def __repr__(self) -> str:
        return f"<OutboundBody queued={self.size} finished={self.finished} ended={self.ended}>"

    def push(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def finish(self, trailers: Headers | None = None) -> None:
        self.finished = True
        self.trailers = trailers

    def drain(self, conn: H2Codec, stream_id: int) -> bool:
        """Send queued DATA (END_STREAM on the last frame), then trailers. True if blocked by flow control."""
        chunks = self.chunks
        while chunks:
            window = conn.local_flow_control_window(stream_id)
            if window <= 0:
                return True
            limit = conn.max_outbound_frame_size
            if window > limit:
                window = limit
            chunk = chunks[0]
            offset = self.offset
            remaining = len(chunk) - offset
            if remaining > window:
                # a memoryview slice: a large chunk is cut into frames without copying its tail each time
                conn.send_data(stream_id, memoryview(chunk)[offset : offset + window])
                self.offset = offset + window
                self.size -= window
                continue
            chunks.popleft()
            self.offset = 0
            self.size -= remaining
            last = not chunks and self.finished and self.trailers is None
            conn.send_data(stream_id, chunk if offset == 0 else memoryview(chunk)[offset:], end_stream=last)
            if last:
                self.ended = True
                return False
        if self.finished and not self.ended:
            self.ended = True
            if self.trailers is not None:
                conn.send_headers(stream_id, self.trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)
        return False
