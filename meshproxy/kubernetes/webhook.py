"""`meshproxy webhook`: sidecar injection as a mutating admission webhook, as App Mesh's controller ran it.

The API server POSTs an `admission.k8s.io/v1` AdmissionReview for every pod created in a namespace labelled
`appmesh.k8s.aws/sidecarInjectorWebhook: enabled` (deploy/kubernetes/webhook.yaml) to `/mutate-v1-pod` over
HTTPS; the answer allows the pod with a JSONPatch that applies exactly what `meshproxy inject` would write
(`meshproxy.kubernetes.injector`), or refuses it with the controller's reason. Those namespaces default to
injection (the label says so), so a pod there that no virtual node selects is refused unless annotated
`appmesh.k8s.aws/sidecarInjectorWebhook: disabled`, as with the controller.

Failure policy: the shipped MutatingWebhookConfiguration says `Fail`, as the controller's did: if the webhook
cannot be reached, pod creation in those namespaces fails rather than starting pods outside the mesh (which
under DROP_ALL or TLS would fail later and less visibly). Run it with two replicas, in a namespace without the
label. `Ignore` trades that for availability; the README says when to choose it.

The mesh comes from `--config` sources (file, http(s) or s3, polled like the proxy's); `/healthz` answers 200
once a valid mesh is loaded. The serving certificate is re-read when its files change (cert-manager renewals).
It is not on any proxy's request path, so aiohttp's server is used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from meshproxy.config.sources import ConfigSource, PollSchedule, SourceError, open_source
from meshproxy.kubernetes.injector import InjectError, InjectMode, InjectorConfig, MeshIndex, inject_pod
from meshproxy.kubernetes.manifests import add_injector_arguments, injector_config

log = logging.getLogger("meshproxy.webhook")

MUTATE_PATH = "/mutate-v1-pod"  # the controller's path
ADMISSION_API = "admission.k8s.io/v1"
MAX_REVIEW_BYTES = 8 * 1024 * 1024
CERT_CHECK_S = 10.0


def _pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"  # RFC 6901 escaping


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning `before` into `after`: objects are diffed member by member, anything else
    (lists, values) is replaced whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        operations: list[dict[str, Any]] = [
            {"op": "remove", "path": _pointer(path, key)} for key in before if key not in after
        ]
        for key, value in after.items():
            if key not in before:
                operations.append({"op": "add", "path": _pointer(path, key), "value": value})
            elif before[key] != value:
                operations.extend(json_patch(before[key], value, _pointer(path, key)))
        return operations
    if before == after:
        return []
    return [{"op": "replace", "path": path, "value": after}]


def review_response(review: Any, index: MeshIndex, config: InjectorConfig) -> dict[str, Any]:
    """The AdmissionReview answer to `review` (raises ValueError when it is not an AdmissionReview v1)."""
    if not isinstance(review, dict) or review.get("apiVersion") != ADMISSION_API:
        raise ValueError(f"expected an AdmissionReview of {ADMISSION_API}")
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise ValueError("the AdmissionReview has no request.uid")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    resource = request.get("resource") or {}
    if request.get("operation") == "CREATE" and resource.get("resource") == "pods" and isinstance(pod, dict):
        namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default"
        try:
            injected, decision = inject_pod(pod, namespace, index, config)
        except InjectError as exc:
            response["allowed"] = False
            response["status"] = {"code": 403, "reason": "Forbidden", "message": f"meshproxy: {exc}"}
        else:
            patch = json_patch(pod, injected)
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            log.info(
                "%s/%s: %s",
                namespace,
                (pod.get("metadata") or {}).get("name") or "(generated)",
                decision.member.resource_id if decision.member else decision.reason,
            )
    return {"apiVersion": ADMISSION_API, "kind": "AdmissionReview", "response": response}


class Webhook:
    """The HTTPS server, its mesh (refreshed from the sources) and its certificate (re-read on change)."""

    def __init__(self, sources: Sequence[ConfigSource], config: InjectorConfig, refresh_s: float) -> None:
        self.sources = list(sources)
        self.config = config
        self.refresh_s = refresh_s
        self.index: MeshIndex | None = None
        self._latest: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<Webhook sources={len(self.sources)} loaded={self.index is not None}>"

    async def refresh(self) -> bool:
        """Fetch every source; rebuild the mesh when one changed. False when a source failed."""
        changed, ok = False, True
        for source in self.sources:
            try:
                data = await source.fetch()
            except SourceError as exc:
                log.warning("mesh source unavailable: %s", exc)
                ok = False
                continue
            if data is not None:
                self._latest[source.name] = data
                changed = True
        if changed and len(self._latest) == len(self.sources):
            index, issues = MeshIndex.from_sources(list(self._latest.items()))
            errors = [issue.located() for issue in issues if issue.is_error]
            if errors:
                log.error("mesh rejected, keeping the last good one:\n%s", "\n".join(errors))
                return False
            self.index = index
            log.info("mesh loaded: %d virtual nodes and gateways", len(index.members))
        return ok

    async def mutate(self, request: web.Request) -> web.Response:
        index = self.index
        if index is None:
            return web.json_response({"error": "no mesh loaded yet"}, status=503)
        try:
            review = json.loads(await request.read())
            answer = review_response(review, index, self.config)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(answer)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n" if self.index else "no mesh yet\n", status=200 if self.index else 503)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.router.add_post(MUTATE_PATH, self.mutate)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def poll(self) -> None:
        schedule = PollSchedule(self.refresh_s)
        failed = False
        while True:
            await asyncio.sleep(schedule.next_delay(failed))
            failed = not await self.refresh()


class CertificateReloader:
    """Keeps an SSLContext's certificate in step with its files (re-read when their mtime changes)."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._seen = self._stamp()
        self.context.load_cert_chain(cert, key)

    def _stamp(self) -> tuple[int, int]:
        return os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns

    def check(self) -> bool:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving certificate not reloaded, keeping the current one: %s", exc)
            return False
        self._seen = stamp
        log.info("serving certificate reloaded")
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(CERT_CHECK_S)
            self.check()


async def serve(webhook: Webhook, tls: CertificateReloader, address: str, port: int) -> int:
    await webhook.refresh()
    runner = web.AppRunner(webhook.application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port, ssl_context=tls.context).start()
    log.info("admission webhook on https://%s:%d%s", address, port, MUTATE_PATH)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [loop.create_task(webhook.poll()), loop.create_task(tls.watch())]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        for source in webhook.sources:
            with contextlib.suppress(Exception):
                await source.close()
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="meshproxy webhook",
        description="meshproxy's sidecar injection as a mutating admission webhook (AdmissionReview v1).",
    )
    add_injector_arguments(parser)
    parser.add_argument("--tls-cert", required=True, metavar="FILE", help="serving certificate chain (PEM)")
    parser.add_argument("--tls-key", required=True, metavar="FILE", help="its private key (PEM)")
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument(
        "--refresh-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="poll the mesh sources this often (default 5)",
    )
    args = parser.parse_args(list(argv))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="[%(asctime)s][%(levelname)s][%(name)s] %(message)s"
    )
    try:
        sources = [open_source(spec) for spec in args.config]
        tls = CertificateReloader(args.tls_cert, args.tls_key)
    except SourceError as exc:
        print(f"meshproxy webhook: --config: {exc}", file=sys.stderr)
        return 1
    except (OSError, ssl.SSLError) as exc:
        print(f"meshproxy webhook: serving certificate: {exc}", file=sys.stderr)
        return 1
    webhook = Webhook(sources, injector_config(args, InjectMode.ENABLED), args.refresh_interval)
    return asyncio.run(serve(webhook, tls, args.address, args.port))
