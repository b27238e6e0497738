"""`meshproxy run`: start-up, serving, hot reload of a file source, and the graceful drain.

Lifecycle (DESIGN.md): PRE_INITIALIZING -> INITIALIZING (config being read) -> LIVE (first good snapshot
applied, listeners bound) -> DRAINING (SIGTERM/SIGQUIT or /drain_listeners: /ready fails, in-flight and new
requests keep being served for LISTENER_DRAIN_WAIT_TIME_S) -> exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from meshproxy.admin.server import AdminServer, cluster_status, worker_entry
from meshproxy.config.errors import ConfigError, Issue
from meshproxy.config.load import snapshot_from_bytes
from meshproxy.config.snapshot import ResourceKind, Snapshot
from meshproxy.config.sources import (
    PollSchedule,
    SourceError,
    header_names,
    open_source,
    parse_header,
    source_problem,
)
from meshproxy.core.direction import ListenerDirection
from meshproxy.dataplane import Dataplane, ServerState
from meshproxy.listeners.listener import HttpListener
from meshproxy.net.delayed_close import DELAYED_CLOSE_S
from meshproxy.net.descriptors import AcceptPaused, DescriptorGuard
from meshproxy.net.tls_contexts import TlsConfigError
from meshproxy.settings import Settings, SettingsError, load_settings
from meshproxy.telemetry.accesslog import compile_format
from meshproxy.telemetry.errors import AccessLogFormatError
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore
from meshproxy.workers import CONTROL_FD_ENV, WorkerChannel, WorkerCommand, dump_store

log = logging.getLogger("meshproxy")

_LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
               "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
               "off": logging.CRITICAL + 10}  # fmt: skip
_SHUTDOWN_GRACE_S = 3.0  # after the drain window: how long in-flight requests get before the process exits
SDS_INITIAL_FETCH_TIMEOUT_S = 15.0  # Envoy's ConfigSource initial_fetch_timeout default, for SDS secrets
_DRAIN_IDLE_S = 1.0  # while draining, a keep-alive connection quiet this long between requests is closed
# At exit, how long a connection accepted last gets to send its first request: it was accepted before the
# listener closed, so it is served like a request in flight (Envoy serves an accepted connection until the
# process ends), for all of the shutdown grace but the delayed close that ends it (net/delayed_close.py: a
# FIN, and a request crossing it is dropped, not reset), which must fit before the exit too.
FRESH_GRACE_S = _SHUTDOWN_GRACE_S - DELAYED_CLOSE_S


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        format="[%(asctime)s.%(msecs)03d][%(process)d][%(levelname)s][%(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    logging.getLogger("meshproxy").setLevel(_LOG_LEVELS.get(level, logging.INFO))


class Server:
    """One proxy process: admin, listeners, the data plane, and their lifecycle."""

    def __init__(self, settings: Settings, channel: WorkerChannel | None = None) -> None:
        self.settings = settings
        self.channel = channel  # set in a worker process: the supervisor owns the admin port
        self.store = StatsStore()
        self.store.server.server_concurrency = settings.concurrency
        self.telemetry = Telemetry(settings, self.store)
        self.dataplane = Dataplane(settings, self.store, self.telemetry)
        self.http_listeners: list[HttpListener] = []
        address = "::" if settings.admin_ipv6 else "0.0.0.0"
        if settings.listen_address in ("127.0.0.1", "::1"):
            address = settings.listen_address
        self.admin = AdminServer(self.dataplane, self.telemetry, self, address, settings.admin_port)
        options = settings.source_options
        self.source = open_source(settings.config_source, options) if settings.config_source else None
        # refresh interval with jitter, exponential backoff while the source fails (config/sources.py)
        self.schedule = PollSchedule(settings.config_refresh_s)
        self._stop = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._exit_code = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.descriptors: DescriptorGuard | None = None
        self._control: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Server {self.dataplane.state.name} listeners={len(self.http_listeners)}>"

    # ------------------------------------------------------------------ Lifecycle protocol (admin)
    def listeners(self) -> list[HttpListener]:
        return list(self.http_listeners)

    async def config_dump(self, envoy: bool) -> dict[str, object]:
        return self.render_config_dump(envoy)

    def render_config_dump(self, envoy: bool) -> dict[str, object]:
        dataplane = self.dataplane
        if not envoy:
            from meshproxy.config.dump import snapshot_to_dict

            return {"configs": [snapshot_to_dict(dataplane.snapshot)]}
        from meshproxy.admin.config_dump import envoy_config_dump

        def endpoints(name: str) -> list[tuple[str, int]] | None:
            runtime = dataplane.clusters.clusters.get(name)
            return None if runtime is None else [(h.address, h.port) for h in runtime.hosts]

        return envoy_config_dump(
            dataplane.snapshot, self.settings, applied_at=dataplane.applied_at, endpoints=endpoints
        )

    def drain(self, inbound_only: bool, exit_after: bool) -> None:
        if exit_after and self.dataplane.state in (ServerState.PRE_INITIALIZING, ServerState.INITIALIZING):
            # no listener is bound before the first configuration: nothing to drain, stop now
            self._stop.set()
            return
        if self.dataplane.state is not ServerState.DRAINING:
            log.info("draining listeners for %ss", self.settings.drain_wait_s)
            self.dataplane.set_state(ServerState.DRAINING)
            now = self.dataplane.clock.now()
            for listener in self.http_listeners:  # connections idle since before: closed now, not at exit
                listener.drain_connections(now, _DRAIN_IDLE_S, None)
        if exit_after and self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_stop())

    def quit(self) -> None:
        asyncio.get_running_loop().call_soon(self._stop.set)

    async def refresh_stats(self) -> None:
        return None  # one process: the store is always current

    async def cluster_status(self, as_json: bool) -> str | dict[str, object]:
        return cluster_status(self.dataplane.clusters, as_json)

    def reset_counters(self) -> None:
        self.store.reset_counters()

    async def worker_status(self) -> list[dict[str, object]]:
        return [worker_entry(0, os.getpid(), self.dataplane.state.name, self.store)]

    async def _drain_then_stop(self) -> None:
        await asyncio.sleep(self.settings.drain_wait_s)
        self._stop.set()

    # ------------------------------------------------------------------ running
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_accept_pause)
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            loop.add_signal_handler(sig, self.drain, False, True)
        if self.channel is None:
            try:
                await self.admin.start()
            except OSError as exc:
                log.critical("cannot bind the admin port %s: %s", self.settings.admin_port, exc)
                return 1
        self.dataplane.set_state(ServerState.INITIALIZING)
        await self.telemetry.start()
        try:
            if not await self._initial_config():
                return self._exit_code if self._stop.is_set() else 1  # stopped while waiting: not a failure
            await self._initial_secrets()
            if not await self._start_listeners():
                return 1
            self.dataplane.set_state(ServerState.LIVE)
            log.info("LIVE: %s (config %s)", self.settings.identity.node_id, self.dataplane.snapshot.version)
            # MESHPROXY_CONFIG_REFRESH_S=0: read once, never poll
            polling = self.source is not None and self.settings.config_refresh_s > 0
            watcher = loop.create_task(self._watch_source()) if polling else None
            if self.channel is not None:
                await self.channel.announce_live()
                self._control = loop.create_task(self._serve_supervisor(self.channel))
            await self._stop.wait()
            if watcher is not None:
                watcher.cancel()
            await self._shutdown()
            return self._exit_code
        finally:
            for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.telemetry.stop()
            if self.channel is None:
                await self.admin.stop()
            if self.source is not None:
                await self.source.close()

    async def _serve_supervisor(self, channel: WorkerChannel) -> None:
        await channel.serve(self._worker_command)
        if not self._stop.is_set():  # the supervisor is gone: a worker never outlives it
            log.warning("supervisor channel closed; exiting")
            self._stop.set()

    async def _worker_command(self, command: WorkerCommand) -> bytes:
        if command is WorkerCommand.STATS:
            data = dump_store(self.store)
            for histogram in self.store.histograms():
                histogram.recent.clear()  # samples travel once, to the supervisor's DogStatsD flush
            return data
        if command is WorkerCommand.CLUSTERS:
            return str(cluster_status(self.dataplane.clusters, False)).encode()
        if command is WorkerCommand.CLUSTERS_JSON:
            return json.dumps(cluster_status(self.dataplane.clusters, True)).encode()
        if command in (WorkerCommand.CONFIG_DUMP, WorkerCommand.CONFIG_DUMP_ENVOY):
            return json.dumps(self.render_config_dump(command is WorkerCommand.CONFIG_DUMP_ENVOY)).encode()
        if command is WorkerCommand.RESET:
            self.reset_counters()
        elif command is WorkerCommand.DRAIN:
            self.drain(inbound_only=False, exit_after=True)
        elif command is WorkerCommand.QUIT:
            self.quit()
        return b"ok"

    async def _initial_config(self) -> bool:
        """Wait for the first good configuration (ENVOY_INITIAL_FETCH_TIMEOUT: 0 waits for ever)."""
        source = self.source
        if source is None:
            log.critical("no configuration source: pass --config FILE or set MESHPROXY_CONFIG")
            return False
        timeout = self.settings.initial_fetch_timeout_s or None
        if self.settings.config_headers:
            log.info("configuration from %s, sending headers %s", source.name,
                     header_names(self.settings.config_headers))  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        data = await source.fetch()
                    except SourceError as exc:
                        log.warning("configuration source unavailable: %s", exc)
                        data = None
                    if data is None:
                        # wait for the next poll, or for SIGTERM / quitquitquit, whichever comes first
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), self.schedule.next_delay(failed=True))
                        if self._stop.is_set():
                            log.info("stopped before the first configuration arrived")
                            return False
                        continue
                    try:
                        self._apply(self._compile(data))
                    except (ConfigError, TlsConfigError) as exc:
                        # A bad first configuration is fatal: start-up must not go LIVE with nothing to route.
                        self.store.server.cluster_manager_cds_update_rejected += 1
                        print(
                            f"meshproxy: configuration {source.name} rejected:\n{_reason(exc)}",
                            file=sys.stderr,
                        )
                        return False
                    return True
        except TimeoutError:
            log.critical("no configuration from %s within ENVOY_INITIAL_FETCH_TIMEOUT", source.name)
            return False

    async def _initial_secrets(self) -> None:
        """Wait for the first SDS secrets before listening, as Envoy's listeners and clusters warm until
        theirs arrive (bounded by SDS's initial fetch timeout); without them TLS connections are refused."""
        secrets = self.dataplane.secrets
        wanted = list(self.dataplane.tls.wanted_secrets())
        if not wanted:
            return
        missing = await secrets.wait_for(wanted, SDS_INITIAL_FETCH_TIMEOUT_S)
        if missing:
            log.warning("SDS secrets %s have not arrived within %ss; TLS that needs them fails until they do",
                        missing, SDS_INITIAL_FETCH_TIMEOUT_S)  # fmt: skip

    def _compile(self, data: bytes) -> Snapshot:
        assert self.source is not None
        snapshot = snapshot_from_bytes(
            data,
            self.settings.identity,
            source=self.source.name,
            egress_port=self.settings.egress_port,
            egress_limits=self.settings.egress_limits,
        )
        if snapshot.access_log is not None:
            try:  # Envoy rejects an update whose access-log format it cannot compile (spec §5.5)
                compile_format(snapshot.access_log)
            except AccessLogFormatError as exc:
                kind = snapshot.identity.kind.value
                raise ConfigError(
                    [Issue(kind, snapshot.identity.name, "spec.logging.accessLog.file.format", str(exc))]
                ) from None
        return snapshot

    def _apply(self, snapshot: Snapshot) -> None:
        """Raises TlsConfigError (nothing applied) when a certificate of `snapshot` cannot load."""
        self.dataplane.apply(snapshot)
        self.telemetry.set_access_log(snapshot.access_log)
        self.store.server.control_plane_connected_state = 1

    async def _watch_source(self) -> None:
        """Poll the source; compile, then swap. A bad update is rejected whole and the last good one stays."""
        source = self.source
        assert source is not None
        server = self.store.server
        failed = False
        while True:
            await asyncio.sleep(self.schedule.next_delay(failed))
            try:
                data = await source.fetch()
            except SourceError as exc:
                failed = True
                server.control_plane_connected_state = 0
                log.warning("configuration source unavailable, keeping version %s: %s",
                            self.dataplane.snapshot.version, exc)  # fmt: skip
                continue
            failed = False
            server.control_plane_connected_state = 1
            if data is None:
                continue
            try:
                snapshot = await asyncio.to_thread(self._compile, data)
                if snapshot.version == self.dataplane.snapshot.version:
                    continue
                self._apply(snapshot)
            except (ConfigError, TlsConfigError) as exc:
                server.cluster_manager_cds_update_rejected += 1
                server.listener_manager_lds_update_rejected += 1
                log.error(
                    "configuration update rejected, keeping version %s:\n%s",
                    self.dataplane.snapshot.version,
                    _reason(exc),
                )
                continue
            log.info("configuration updated to version %s", snapshot.version)

    async def _start_listeners(self) -> bool:
        settings = self.settings
        dataplane = self.dataplane
        address = settings.listen_address
        wanted: list[tuple[ListenerDirection, int]] = []
        if settings.identity.kind is ResourceKind.VIRTUAL_NODE:
            if dataplane.snapshot.ingress:
                wanted.append((ListenerDirection.INGRESS, settings.ingress_port))
            wanted.append((ListenerDirection.EGRESS, settings.egress_port))
        else:
            for gateway in dataplane.snapshot.gateway:
                wanted.append((ListenerDirection.GATEWAY, gateway.port))
        self.descriptors = DescriptorGuard(dataplane.clock)
        for direction, port in wanted:
            listener = HttpListener(
                direction, address, port, dataplane, dataplane.server_codec_factory, self.descriptors
            )
            try:
                await listener.start()
            except OSError as exc:
                self.store.server.listener_manager_listener_create_failure += 1
                log.critical("cannot listen on %s:%s: %s", address, port, exc)
                return False
            self.http_listeners.append(listener)
        self.store.server.listener_manager_total_listeners_active = len(self.http_listeners)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())
        return True

    async def _sweep_idle(self) -> None:
        # One periodic sweep enforces idle timeouts (idle keep-alive connections, and streams with no bytes
        # either way for their route's `idle`), instead of a timer per connection or request on the hot path.
        while True:
            await asyncio.sleep(1.0)
            snapshot = self.dataplane.snapshot
            idle = next((i.idle_timeout for i in snapshot.ingress), 300.0)
            now = time.monotonic()
            headers_timeout = self.settings.request_headers_timeout_s
            if self.descriptors is not None:
                self.descriptors.check()
            draining = self.dataplane.draining
            for listener in self.http_listeners:
                if draining:
                    listener.drain_connections(now, _DRAIN_IDLE_S, None)
                elif idle is not None:  # None: App Mesh's 0, the timeout is disabled
                    listener.close_idle_connections(idle)
                listener.expire_idle_streams(now)
                if headers_timeout is not None:
                    listener.expire_slow_heads(now, headers_timeout)

    async def _shutdown(self) -> None:
        """Stop accepting (taking what waits in the listen backlog), then serve what is in flight and the
        first request of connections accepted last (sent within FRESH_GRACE_S), every response saying
        `Connection: close` (HTTP/2: after a GOAWAY); exit when the last connection is gone (each closes with
        a delayed close), or after _SHUTDOWN_GRACE_S."""
        if self.dataplane.state is not ServerState.DRAINING:
            self.dataplane.set_state(ServerState.DRAINING)  # /quitquitquit: no window, the same ending
        # together: each waits HANDSHAKE_SETTLE_S for the handshakes its socket answered last
        await asyncio.gather(*(listener.stop_accepting() for listener in self.http_listeners))
        clock = self.dataplane.clock
        deadline = clock.now() + _SHUTDOWN_GRACE_S
        while True:
            # a turn of the loop first: connections the loop accepted last have their connection_made
            # (and their listener's count) only on a later turn
            await asyncio.sleep(0.05)
            if clock.now() >= deadline or not any(lst.open_connections for lst in self.http_listeners):
                break
            for listener in self.http_listeners:
                listener.drain_connections(clock.now(), 0.0, FRESH_GRACE_S)
        self.dataplane.clusters.shutdown()
        await self.dataplane.close_secrets()
        if self.descriptors is not None:
            self.descriptors.close()
        log.info("stopped")


def _reason(exc: ConfigError | TlsConfigError) -> str:
    if isinstance(exc, TlsConfigError):
        return "\n".join(f"TLS: {problem}" for problem in exc.problems)
    return str(exc)


def _quiet_accept_pause(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The loop's exception handler: a listener stopping an accept burst out of file descriptors
    (net/descriptors.py) is expected and logged by the guard; everything else as asyncio does."""
    if isinstance(context.get("exception"), AcceptPaused):
        return
    loop.default_exception_handler(context)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the stock loop still works
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class _RunHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the terminal width read here: left to itself, it imports shutil (and with it
    bz2 and lzma, ~0.6 MiB resident for the life of every worker) to ask the same question."""

    def __init__(self, prog: str) -> None:
        declared = os.environ.get("COLUMNS", "")
        try:
            columns = int(declared) if declared.isdigit() else os.get_terminal_size().columns
        except OSError:  # not a terminal
            columns = 80
        super().__init__(prog, width=columns - 2)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="meshproxy run",
        description="Run the proxy for APPMESH_RESOURCE_ARN.",
        formatter_class=_RunHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="App Mesh resources: a JSON/YAML file, an http(s):// URL or s3://bucket/key "
        "(default: $MESHPROXY_CONFIG)",
    )
    parser.add_argument(
        "--config-header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="send this header with every http(s) config request; repeatable, added to the lines of "
        "$MESHPROXY_CONFIG_HEADERS (one 'Name: value' per line). Values never appear in logs",
    )
    parser.add_argument(
        "--config-ca-bundle",
        metavar="FILE",
        help="PEM CA bundle that https:// and s3:// config sources are verified against, instead of the "
        "system trust store (default: $MESHPROXY_CONFIG_CA_BUNDLE)",
    )
    parser.add_argument(
        "--refresh-interval",
        type=_seconds,
        metavar="SECONDS",
        help="poll the config source this often; 0 reads it once (default: $MESHPROXY_CONFIG_REFRESH_S or 5)",
    )
    return parser.parse_args(list(argv))


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except ValueError as exc:  # the message never repeats the value: it may be a credential
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {text!r}")
    return value


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    env: dict[str, str] = dict(os.environ)
    try:
        settings = load_settings(env, config_source=args.config)
    except SettingsError as exc:
        print(f"meshproxy: invalid environment: {exc}", file=sys.stderr)
        return 1
    if args.refresh_interval is not None:
        settings = dataclasses.replace(settings, config_refresh_s=args.refresh_interval)
    settings = dataclasses.replace(
        settings,
        config_headers=settings.config_headers + tuple(args.config_header),
        config_ca_bundle=args.config_ca_bundle or settings.config_ca_bundle,
    )
    options = settings.source_options
    problem = source_problem(settings.config_source, options) if settings.config_source else None
    if problem is not None:
        print(f"meshproxy: --config: {problem}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    refusal = _interception_refusal(settings)
    if refusal is not None:
        print(f"meshproxy: {refusal}", file=sys.stderr)
        return 1
    _install_uvloop()
    control_fd = env.get(CONTROL_FD_ENV)
    if control_fd is not None:
        # A worker: DogStatsD is flushed once, by the supervisor, from the totals.
        worker_settings = dataclasses.replace(settings, dogstatsd=False, concurrency=1)
        return asyncio.run(_serve_worker(worker_settings, int(control_fd)))
    if settings.concurrency > 1:
        from meshproxy.supervisor import Supervisor

        return asyncio.run(Supervisor(settings, list(argv)).run())
    return asyncio.run(_serve(settings))


def _interception_refusal(settings: Settings) -> str | None:
    try:
        from meshproxy.interception.guard import check_not_intercepted
    except ImportError:  # pragma: no cover
        return None
    return check_not_intercepted(os.getuid())


async def _serve_worker(settings: Settings, control_fd: int) -> int:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=control_fd))
    try:
        return await Server(settings, WorkerChannel(reader, writer)).run()
    finally:
        writer.close()


async def _serve(settings: Settings) -> int:
    server = Server(settings)
    return await server.run()
