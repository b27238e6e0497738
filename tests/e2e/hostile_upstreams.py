"""Upstreams for the hostile-input tests (tests/e2e/test_h2_hostile.py), on an `AppLoop`.

- `RecordingUpstream`: HTTP/1.1, keeps every byte the proxy writes (`raw`) and parses them with h11 (the
  reference parser) to list the requests it would serve, answering each 200; it shows whether anything a
  client sent became an extra header line or an extra request.
- `HostileH2Upstream`: h2c, answers each request with the malformed response its path names (the h2
  library with outbound validation off, so it sends what it is told), to check the proxy passes none on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import h11
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived, StreamEnded
from h2.exceptions import H2Error


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class RecordingUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.raw = b""
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None

    def reset(self) -> None:
        self.raw = b""
        self.requests = []
        self.errors = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while data := await reader.read(65536):
                self.raw += data
                conn.receive_data(data)
                while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.Request):
                        request, body = event, b""
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage) and request is not None:
                        headers = [(bytes(n), bytes(v)) for n, v in request.headers]
                        self.requests.append(RecordedRequest(request.method, request.target, headers, body))
                        answer = h11.Response(status_code=200, headers=[("content-length", "2")])
                        writer.write(
                            conn.send(answer)
                            + conn.send(h11.Data(data=b"ok"))
                            + conn.send(h11.EndOfMessage())
                        )
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
        except h11.ProtocolError as exc:
            self.errors.append(repr(exc))
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


# path -> (headers after :status, DATA frames, trailers)
Answer = tuple[list[tuple[bytes, bytes]], list[bytes], list[tuple[bytes, bytes]] | None]

HOSTILE_ANSWERS: dict[str, Answer] = {
    "/ok": ([(b"content-length", b"2")], [b"ok"], None),
    "/cl-longer": (
        [(b"content-length", b"2")],
        [b"ok" + b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsmuggle"],
        None,
    ),
    "/cl-shorter": ([(b"content-length", b"100")], [b"short"], None),
    "/cl-without-data": ([(b"content-length", b"7")], [], None),
    "/crlf-value": ([(b"x-a", b"1\r\nX-Injected: yes"), (b"content-length", b"2")], [b"ok"], None),
    "/uppercase-name": ([(b"X-Upper", b"1"), (b"content-length", b"2")], [b"ok"], None),
    "/connection-field": ([(b"connection", b"close"), (b"content-length", b"2")], [b"ok"], None),
    "/transfer-encoding": ([(b"transfer-encoding", b"chunked")], [b"2\r\nok\r\n0\r\n\r\n"], None),
    "/pseudo-in-trailers": ([], [b"ok"], [(b":status", b"200")]),
    "/crlf-in-trailers": ([], [b"ok"], [(b"x-t", b"1\r\nX-Injected: yes")]),
}


class HostileH2Upstream:
    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HostileConnection(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _HostileConnection(asyncio.Protocol):
    def __init__(self, app: HostileH2Upstream) -> None:
        self.app = app
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.paths: dict[int, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error:
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.paths[event.stream_id] = dict(event.headers).get(b":path", b"/").decode()
            elif isinstance(event, StreamEnded):
                self._answer(event.stream_id)
        if self.transport is not None:
            self.transport.write(self.conn.data_to_send())

    def _answer(self, sid: int) -> None:
        self.app.requests += 1
        headers, frames, trailers = HOSTILE_ANSWERS[self.paths.pop(sid, "/ok")]
        last = not frames and trailers is None
        self.conn.send_headers(sid, [(b":status", b"200"), *headers], end_stream=last)
        for i, chunk in enumerate(frames):
            self.conn.send_data(sid, chunk, end_stream=i == len(frames) - 1 and trailers is None)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
