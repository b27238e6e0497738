"""A small blocking h2c (prior knowledge) client on the h2 library, for what curl cannot show: trailers,
GOAWAY, flow control under a slow reader, raw header blocks. Every read is bounded by a deadline."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes


@dataclass
class H2Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset_code: int | None = None
    ended: bool = False

    def __repr__(self) -> str:
        return (
            f"<H2Response {self.status} headers={self.headers} body={self.body[:200]!r} "
            f"trailers={self.trailers} reset={self.reset_code}>"
        )


def _text(block: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {n.decode(): v.decode("latin-1") for n, v in block}


class H2Client:
    def __init__(self, port: int, *, window: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        config = H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
        self.conn = H2Connection(config)
        self.auto_ack = True
        # Large frames: a pure-Python client is then not the bottleneck of a bulk transfer.
        settings = {SettingCodes.MAX_FRAME_SIZE: 1 << 20}
        if window is not None:
            settings[SettingCodes.INITIAL_WINDOW_SIZE] = window
        self.conn.local_settings.update(settings)
        self.conn.local_settings.acknowledge()  # in force at once: the preface SETTINGS carries them
        self.conn.max_inbound_frame_size = 1 << 20
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.responses: dict[int, H2Response] = {}
        self.goaway: ConnectionTerminated | None = None
        self.closed = False
        self.unacked: dict[int, int] = {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        path: str,
        authority: str,
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        protocol: str | None = None,
    ) -> int:
        """Open a stream; `protocol` adds RFC 8441's `:protocol` pseudo-header (extended CONNECT)."""
        sid = self.conn.get_next_available_stream_id()
        block = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        if protocol is not None:
            block.append((b":protocol", protocol.encode()))
        block += [(n.encode(), v.encode()) for n, v in headers or []]
        self.conn.send_headers(sid, block, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        self.responses[sid] = H2Response()
        return sid

    def pump(self, timeout: float = 0.2) -> list[Event]:
        """Read once (up to `timeout`) and process what arrived."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, BlockingIOError):
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            sid = getattr(event, "stream_id", None)
            response = self.responses.get(sid) if sid else None
            if isinstance(event, ResponseReceived) and response is not None:
                block = _text(event.headers)
                response.status = int(block.pop(":status"))
                response.headers = block
            elif isinstance(event, DataReceived) and response is not None:
                response.body += event.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                else:
                    self.unacked[event.stream_id] = (
                        self.unacked.get(event.stream_id, 0) + event.flow_controlled_length
                    )
            elif isinstance(event, TrailersReceived) and response is not None:
                response.trailers = _text(event.headers)
            elif isinstance(event, StreamEnded) and response is not None:
                response.ended = True
            elif isinstance(event, StreamReset) and response is not None:
                response.reset_code = int(event.error_code or 0)
                response.ended = True
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)
        return events

    def ack_all(self, grow_window: int = 0) -> None:
        """Acknowledge what was held back; `grow_window` also opens the windows by that many bytes."""
        for sid, length in self.unacked.items():
            self.conn.acknowledge_received_data(length, sid)
            if grow_window:
                self.conn.increment_flow_control_window(grow_window, stream_id=sid)
        if grow_window:
            self.conn.increment_flow_control_window(grow_window)
        self.unacked = {}
        self.sock.sendall(self.conn.data_to_send())

    def wait(self, sid: int, timeout: float = 10.0) -> H2Response:
        deadline = time.monotonic() + timeout
        response = self.responses[sid]
        while not response.ended and not self.closed and time.monotonic() < deadline:
            self.pump()
        return response

    def request(self, path: str, authority: str, **kwargs: object) -> H2Response:
        return self.wait(self.start(path, authority, **kwargs))  # type: ignore[arg-type]
