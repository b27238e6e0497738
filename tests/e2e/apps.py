"""Upstream applications the e2e tests put behind the proxy.

All apps of a test module run on one event loop in a daemon thread (`AppLoop`), so tests can use blocking
clients (http.client, raw sockets, curl) while the apps answer. `ColourApp` is an aiohttp app standing in for
a virtual node's application: it answers with its name and the request it saw, counts requests, body bytes and
distinct client connections, and has failure modes the test thread arms with `configure`. `TunnelEcho` answers
an `Upgrade` request with 101 and then echoes every byte, as a WebSocket server does after its handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

# The header every ColourApp response carries, so a test can tell which upstream answered even for bodiless
# responses (HEAD, 204, 304).
APP_NAME_HEADER = "x-app-name"


class AppLoop:
    """An event loop in a daemon thread that hosts the upstream apps of one test module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stoppers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-apps", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the apps' loop and wait (bounded) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def colour_app(self, name: str, *, dual_stack: bool = False) -> ColourApp:
        """Start a `ColourApp` on its own loopback port (and on [::1] at the same port when `dual_stack`)."""
        app = ColourApp(name)
        self.call(app.start(dual_stack=dual_stack))
        self._stoppers.append(app.stop)
        return app

    def tunnel_echo(self, name: str) -> TunnelEcho:
        server = TunnelEcho(name)
        self.call(server.start())
        self._stoppers.append(server.stop)
        return server

    def close(self) -> None:
        for stop in reversed(self._stoppers):
            with contextlib.suppress(Exception):
                self.call(stop(), timeout=5.0)
        with contextlib.suppress(Exception):
            self.call(_cancel_other_tasks(), timeout=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the upstream app saw it. Header names lower-cased; repeats joined by ", "."""

    method: str
    path: str  # the request target as received (path and query)
    headers: dict[str, str]
    peer: str  # "<ip>:<port>" of the client connection (the proxy's upstream connection)
    body_bytes: int


def _headers_of(request: web.BaseRequest) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class ColourApp:
    """A virtual node's application: answers its `name` and echoes what it saw as JSON.

    Routes: `/ws` is a WebSocket echo; `/status/<code>` answers that status (no body for 1xx/204/304); every
    other path answers 200 with `{"name", "method", "path", "headers", "body_bytes", "peer"}`. The request
    body is always read and counted, never kept. Failure modes, armed with `configure`, apply to the next
    requests in this order: close the connection without a response, answer `fail_status`, delay; and a random
    share of the requests can fail.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.requests = 0
        self.in_flight = 0
        self.peers: set[str] = set()
        self.seen: list[SeenRequest] = []
        self._close_budget = 0
        self._fail_budget = 0
        self._fail_status = 503
        self._delay_budget = 0
        self._delay_s = 0.0
        self._fail_probability = 0.0
        self._rng = random.Random(0)

    def __repr__(self) -> str:
        return f"<ColourApp {self.name} port={self.port} requests={self.requests} peers={len(self.peers)}>"

    def reset(self) -> None:
        """Forget counters and disarm every failure mode."""
        with self._lock:
            self.requests = 0
            self.peers = set()
            self.seen = []
            self._close_budget = self._fail_budget = self._delay_budget = 0
            self._fail_status = 503
            self._delay_s = 0.0
            self._fail_probability = 0.0

    def configure(
        self,
        *,
        close_first: int = 0,
        fail_first: int = 0,
        fail_status: int = 503,
        delay_s: float = 0.0,
        delay_first: int = 1_000_000,
        fail_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Arm failure modes for the next requests.

        `close_first`: close the connection without a response for the next N requests. `fail_first`: then
        answer `fail_status` for the next N. `delay_s`: sleep that long before answering, for the next
        `delay_first` requests (default: all of them). `fail_probability`: after those, answer `fail_status`
        to each request with this probability (a random sequence fixed by `seed`).
        """
        with self._lock:
            self._close_budget = close_first
            self._fail_budget = fail_first
            self._fail_status = fail_status
            self._delay_s = delay_s
            self._delay_budget = delay_first if delay_s > 0 else 0
            self._fail_probability = fail_probability
            self._rng = random.Random(seed)

    @property
    def last(self) -> SeenRequest:
        with self._lock:
            return self.seen[-1]

    async def start(self, *, dual_stack: bool = False) -> None:
        app = web.Application()
        app.router.add_route("GET", "/ws", self._websocket)
        app.router.add_route("*", "/status/{code:[0-9]{3}}", self._status)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # access_log=None: no per-request logging on the apps' loop; a short shutdown so teardown is bounded.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if dual_stack:
            # A hostname such as "localhost" may resolve to ::1 first; serve the same port there too.
            with contextlib.suppress(OSError):
                await web.TCPSite(self._runner, "::1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _admit(self, request: web.BaseRequest) -> tuple[str, float]:
        """Count and record the request, read its body; return the action to take and the delay."""
        body_bytes = 0
        async for chunk in request.content.iter_any():
            body_bytes += len(chunk)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        seen = SeenRequest(request.method, request.raw_path, _headers_of(request), peer, body_bytes)
        with self._lock:
            self.requests += 1
            self.peers.add(peer)
            self.seen.append(seen)
            delay = 0.0
            if self._delay_budget > 0:
                self._delay_budget -= 1
                delay = self._delay_s
            if self._close_budget > 0:
                self._close_budget -= 1
                return "close", delay
            if self._fail_budget > 0:
                self._fail_budget -= 1
                return "fail", delay
            if self._fail_probability and self._rng.random() < self._fail_probability:
                return "fail", delay
            return "answer", delay

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            action, delay = await self._admit(request)
            if delay:
                await asyncio.sleep(delay)
            if action == "close":
                return self._close_without_response(request)
            if action == "fail":
                return web.Response(
                    status=self._fail_status,
                    text=f"{self.name} failing\n",
                    headers={APP_NAME_HEADER: self.name},
                )
            seen = self.last
            document = {
                "name": self.name,
                "method": seen.method,
                "path": seen.path,
                "headers": seen.headers,
                "body_bytes": seen.body_bytes,
                "peer": seen.peer,
            }
            return web.Response(
                text=json.dumps(document),
                content_type="application/json",
                headers={APP_NAME_HEADER: self.name},
            )
        finally:
            self.in_flight -= 1

    def _close_without_response(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp cannot write to the closed transport; raising here makes it drop the request quietly.
        raise asyncio.CancelledError

    async def _status(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        code = int(request.match_info["code"])
        headers = {APP_NAME_HEADER: self.name}
        if code in (204, 304) or code < 200:
            return web.Response(status=code, headers=headers)
        return web.Response(status=code, text=f"{self.name} says {code}\n", headers=headers)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("upgrade", "").lower() != "websocket":
            return await self._handle(request)
        await self._admit(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == web.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


class TunnelEcho:
    """A raw upstream: answers a request carrying `Upgrade` with 101, then echoes bytes until EOF.

    Without `Upgrade` it answers 400. `heads` keeps each request head as received, to check what the proxy
    forwarded; `open_connections` shows whether the proxy closed its side once the client went away.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.heads: list[bytes] = []
        self.echoed_bytes = 0
        self.open_connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if b"\nupgrade:" not in head.lower():
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                await writer.drain()
                return
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"{APP_NAME_HEADER}: {self.name}\r\n\r\n".encode()
            )
            await writer.drain()
            while data := await reader.read(65536):
                self.echoed_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class InstanceApps:
    """One aiohttp app per Cloud Map instance, each on its own loopback address and the same port; each
    answers its instance name. `/health` answers 503 for the instances in `failing` (and for a probe that
    does not say `User-Agent: Envoy/HC`), and is counted in `checks`."""

    def __init__(self, loop: AppLoop, port: int) -> None:
        self.loop = loop
        self.port = port
        self.runners: list[web.AppRunner] = []
        self.hits: dict[str, int] = {}
        self.checks: dict[str, int] = {}
        self.failing: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<InstanceApps port={self.port} hits={self.hits} checks={self.checks}>"

    def start(self, instance: str, address: str) -> None:
        async def answer(request: web.Request) -> web.Response:
            if request.path == "/health":
                with self._lock:
                    self.checks[instance] = self.checks.get(instance, 0) + 1
                passed = instance not in self.failing and request.headers.get("user-agent") == "Envoy/HC"
                return web.Response(status=200 if passed else 503, text=instance)
            with self._lock:
                self.hits[instance] = self.hits.get(instance, 0) + 1
            return web.Response(text=instance, headers={APP_NAME_HEADER: instance})

        async def run() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, address, self.port).start()
            self.runners.append(runner)

        self.loop.call(run())

    def stop(self) -> None:
        for runner in self.runners:
            self.loop.call(runner.cleanup())
