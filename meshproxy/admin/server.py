"""The Envoy-compatible admin interface (default 0.0.0.0:9901, spec §3).

It is served with the proxy's own HTTP/1.1 codec rather than a web framework: the handful of endpoints do
not need one, and aiohttp's server alone would add about 25 MB to every proxy process (bench/RESULTS.md).

Health checks in the wild run `curl -s http://localhost:9901/server_info | grep state | grep -q LIVE`, so
`/server_info` prints `"state": "LIVE"` on a line of its own, and only once the first snapshot is applied and
the listeners are bound. Mutations are POST-only; the same path with GET changes nothing and answers 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO, cast
from urllib.parse import parse_qsl

from meshproxy import __version__
from meshproxy.codec.h1 import ProtocolError
from meshproxy.codec.h1_httptools import HttptoolsServerCodec
from meshproxy.codec.h1_wire import encode_headers, reason_phrase
from meshproxy.codec.headers import HTTP_DATE
from meshproxy.core.events import Data, EndOfMessage, RequestHead
from meshproxy.dataplane import Dataplane, ServerState
from meshproxy.net.listen import Acceptor, listening_socket
from meshproxy.telemetry.errors import StatsFilterError
from meshproxy.telemetry.hub import PROMETHEUS_CONTENT_TYPE
from meshproxy.telemetry.stats import StatsStore
from meshproxy.upstream.cluster import ClusterManager

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.admin")

Query = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=UTF-8"

    @classmethod
    def text(cls, text: str, status: int = 200) -> AdminResponse:
        return cls(status, text.encode())

    @classmethod
    def json(cls, value: object, status: int = 200, indent: int | None = None) -> AdminResponse:
        return cls(status, (json.dumps(value, indent=indent) + "\n").encode(), b"application/json")


Handler = Callable[[Query], Awaitable[AdminResponse]]
_OK = AdminResponse(200, b"OK\n")
_MAX_ADMIN_REQUEST_BODY = 64 * 1024


class StatsRenderer(Protocol):
    def render_prometheus(self) -> bytes: ...

    def render_stats_text(self, filter: str | None = None, usedonly: bool = False) -> str: ...

    def render_stats_json(self) -> dict[str, object]: ...


class Lifecycle(Protocol):
    """What the admin endpoints ask the server to do."""

    def drain(self, inbound_only: bool, exit_after: bool) -> None: ...

    def quit(self) -> None: ...

    def listeners(self) -> list[HttpListener]: ...

    async def config_dump(self, envoy: bool) -> dict[str, object]:
        """Envoy's ConfigDump shape (`envoy`), or meshproxy's own view of the compiled snapshot."""
        ...

    async def refresh_stats(self) -> None:
        """Bring the stats the renderers read up to date (totals across worker processes)."""
        ...

    async def cluster_status(self, as_json: bool) -> str | dict[str, object]: ...

    def reset_counters(self) -> None: ...

    async def worker_status(self) -> list[dict[str, object]]:
        """One entry per worker process (the process itself when ENVOY_CONCURRENCY is 1)."""
        ...


def cluster_status(clusters: ClusterManager, as_json: bool) -> str | dict[str, object]:
    """Envoy's /clusters: `<cluster>::<host>::<stat>::<value>` lines, or `?format=json`."""
    lines: list[str] = []
    records: list[dict[str, object]] = []
    for name, runtime in sorted(clusters.clusters.items()):
        limits = runtime.config.limits
        lines.append(f"{name}::observability_name::{name}")
        for key, value in (
            ("max_connections", limits.max_connections),
            ("max_pending_requests", limits.max_pending_requests),
            ("max_requests", limits.max_requests),
            ("max_retries", 2147483647),
        ):
            lines.append(f"{name}::default_priority::{key}::{value}")
        lines.append(f"{name}::added_via_api::true")
        hosts: list[dict[str, object]] = []
        for host in runtime.hosts:
            prefix = f"{name}::{host.label}::"
            values: list[tuple[str, object]] = [
                ("cx_active", host.cx_active),
                ("cx_connect_fail", host.cx_connect_fail),
                ("cx_total", host.cx_total),
                ("rq_active", host.rq_active),
                ("rq_error", host.rq_error),
                ("rq_success", host.rq_success),
                ("rq_timeout", host.rq_timeout),
                ("rq_total", host.rq_total),
                ("hostname", host.address),
                ("health_flags", host.health_flags),
                ("weight", host.weight),
            ]
            lines.extend(f"{prefix}{k}::{v}" for k, v in values)
            hosts.append({"address": host.label, **dict(values)})
        records.append({"name": name, "host_statuses": hosts})
    if as_json:
        return {"cluster_statuses": records}
    return "\n".join(lines) + "\n"


def worker_entry(index: int, pid: int | None, state: str, store: StatsStore | None) -> dict[str, object]:
    """A /workers entry: its identity and how many connections and requests it has taken."""
    connections = sum(s.downstream_cx_total for s in store.listeners.values()) if store is not None else 0
    requests = sum(s.downstream_rq_total for s in store.http.values()) if store is not None else 0
    return {"index": index, "pid": pid, "state": state, "downstream_cx_total": connections,
            "downstream_rq_total": requests}  # fmt: skip


def _format_uptime(seconds: float) -> str:
    return f"{int(seconds)}s"


class AdminServer:
    def __init__(
        self, dataplane: Dataplane, stats: StatsRenderer, lifecycle: Lifecycle, address: str, port: int
    ) -> None:
        self.dataplane = dataplane
        self.stats = stats
        self.lifecycle = lifecycle
        self.address = address
        self.port = port
        self._acceptor: Acceptor | None = None
        self.connections: set[AdminConnection] = set()
        self.access_log = AdminAccessLog(dataplane.settings.admin_access_log)
        self.get: dict[str, Handler] = {
            "/": self.help,
            "/help": self.help,
            "/server_info": self.server_info,
            "/ready": self.ready,
            "/stats": self.stats_handler,
            "/stats/prometheus": self.prometheus,
            "/config_dump": self.config_dump,
            "/clusters": self.clusters,
            "/listeners": self.listeners,
            "/runtime": self.runtime,
            "/memory": self.memory,
            "/workers": self.workers,
        }
        self.post: dict[str, Handler] = {
            "/healthcheck/fail": self.healthcheck_fail,
            "/healthcheck/ok": self.healthcheck_ok,
            "/drain_listeners": self.drain_listeners,
            "/quitquitquit": self.quitquitquit,
            "/reset_counters": self.reset_counters,
            "/logging": self.logging_handler,
        }

    def __repr__(self) -> str:
        return f"<AdminServer {self.address}:{self.port} connections={len(self.connections)}>"

    async def start(self) -> None:
        # one process binds the admin port (the supervisor, or the only process): no SO_REUSEPORT
        sock = listening_socket(self.address, self.port, reuse_port=False)
        self.port = sock.getsockname()[1]  # an ephemeral port (tests) is known now
        self._acceptor = Acceptor(sock, lambda: AdminConnection(self))
        await self._acceptor.start()

    async def stop(self) -> None:
        if self._acceptor is not None:
            await self._acceptor.close()
            for connection in list(self.connections):
                connection.close()
            self._acceptor = None
        self.access_log.close()

    async def respond(self, method: str, target: str) -> AdminResponse:
        """Dispatch one admin request. Mutations are POST-only (a GET changes nothing and gets 400)."""
        path, _, query_text = target.partition("?")
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        if method == "POST" or (method == "GET" and path not in self.post):
            handler = (self.post if method == "POST" else self.get).get(path)
            if handler is None:
                if method == "POST" and path in self.get:
                    return AdminResponse.text("This endpoint requires GET\n", 405)
                return AdminResponse.text(f"invalid path. admin commands are:\n{self._commands()}", 404)
            return await handler(query)
        if method == "GET":
            return AdminResponse.text("This endpoint requires POST\n", 400)
        return AdminResponse.text(f"method {method} not allowed\n", 405)

    def _commands(self) -> str:
        return "".join(f"  {p}\n" for p in sorted({*self.get, *self.post}))

    # ------------------------------------------------------------------ GET
    async def help(self, query: Query) -> AdminResponse:
        return AdminResponse.text("admin commands are:\n" + self._commands())

    async def server_info(self, query: Query) -> AdminResponse:
        dataplane = self.dataplane
        settings = dataplane.settings
        identity = settings.identity
        uptime = _format_uptime(time.time() - dataplane.started)
        info = {
            "version": f"meshproxy/{__version__}/Clean/RELEASE/Python",
            "state": dataplane.state.name,
            "hot_restart_version": "disabled",
            "command_line_options": {
                "concurrency": settings.concurrency,
                "log_level": settings.log_level,
                "drain_time": f"{settings.drain_wait_s}s",
                "disable_hot_restart": True,
            },
            "node": {
                "id": identity.node_id,
                "cluster": identity.node_cluster,
                "user_agent_name": "meshproxy",
                "metadata": {"config_version": dataplane.snapshot.version},
            },
            "uptime_current_epoch": uptime,
            "uptime_all_epochs": uptime,
        }
        # indent keeps `"state": "LIVE"` on its own line for `grep state | grep -q LIVE`
        return AdminResponse.json(info, indent=2)

    async def ready(self, query: Query) -> AdminResponse:
        state = self.dataplane.state
        live = state is ServerState.LIVE and not self.dataplane.health_failed
        return AdminResponse.text(state.name + "\n", 200 if live else 503)

    async def stats_handler(self, query: Query) -> AdminResponse:
        await self.lifecycle.refresh_stats()
        fmt = query.get("format")
        if fmt == "prometheus":
            return await self.prometheus(query)
        if fmt == "json":
            return AdminResponse.json(self.stats.render_stats_json())
        try:
            text = self.stats.render_stats_text(filter=query.get("filter"), usedonly="usedonly" in query)
        except StatsFilterError as exc:
            return AdminResponse.text(f"invalid filter: {exc}\n", 400)
        return AdminResponse.text(text)

    async def prometheus(self, query: Query) -> AdminResponse:
        await self.lifecycle.refresh_stats()
        return AdminResponse(200, self.stats.render_prometheus(), PROMETHEUS_CONTENT_TYPE.encode())

    async def config_dump(self, query: Query) -> AdminResponse:
        """Envoy's `envoy.admin.v3.ConfigDump` (admin/config_dump.py); `?format=meshproxy` for the compiled
        snapshot as meshproxy holds it."""
        fmt = query.get("format", "json")
        if fmt not in ("json", "meshproxy"):
            return AdminResponse.text(f"unknown format {fmt!r}: use json (Envoy's shape) or meshproxy\n", 400)
        return AdminResponse.json(await self.lifecycle.config_dump(envoy=fmt == "json"), indent=2)

    async def clusters(self, query: Query) -> AdminResponse:
        status = await self.lifecycle.cluster_status(query.get("format") == "json")
        if isinstance(status, dict):
            return AdminResponse.json(status)
        return AdminResponse.text(status)

    async def listeners(self, query: Query) -> AdminResponse:
        listeners = self.lifecycle.listeners()
        if query.get("format") == "json":
            return AdminResponse.json(
                {
                    "listener_statuses": [
                        {
                            "name": lst.name,
                            "local_address": {
                                "socket_address": {"address": lst.address, "port_value": lst.port}
                            },
                        }
                        for lst in listeners
                    ]
                }
            )
        return AdminResponse.text("".join(f"{lst.name}::{lst.address}:{lst.port}\n" for lst in listeners))

    async def workers(self, query: Query) -> AdminResponse:
        """meshproxy's own: the worker processes, to see how SO_REUSEPORT spreads connections."""
        return AdminResponse.json({"workers": await self.lifecycle.worker_status()}, indent=2)

    async def runtime(self, query: Query) -> AdminResponse:
        return AdminResponse.json({"layers": ["static_layer_0", "admin_layer"], "entries": {}})

    async def memory(self, query: Query) -> AdminResponse:
        rss = 0
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
        except OSError:
            pass
        return AdminResponse.json({"allocated": str(rss), "heap_size": str(rss)})

    # ------------------------------------------------------------------ POST
    async def healthcheck_fail(self, query: Query) -> AdminResponse:
        self.dataplane.health_failed = True
        return _OK

    async def healthcheck_ok(self, query: Query) -> AdminResponse:
        self.dataplane.health_failed = False
        return _OK

    async def drain_listeners(self, query: Query) -> AdminResponse:
        self.lifecycle.drain(inbound_only="inboundonly" in query, exit_after=False)
        return _OK

    async def quitquitquit(self, query: Query) -> AdminResponse:
        self.lifecycle.quit()
        return _OK

    async def reset_counters(self, query: Query) -> AdminResponse:
        self.lifecycle.reset_counters()
        return _OK

    async def logging_handler(self, query: Query) -> AdminResponse:
        level = query.get("level")
        if level:
            name = {"trace": "DEBUG", "warn": "WARNING", "critical": "CRITICAL", "off": "CRITICAL"}.get(
                level, level.upper()
            )
            if name not in logging.getLevelNamesMapping():
                return AdminResponse.text(f"invalid level {level!r}\n", 400)
            logging.getLogger("meshproxy").setLevel(name)
        current = logging.getLevelName(logging.getLogger("meshproxy").getEffectiveLevel()).lower()
        return AdminResponse.text(f"active loggers:\n  meshproxy: {current}\n")


class AdminAccessLog:
    """ENVOY_ADMIN_ACCESS_LOG_FILE (spec §1.4): one line per admin request, in Envoy's default format's
    leading fields. Admin traffic is a few health checks and scrapes, so the line is written directly; a file
    that cannot be opened is reported once and admin requests go on without it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._broken = not path

    def __repr__(self) -> str:
        return f"<AdminAccessLog {self.path}>"

    def log(self, head: RequestHead, status: int, size: int) -> None:
        if self._broken:
            return
        if self._file is None:
            try:
                self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the process
            except OSError as exc:
                self._broken = True
                log.warning("admin access log %s cannot be opened: %s", self.path, exc)
                return
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        fields = {n.decode("latin-1"): v.decode("latin-1") for n, v in head.headers}
        request = f"{head.method} {head.target} HTTP/{head.http_version}"
        xff, agent = fields.get("x-forwarded-for", "-"), fields.get("user-agent", "-")
        authority = fields.get("host", "-")
        # Envoy's default format; an admin request has no response flags, upstream time or upstream host.
        line = (
            f'[{started}.000Z] "{request}" {status} - 0 {size} 0 - "{xff}" "{agent}" "-" "{authority}" "-"\n'
        )
        try:
            self._file.write(line)
        except OSError:
            self._broken = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AdminConnection(asyncio.Protocol):
    """One admin client: requests are answered one at a time, in order (reading pauses meanwhile)."""

    def __init__(self, server: AdminServer) -> None:
        self.server = server
        self.codec = HttptoolsServerCodec()
        self.transport: asyncio.Transport | None = None
        self.pending: list[tuple[RequestHead, int]] = []
        self.head: RequestHead | None = None
        self.body_size = 0
        self.busy = False
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AdminConnection busy={self.busy} pending={len(self.pending)}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.feed(data)
        except ProtocolError:
            self._send(AdminResponse.text("Bad Request\n", 400), close=True)
            return
        for event in events:
            if isinstance(event, RequestHead):
                self.head = event
                self.body_size = 0
            elif isinstance(event, Data):
                self.body_size += len(event.data)  # admin requests carry no meaningful body; bounded
                if self.body_size > _MAX_ADMIN_REQUEST_BODY:
                    self._send(AdminResponse.text("Payload Too Large\n", 413), close=True)
                    return
            elif isinstance(event, EndOfMessage) and self.head is not None:
                self.pending.append((self.head, self.body_size))
                self.head = None
        if self.pending and not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.pending or self.transport is None:
            return
        head, _ = self.pending.pop(0)
        self.busy = True
        self.transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self._answer(head))

    async def _answer(self, head: RequestHead) -> None:
        try:
            response = await self.server.respond(head.method, head.target)
        except Exception as exc:  # an admin handler bug must not take the proxy down
            log.exception("admin %s %s failed", head.method, head.target)
            response = AdminResponse.text(f"internal error: {exc}\n", 500)
        self.busy = False
        self.server.access_log.log(head, response.status, len(response.body))
        self._send(response, close=not head.keep_alive, head_only=head.method == "HEAD")
        if self.transport is not None:
            self.transport.resume_reading()
            self._next()

    def _send(self, response: AdminResponse, close: bool, head_only: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", b"%d" % len(response.body)),
            (b"cache-control", b"no-cache, max-age=0"),
            (b"x-content-type-options", b"nosniff"),
            (b"date", HTTP_DATE.now()),
            (b"server", b"envoy"),
        ]
        if close:
            headers.append((b"connection", b"close"))
        reason = reason_phrase(response.status)
        transport.write(
            encode_headers(b"HTTP/1.1 %d %b\r\n" % (response.status, reason), headers)
            + (b"" if head_only else response.body)
        )
        if close:
            transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
