"""An h2c (HTTP/2 prior knowledge) application for the e2e tests, built on the h2 library as a Protocol.

It stands in for a virtual node whose listener protocol is http2: every request is answered 200 with a JSON
echo of what it saw (`{"name", "protocol", "method", "path", "authority", "headers", "body_bytes"}`) and the
`x-app-name` header. Special paths:

- `/status/<code>`: that status, empty body.
- `/bytes/<n>`: n bytes of body, sent as the client's flow-control windows allow (a slow reader slows it).
- `/trailers`: a small body, then trailers `x-trailer: yes`.

`refuse_first(n)` answers the next n streams with RST_STREAM REFUSED_STREAM; `goaway()` sends a GOAWAY on
every open connection. Counters (`requests`, `connections`, `max_concurrent`) are read from the test thread.
The app runs on an `AppLoop` (tests/e2e/apps.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error

APP_NAME_HEADER = b"x-app-name"


class H2App:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.server: asyncio.Server | None = None
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.active = 0
        self.max_concurrent = 0
        self.refuse_budget = 0
        self.protocols: set[H2AppConnection] = set()

    def __repr__(self) -> str:
        return f"<H2App {self.name} port={self.port} requests={self.requests} connections={self.connections}>"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: H2AppConnection(self), "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for connection in list(self.protocols):
                if connection.transport is not None:
                    connection.transport.abort()
            self.server = None

    def reset(self) -> None:
        with self.lock:
            self.requests = self.connections = self.max_concurrent = self.refuse_budget = 0

    def refuse_first(self, count: int) -> None:
        with self.lock:
            self.refuse_budget = count

    async def pending_bytes(self) -> int:
        """Response bytes still waiting for the proxy to open its flow-control windows."""
        return sum(len(body) for c in self.protocols for body, _ in c.pending.values())

    async def goaway(self) -> None:
        for connection in list(self.protocols):
            connection.send_goaway()


class H2AppConnection(asyncio.Protocol):
    def __init__(self, app: H2App) -> None:
        self.app = app
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, dict[str, Any]] = {}
        self.pending: dict[int, tuple[bytes, list[tuple[bytes, bytes]] | None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.app.protocols.add(self)
        with self.app.lock:
            self.app.connections += 1
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.protocols.discard(self)
        with self.app.lock:
            self.app.active -= len(self.requests)
        self.transport = None

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def send_goaway(self) -> None:
        self.conn.close_connection(last_stream_id=self.conn.highest_inbound_stream_id)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, DataReceived):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request["body_bytes"] += len(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, WindowUpdated):
                for sid in list(self.pending):
                    self._send_pending(sid)
            elif isinstance(event, StreamReset):
                if self.requests.pop(event.stream_id, None) is not None:
                    with self.app.lock:
                        self.app.active -= 1
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                pass
        self.flush()

    def _on_request(self, event: RequestReceived) -> None:
        app = self.app
        with app.lock:
            refuse = app.refuse_budget > 0
            if refuse:
                app.refuse_budget -= 1
            app.requests += 1
        if refuse:
            self.conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
            return
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        for name, value in cast(list[tuple[bytes, bytes]], event.headers):
            key, text = name.decode(), value.decode("latin-1")
            if key.startswith(":"):
                pseudo[key] = text
            else:
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        with app.lock:
            app.active += 1
            app.max_concurrent = max(app.max_concurrent, app.active)
        self.requests[event.stream_id] = {
            "name": app.name,
            "protocol": "HTTP/2",
            "method": pseudo.get(":method"),
            "path": pseudo.get(":path"),
            "authority": pseudo.get(":authority"),
            "headers": headers,
            "body_bytes": 0,
        }

    def _respond(self, sid: int) -> None:
        request = self.requests.pop(sid, None)
        if request is None:
            return
        with self.app.lock:
            self.app.active -= 1
        path = str(request["path"] or "/")
        status = 200
        trailers: list[tuple[bytes, bytes]] | None = None
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
            body = b""
        elif path.startswith("/bytes/"):
            body = b"x" * int(path.split("/")[2])
        elif path == "/trailers":
            body = b"with trailers"
            trailers = [(b"x-trailer", b"yes")]
        else:
            body = json.dumps(request).encode()
        headers = [
            (b":status", str(status).encode()),
            (b"content-type", b"application/json"),
            (APP_NAME_HEADER, self.app.name.encode()),
        ]
        if trailers is None:
            headers.append((b"content-length", str(len(body)).encode()))
        self.conn.send_headers(sid, headers, end_stream=not body and trailers is None)
        if body or trailers is not None:
            self.pending[sid] = (body, trailers)
            self._send_pending(sid)

    def _send_pending(self, sid: int) -> None:
        body, trailers = self.pending[sid]
        view, offset = memoryview(body), 0  # slices of a view: no copy of the rest per frame
        try:
            while offset < len(body):
                window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                if window <= 0:
                    self.pending[sid] = (body[offset:], trailers)
                    return
                chunk = view[offset : offset + window]
                offset += len(chunk)
                self.conn.send_data(sid, chunk, end_stream=offset == len(body) and trailers is None)
            if trailers is not None:
                self.conn.send_headers(sid, trailers, end_stream=True)
        except H2Error:
            pass
        self.pending.pop(sid, None)
