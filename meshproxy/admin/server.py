"""The Envoy-compatible admin interface (default 0.0.0.0:9901, spec §3).

Health checks in the wild run `curl -s http://localhost:9901/server_info | grep state | grep -q LIVE`, so
`/server_info` prints `"state": "LIVE"` on a line of its own, and only once the first snapshot is applied and
the listeners are bound. Mutations are POST-only; the same path with GET changes nothing and answers 400.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from meshproxy import __version__
from meshproxy.dataplane import Dataplane, ServerState
from meshproxy.telemetry.errors import StatsFilterError
from meshproxy.telemetry.hub import PROMETHEUS_CONTENT_TYPE
from meshproxy.upstream.cluster import ClusterManager

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener

log = logging.getLogger("meshproxy.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatsRenderer(Protocol):
    def render_prometheus(self) -> bytes: ...

    def render_stats_text(self, filter: str | None = None, usedonly: bool = False) -> str: ...

    def render_stats_json(self) -> dict[str, object]: ...


class Lifecycle(Protocol):
    """What the admin endpoints ask the server to do."""

    def drain(self, inbound_only: bool, exit_after: bool) -> None: ...

    def quit(self) -> None: ...

    def listeners(self) -> list[HttpListener]: ...

    def config_dump(self) -> dict[str, object]: ...

    async def refresh_stats(self) -> None:
        """Bring the stats the renderers read up to date (totals across worker processes)."""
        ...

    async def cluster_status(self, as_json: bool) -> str | dict[str, object]: ...

    def reset_counters(self) -> None: ...


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
                ("health_flags", "healthy" if host.health.value == "healthy" else "/failed_outlier_check"),
                ("weight", host.weight),
            ]
            lines.extend(f"{prefix}{k}::{v}" for k, v in values)
            hosts.append({"address": host.label, **dict(values)})
        records.append({"name": name, "host_statuses": hosts})
    if as_json:
        return {"cluster_statuses": records}
    return "\n".join(lines) + "\n"


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
        self._runner: web.AppRunner | None = None
        app = web.Application()
        get, post = app.router.add_get, app.router.add_post
        get("/", self.help)
        get("/help", self.help)
        get("/server_info", self.server_info)
        get("/ready", self.ready)
        get("/stats", self.stats_handler)
        get("/stats/prometheus", self.prometheus)
        get("/config_dump", self.config_dump)
        get("/clusters", self.clusters)
        get("/listeners", self.listeners)
        get("/runtime", self.runtime)
        get("/memory", self.memory)
        for path, handler in (
            ("/healthcheck/fail", self.healthcheck_fail),
            ("/healthcheck/ok", self.healthcheck_ok),
            ("/drain_listeners", self.drain_listeners),
            ("/quitquitquit", self.quitquitquit),
            ("/reset_counters", self.reset_counters),
            ("/logging", self.logging_handler),
        ):
            post(path, handler)
            get(path, self.post_only)
        self.app = app

    def __repr__(self) -> str:
        return f"<AdminServer {self.address}:{self.port}>"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.address, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0 and site._server is not None:  # ephemeral port (tests)
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ GET
    async def help(self, request: web.Request) -> web.Response:
        paths = sorted({r.resource.canonical for r in self.app.router.routes() if r.resource is not None})
        return web.Response(text="admin commands are:\n" + "".join(f"  {p}\n" for p in paths))

    async def server_info(self, request: web.Request) -> web.Response:
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
        # indent=2 keeps `"state": "LIVE"` on its own line for `grep state | grep -q LIVE`
        return web.Response(text=json.dumps(info, indent=2) + "\n", content_type="application/json")

    async def ready(self, request: web.Request) -> web.Response:
        state = self.dataplane.state
        live = state is ServerState.LIVE and not self.dataplane.health_failed
        return web.Response(text=state.name + "\n", status=200 if live else 503)

    async def stats_handler(self, request: web.Request) -> web.Response:
        await self.lifecycle.refresh_stats()
        query = request.query
        fmt = query.get("format")
        if fmt == "prometheus":
            return await self.prometheus(request)
        if fmt == "json":
            return web.json_response(self.stats.render_stats_json())
        try:
            text = self.stats.render_stats_text(filter=query.get("filter"), usedonly="usedonly" in query)
        except StatsFilterError as exc:
            return web.Response(status=400, text=f"invalid filter: {exc}\n")
        return web.Response(text=text)

    async def prometheus(self, request: web.Request) -> web.Response:
        await self.lifecycle.refresh_stats()
        body = self.stats.render_prometheus()
        return web.Response(body=body, headers={"content-type": PROMETHEUS_CONTENT_TYPE})

    async def config_dump(self, request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(self.lifecycle.config_dump(), indent=2) + "\n", content_type="application/json"
        )

    async def clusters(self, request: web.Request) -> web.Response:
        as_json = request.query.get("format") == "json"
        status = await self.lifecycle.cluster_status(as_json)
        if isinstance(status, dict):
            return web.json_response(status)
        return web.Response(text=status)

    async def listeners(self, request: web.Request) -> web.Response:
        listeners = self.lifecycle.listeners()
        if request.query.get("format") == "json":
            return web.json_response(
                {
                    "listener_statuses": [
                        {"name": lst.name, "local_address": {"socket_address": {"address": lst.address,
                                                                                 "port_value": lst.port}}}
                        for lst in listeners
                    ]
                }
            )  # fmt: skip
        return web.Response(text="".join(f"{lst.name}::{lst.address}:{lst.port}\n" for lst in listeners))

    async def runtime(self, request: web.Request) -> web.Response:
        return web.json_response({"layers": ["static_layer_0", "admin_layer"], "entries": {}})

    async def memory(self, request: web.Request) -> web.Response:
        rss = 0
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
        except OSError:
            pass
        return web.json_response({"allocated": str(rss), "heap_size": str(rss)})

    # ------------------------------------------------------------------ POST
    async def post_only(self, request: web.Request) -> web.Response:
        return web.Response(status=400, text="This endpoint requires POST\n")

    async def healthcheck_fail(self, request: web.Request) -> web.Response:
        self.dataplane.health_failed = True
        return web.Response(text="OK\n")

    async def healthcheck_ok(self, request: web.Request) -> web.Response:
        self.dataplane.health_failed = False
        return web.Response(text="OK\n")

    async def drain_listeners(self, request: web.Request) -> web.Response:
        query = request.query
        self.lifecycle.drain(inbound_only="inboundonly" in query, exit_after=False)
        return web.Response(text="OK\n")

    async def quitquitquit(self, request: web.Request) -> web.Response:
        self.lifecycle.quit()
        return web.Response(text="OK\n")

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.lifecycle.reset_counters()
        return web.Response(text="OK\n")

    async def logging_handler(self, request: web.Request) -> web.Response:
        level = request.query.get("level")
        if level:
            name = {"trace": "DEBUG", "warn": "WARNING", "critical": "CRITICAL", "off": "CRITICAL"}.get(
                level, level.upper()
            )
            if name not in logging.getLevelNamesMapping():
                return web.Response(status=400, text=f"invalid level {level!r}\n")
            logging.getLogger("meshproxy").setLevel(name)
        current = logging.getLevelName(logging.getLogger("meshproxy").getEffectiveLevel()).lower()
        return web.Response(text=f"active loggers:\n  meshproxy: {current}\n")
