"""One multiplexed HTTP/2 connection (h2c, prior knowledge) to an upstream host.

`H2UpstreamConnection` is a `PooledConnection` with room for as many streams as the peer's
SETTINGS_MAX_CONCURRENT_STREAMS allows (spec §4.2 connectionPool `http2`/`grpc`: `maxRequests`); its streams
are `H2UpstreamStream`s (upstream/h2_stream.py). Marked streams are sent at the next flush, which ends with
one `transport.write` for all of them.

A stream the server refuses (RST_STREAM REFUSED_STREAM, or above the last stream id of its GOAWAY) was not
processed: the router sees `AttemptFailure.REFUSED_STREAM` (App Mesh `stream-error`). Other resets and lost
connections are `AttemptFailure.RESET`. A WebSocket `Upgrade` cannot travel over an HTTP/2 stream here: it
is answered 501 with a message instead of App Mesh's 503 UC (user-expectations #465).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import cast

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.events import Event as H2Event
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.h2_flow import update_producers
from meshproxy.codec.h2_messages import h2_trailers, response_head_from_h2
from meshproxy.core.clock import Clock
from meshproxy.core.events import END, Data, EndOfMessage
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.h2_stream import H2StreamState, H2UpstreamStream
from meshproxy.upstream.ports import ConnectionOwner, PooledConnection, Upstream

log = logging.getLogger("meshproxy.upstream")

STREAMS_PER_CONNECTION = h2_codec.ASSUMED_PEER_MAX_STREAMS  # what the pool expects one connection to take


class H2ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    DRAINING = "draining"  # GOAWAY received or pool shut down: streams finish, no new ones
    CLOSED = "closed"


class H2UpstreamConnection(asyncio.Protocol, PooledConnection):
    __slots__ = (
        "clock",
        "dirty",
        "flush_scheduled",
        "h2",
        "idle_since",
        "in_batch",
        "owner",
        "requests",
        "settings_received",
        "state",
        "streams",
        "streams_active",
        "transport",
        "write_paused",
    )  # fmt: skip

    def __init__(self, owner: ConnectionOwner, clock: Clock) -> None:
        self.owner = owner
        self.clock = clock
        self.h2 = h2_codec.new_connection(client_side=True)
        self.transport: asyncio.Transport | None = None
        self.state = H2ConnectionState.CONNECTING
        self.streams: dict[int, H2UpstreamStream] = {}
        self.streams_active = 0  # streams handed out and not finished (reserved ones included)
        self.requests = 0
        self.idle_since = clock.now()
        self.settings_received = False
        self.dirty: list[H2UpstreamStream] = []
        self.flush_scheduled = False
        self.in_batch = False
        self.write_paused = False

    def __repr__(self) -> str:
        return (
            f"<H2UpstreamConnection {self.owner.label} {self.state.value} active={self.streams_active} "
            f"requests={self.requests}>"
        )

    @property
    def stats(self) -> ClusterStats:
        return self.owner.stats

    @property
    def label(self) -> str:
        return self.owner.label

    # ---------------------------------------------------------------- PooledConnection
    @property
    def active(self) -> int:
        return self.streams_active

    @property
    def max_streams(self) -> int:
        if not self.settings_received:
            return h2_codec.ASSUMED_PEER_MAX_STREAMS
        return int(self.h2.remote_settings.max_concurrent_streams)

    def connected(self) -> None:
        self.state = H2ConnectionState.READY
        self.owner.on_capacity(self)

    def has_capacity(self) -> bool:
        return self.state is H2ConnectionState.READY and self.streams_active < self.max_streams

    def new_stream(self) -> Upstream:
        self.streams_active += 1
        self.requests += 1
        return H2UpstreamStream(self)

    def drain(self) -> None:
        """No new streams; close once the current ones are done."""
        if self.state is H2ConnectionState.CLOSED:
            return
        self.state = H2ConnectionState.DRAINING
        if self.streams_active == 0:
            self.close()

    def close(self) -> None:
        if self.state is H2ConnectionState.CLOSED:
            return
        self.state = H2ConnectionState.CLOSED
        with contextlib.suppress(H2Error):
            self.h2.close_connection()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.h2.initiate_connection()
        h2_codec.open_connection_window(self.h2)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.owner.stats.upstream_cx_rx_bytes_total += len(data)
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            log.debug("%r: HTTP/2 protocol error: %s", self, exc)
            self.flush()  # the codec queued a GOAWAY
            self._abandon(AttemptFailure.RESET)
            return
        touched: list[H2UpstreamStream] = []
        self.in_batch = True
        try:
            for event in events:
                self._on_event(event, touched)
            for stream in touched:
                stream.deliver()
        finally:
            self.in_batch = False
        self.flush()

    def _on_event(self, event: H2Event, touched: list[H2UpstreamStream]) -> None:
        streams = self.streams
        if isinstance(event, DataReceived):
            stream = streams.get(event.stream_id)
            if stream is None:
                if event.flow_controlled_length:
                    self.acknowledge(event.stream_id, event.flow_controlled_length)
                return
            if not stream.rx:
                touched.append(stream)
            stream.rx.append(Data(event.data))
            stream.rx_length += event.flow_controlled_length
        elif isinstance(event, ResponseReceived):
            stream = streams.get(event.stream_id)
            if stream is None:
                return
            head = response_head_from_h2(event.headers, event.stream_ended is not None, stream.head_request)
            if head is None:
                self._stream_error(stream, ErrorCodes.PROTOCOL_ERROR)
                return
            if not stream.rx:
                touched.append(stream)
            stream.rx.append(head)
        elif isinstance(event, StreamEnded | TrailersReceived):
            stream = streams.get(event.stream_id)
            if stream is None or stream.response_ended:
                return
            stream.response_ended = True
            if not stream.rx:
                touched.append(stream)
            trailers = event.headers if isinstance(event, TrailersReceived) else None
            stream.rx.append(END if trailers is None else EndOfMessage(h2_trailers(trailers)))
        elif isinstance(event, WindowUpdated):
            self._on_window_update(event.stream_id or 0)
        elif isinstance(event, StreamReset):
            self._on_reset(event.stream_id, event.error_code)
        elif isinstance(event, RemoteSettingsChanged):
            self._on_settings(event)
        elif isinstance(event, ConnectionTerminated):
            self._on_goaway(event.last_stream_id or 0, event.error_code)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = H2ConnectionState.CLOSED
        self.transport = None
        self._fail_streams(AttemptFailure.RESET)
        self.owner.on_connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        update_producers(self.streams.values())

    def resume_writing(self) -> None:
        self.write_paused = False
        update_producers(self.streams.values())

    # ---------------------------------------------------------------- events
    def _on_window_update(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None and stream.write_blocked:
                self.mark_dirty(stream)
            return
        for stream in self.streams.values():
            if stream.write_blocked:
                self.mark_dirty(stream)

    def _on_reset(self, sid: int, error_code: object) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        if stream.rx:
            stream.deliver()
        if not stream.response_ended:
            refused = error_code == ErrorCodes.REFUSED_STREAM
            stream.lost(AttemptFailure.REFUSED_STREAM if refused else AttemptFailure.RESET)
        else:
            stream.body.ended = True  # the server needs no more of the request

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self.settings_received = True
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._on_window_update(0)
        if self.has_capacity():
            self.owner.on_capacity(self)  # the stream limit may have grown

    def _on_goaway(self, last_stream_id: int, error_code: object) -> None:
        """The server is going away: streams above `last_stream_id` were not processed (retry-safe)."""
        log.debug("%r: GOAWAY last_stream_id=%s error=%s", self, last_stream_id, error_code)
        if self.state is H2ConnectionState.READY or self.state is H2ConnectionState.CONNECTING:
            self.state = H2ConnectionState.DRAINING
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id:
                del self.streams[sid]
                stream.lost(AttemptFailure.REFUSED_STREAM)
        for stream in self.dirty:
            if stream.stream_id == 0:
                stream.lost(AttemptFailure.REFUSED_STREAM)
        self.dirty = [s for s in self.dirty if s.state is not H2StreamState.CLOSED]
        if self.streams_active == 0:
            self.close()  # nothing left to finish on it

    def _stream_error(self, stream: H2UpstreamStream, code: ErrorCodes) -> None:
        self.streams.pop(stream.stream_id, None)
        stream.reset(code)
        stream.lost(AttemptFailure.RESET)

    # ---------------------------------------------------------------- StreamCarrier (called by the streams)
    def call_soon_refusal(self, stream: H2UpstreamStream) -> None:
        self.clock.call_soon(stream.refuse_upgrade)

    def mark_dirty(self, stream: H2UpstreamStream) -> None:
        if not stream.dirty:
            stream.dirty = True
            self.dirty.append(stream)
        self.schedule_flush()

    def acknowledge(self, sid: int, length: int) -> None:
        try:
            self.h2.acknowledge_received_data(length, sid)
        except H2Error:
            return
        self.schedule_flush()

    def stream_finished(self, stream: H2UpstreamStream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self.streams_active -= 1
        if self.streams_active == 0:
            self.idle_since = self.clock.now()
            if self.state is H2ConnectionState.DRAINING:
                self.close()
                return
        if self.has_capacity():
            self.owner.on_capacity(self)

    def schedule_flush(self) -> None:
        if self.in_batch or self.flush_scheduled:
            return
        self.flush_scheduled = True
        self.clock.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for stream in dirty:
                stream.dirty = False
                stream.send()
        transport = self.transport
        if transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.owner.stats.upstream_cx_tx_bytes_total += len(data)
            transport.write(data)

    # ---------------------------------------------------------------- endings
    def _fail_streams(self, failure: AttemptFailure) -> None:
        streams = list(self.streams.values())
        streams += [s for s in self.dirty if s.stream_id == 0]
        self.streams.clear()
        self.dirty = []
        for stream in streams:
            if stream.state is not H2StreamState.CLOSED:
                stream.lost(failure)

    def _abandon(self, failure: AttemptFailure) -> None:
        self.state = H2ConnectionState.CLOSED
        self._fail_streams(failure)
        if self.transport is not None:
            self.transport.close()
