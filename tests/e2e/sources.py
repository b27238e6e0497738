"""Configuration sources for e2e tests: an http(s) `ConfigServer`, a proxy started on any `--config`, and the
colour mesh the source tests serve (`front` calls `color.demo.local`, a router over `blue` and `green`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .apps import ColourApp
from .harness import MESHPROXY, MeshProxy
from .resources import Resource, mesh, node_arn, route, service_via_router, virtual_node, virtual_router

COLOR = "color.demo.local"


def tls_for_loopback(ca_file: Path) -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1 signed by a fresh test CA, whose certificate goes to `ca_file`."""
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(ca_file))
    return context


# ------------------------------------------------------------------------------------------ the source


class ConfigServer:
    """An http configuration source: serves `body` with a strong ETag; 304 when If-None-Match matches.

    `failing` answers 503 instead. Counts every request, the conditional ones and the 304s, and keeps the
    If-None-Match values it saw.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, required: dict[str, str] | None = None) -> None:
        self.port = 0
        self.tls = tls
        self.required = dict(required or {})  # headers a request must carry, else 401
        self.seen_headers: list[dict[str, str]] = []
        self.validators = True  # False: a server that sends no ETag (every poll is a plain 200)
        self.body = b"[]"
        self.failing = False
        self.requests = 0
        self.conditional = 0
        self.not_modified = 0
        self.if_none_match: list[str] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return (
            f"<ConfigServer port={self.port} requests={self.requests} conditional={self.conditional} "
            f"not_modified={self.not_modified} failing={self.failing}>"
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/mesh.json"

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.body).hexdigest()[:16]}"'

    def serve(self, resources: list[Resource] | bytes) -> None:
        body = resources if isinstance(resources, bytes) else json.dumps(resources).encode()
        with self._lock:
            self.body = body
            self.failing = False

    def counts(self) -> tuple[int, int, int]:
        with self._lock:
            return self.requests, self.conditional, self.not_modified

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/mesh.json", self._get)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests += 1
            self.seen_headers.append(dict(request.headers))
            if any(request.headers.get(name) != value for name, value in self.required.items()):
                return web.Response(status=401, text="who are you?\n")
            if self.failing:
                return web.Response(status=503, text="config store unavailable\n")
            etag = self.etag
            seen = request.headers.get("If-None-Match")
            if seen is not None:
                self.conditional += 1
                self.if_none_match.append(seen)
                if seen == etag:
                    self.not_modified += 1
                    return web.Response(status=304, headers={"ETag": etag})
            headers = {"ETag": etag} if self.validators else {}
            return web.Response(body=self.body, content_type="application/json", headers=headers)


@dataclass
class SourcedProxy(MeshProxy):
    """A MeshProxy whose `--config` is `source` (a URL, or a path the test rewrites), with `extra_args`."""

    source: str = ""
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [str(MESHPROXY), "run", "--config", self.source, *self.extra_args],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self.process


def colour_mesh(blue: ColourApp, green: ColourApp, weights: tuple[int, int]) -> list[Resource]:
    return [
        mesh(),
        virtual_node("blue", blue.port),
        virtual_node("green", green.port),
        virtual_node("front", 18080, backends=[COLOR]),
        virtual_router("color-router"),
        route("color-router", "split", [("blue", weights[0]), ("green", weights[1])]),
        service_via_router(COLOR, "color-router"),
    ]


@contextlib.contextmanager
def sourced_proxy(
    tmp_path: Path, source: str, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[SourcedProxy]:
    proxy = SourcedProxy([], node_arn("front"), tmp_path, source=source, extra_args=args, env=env or {})
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def answered_by(proxy: MeshProxy) -> str | None:
    reply = proxy.egress(COLOR)
    assert reply.status == 200, reply
    return reply.app
