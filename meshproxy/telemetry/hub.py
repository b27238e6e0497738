"""`Telemetry`: the one object the data plane and the admin server talk to about stats, traces and logs.

Request path (all synchronous, no I/O, no locks); the router sees it as its `Tracer` and `RequestObserver`:

- `start_trace(...)` -> `TraceStart | None`: trace context in, upstream headers out (`tracing.Tracer`);
- `wants_summary`: whether the router should build a `RequestSummary` at all (a sink or the metrics
  extension reads it);
- `request_done(summary)`: counts the metrics extension's per-target stats, then appends the summary to a
  bounded deque when a sink wants it (access log on, or the request's trace is sampled and X-Ray/OTLP export
  is on); when the deque is full the summary is dropped and counted in `server.telemetry_dropped_total`.
  Never blocks, never raises.

Off the request path (`start()` .. `stop()`): a drain task formats queued records in bounded batches every
50 ms (access-log lines to a writer thread, X-Ray segments as UDP datagrams, spans to the OTLP batch
processor's thread); a flush task sends DogStatsD datagrams every ENVOY_STATS_FLUSH_INTERVAL. Renderers
(`render_prometheus`, `render_stats_text`, `render_stats_json`) are pure functions of a StatsStore (by
default this process's, or an aggregate the admin layer builds from several workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from random import Random

from meshproxy.config.snapshot import AccessLogConfig
from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry import prometheus, statstext
from meshproxy.telemetry.accesslog import AccessLogFormat, AccessLogWriter, compile_format
from meshproxy.telemetry.datagram import DatagramSender
from meshproxy.telemetry.names import StatNaming
from meshproxy.telemetry.otel import OtlpSpanSink
from meshproxy.telemetry.stats import StatsStore
from meshproxy.telemetry.statsd import MAX_UDP_PAYLOAD, MAX_UDS_PAYLOAD, DogStatsdFlusher, pack
from meshproxy.telemetry.tracing import TraceContext, Tracer, TraceStart
from meshproxy.telemetry.xray import (
    LocalizedSampler,
    SegmentConfig,
    build_segment,
    default_manifest,
    encode_datagram,
    load_manifest,
)

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = prometheus.CONTENT_TYPE
QUEUE_LIMIT = 8192  # records waiting for the drain task; beyond this they are dropped and counted
DRAIN_BATCH = 256  # records formatted between two yields to the event loop


async def _blocking(fn: Callable[[], None], timeout: float) -> None:
    """Run a blocking shutdown on a daemon thread and wait at most `timeout` for it.

    Not `asyncio.to_thread`: `asyncio.run` waits for the default executor's threads at exit, so an export
    stuck on an unreachable collector would hold the process past its drain deadline.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("telemetry: shutdown step failed")
        with contextlib.suppress(RuntimeError):  # the loop may be gone if we gave up waiting
            loop.call_soon_threadsafe(finish)

    threading.Thread(target=run, name="meshproxy-telemetry-stop", daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, timeout)


class TelemetryState(enum.Enum):
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class Telemetry:
    """Stats store, sinks and tracer of one proxy process.

    Raises `SamplingManifestError` when XRAY_SAMPLING_RULE_MANIFEST cannot be used (the agent fails start-up
    the same way). `clock`, `monotonic` and `rng` are seams for tests; `drain_interval_s` and
    `otlp_schedule_delay_ms` bound how long a finished request waits before its line/segment/span leaves.
    """

    def __init__(
        self,
        settings: Settings,
        store: StatsStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Random | None = None,
        queue_limit: int = QUEUE_LIMIT,
        drain_interval_s: float = 0.05,
        otlp_schedule_delay_ms: float = 1000.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.naming = StatNaming.from_settings(settings)
        rng = rng or Random()
        sampler: LocalizedSampler | None = None
        self._segment: SegmentConfig | None = None
        if settings.xray:
            path = settings.xray_sampling_rule_manifest
            manifest = load_manifest(path) if path else default_manifest(settings.xray_sampling_rate)
            sampler = LocalizedSampler(manifest, monotonic=monotonic, rng=rng)
            self._segment = SegmentConfig.from_identity(settings.identity, settings.xray_segment_name)
        self._otlp_on = settings.otel_endpoint is not None
        self._tracer = Tracer(xray=settings.xray, otlp=self._otlp_on, sampler=sampler, clock=clock, rng=rng)
        self._tracing = settings.xray or self._otlp_on
        self._exporting = settings.xray or self._otlp_on
        self._extension = settings.metric_extension_version == 1
        self.wants_summary: bool = self._exporting or self._extension

        self._access_config: AccessLogConfig | None = None
        self._access_format: AccessLogFormat | None = None
        self._writer: AccessLogWriter | None = None
        self._writer_failed_seen = 0

        self._pending: deque[RequestSummary] = deque()
        self._queue_limit = queue_limit
        self._drain_interval = drain_interval_s
        self._otlp_delay_ms = otlp_schedule_delay_ms

        self._state = TelemetryState.STOPPED
        self._tasks: list[asyncio.Task[None]] = []
        self._statsd: DogStatsdFlusher | None = None
        self._statsd_sender: DatagramSender | None = None
        self._statsd_limit = MAX_UDS_PAYLOAD if settings.statsd_socket_path else MAX_UDP_PAYLOAD
        self._xray_sender: DatagramSender | None = None
        self._otlp: OtlpSpanSink | None = None
        self._failures_logged = False

    def __repr__(self) -> str:
        sinks = [
            name
            for name, on in (
                ("statsd", self.settings.dogstatsd),
                ("xray", self.settings.xray),
                ("otlp", self._otlp_on),
                ("accesslog", self._access_format is not None),
            )
            if on
        ]
        return f"<Telemetry {self._state.value} sinks={','.join(sinks) or '-'} pending={len(self._pending)}>"

    @property
    def state(self) -> TelemetryState:
        return self._state

    # -- configuration (snapshot swaps) ---------------------------------------------------------------------
    def set_access_log(self, config: AccessLogConfig | None) -> None:
        """Apply the snapshot's access-log config. A bad format raises AccessLogFormatError and changes
        nothing (the previous log keeps working); an unchanged config is a no-op."""
        if config == self._access_config:
            return
        fmt = compile_format(config) if config is not None else None
        old = self._writer
        self._access_config, self._access_format = config, fmt
        if config is None:
            self._writer = None
        elif old is None or old.path != config.path:
            self._writer = AccessLogWriter(config.path, self.store.server)
            if self._state is TelemetryState.RUNNING:
                self._writer.start()
        if old is not None and old is not self._writer:
            self._fold_writer_failures(old)
            old.retire()
            self._writer_failed_seen = 0
        self.wants_summary = self._exporting or self._extension or fmt is not None

    # -- request path ----------------------------------------------------------------------------------------
    def start_trace(
        self, direction: str, headers: Sequence[tuple[bytes, bytes]], method: str, authority: str, path: str
    ) -> TraceStart | None:
        """Trace context for one request; None when neither tracing nor W3C propagation applies."""
        if not self._tracing:
            # Tracing off: only an incoming traceparent is propagated. Looked for here, compiled, so that
            # the interpreted Tracer (tracing.py) runs only for requests that carry one.
            for name, _ in headers:
                if name == b"traceparent":
                    break
            else:
                return None
        try:
            return self._tracer.start(direction, headers, method, authority, path)
        except Exception:  # a malformed header must never fail a request
            return None

    def request_done(self, record: RequestSummary) -> None:
        """The router's `RequestObserver`: count the metrics extension's per-target stats, and hand the
        finished request to the background sinks. Never blocks, never raises."""
        try:
            if self._extension and record.target_virtual_node:
                self._count_target(record)
            if self._access_format is None:
                ctx = record.trace
                if isinstance(ctx, TraceStart):
                    ctx = ctx.context
                if not (self._exporting and isinstance(ctx, TraceContext) and ctx.sampled):
                    return
            pending = self._pending
            if len(pending) < self._queue_limit:
                pending.append(record)
            else:
                self.store.server.telemetry_dropped_total += 1
        except Exception:
            pass

    def _count_target(self, record: RequestSummary) -> None:
        """App Mesh metrics extension (APPMESH_METRIC_EXTENSION_VERSION=1): per virtual service and target."""
        target = self.store.target(record.virtual_service or "", record.target_virtual_node or "")
        target.request_count_per_target += 1
        target.count_response(record.response_code)
        target.target_processed_bytes += record.bytes_received + record.bytes_sent
        target.target_response_time.record(float(record.duration_ms))

    # -- renderers -------------------------------------------------------------------------------------------
    def render_prometheus(self, store: StatsStore | None = None) -> bytes:
        """`GET /stats/prometheus` (content type PROMETHEUS_CONTENT_TYPE)."""
        return prometheus.render_prometheus(self.store if store is None else store, self.naming)

    def render_stats_text(
        self, filter: str | None = None, usedonly: bool = False, store: StatsStore | None = None
    ) -> str:
        """`GET /stats`. Raises StatsFilterError for an invalid `filter` regex (answer 400)."""
        return statstext.render_stats_text(
            self.store if store is None else store, self.naming, filter, usedonly
        )

    def render_stats_json(
        self, filter: str | None = None, usedonly: bool = False, store: StatsStore | None = None
    ) -> dict[str, object]:
        """`GET /stats?format=json`. Raises StatsFilterError for an invalid `filter` regex."""
        return statstext.render_stats_json(
            self.store if store is None else store, self.naming, filter, usedonly
        )

    # -- background sinks ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the sinks and start the drain and DogStatsD flush tasks (idempotent)."""
        if self._state is not TelemetryState.STOPPED:
            return
        s = self.settings
        if s.dogstatsd:
            self._statsd = DogStatsdFlusher(self.naming)
            self._statsd.enable_samples(self.store)
            self._statsd_sender = DatagramSender(
                self.store.server, host=s.statsd_address, port=s.statsd_port, path=s.statsd_socket_path
            )
            self._statsd_sender.open()
            self._tasks.append(asyncio.create_task(self._statsd_loop(), name="meshproxy-dogstatsd"))
        if s.xray:
            self._xray_sender = DatagramSender(
                self.store.server, host=s.xray_daemon_address, port=s.xray_daemon_port
            )
            self._xray_sender.open()
        if s.otel_endpoint is not None:
            service = s.xray_segment_name or s.identity.mesh_name + "/" + s.identity.name
            self._otlp = OtlpSpanSink(
                s.otel_endpoint, s.identity, service, schedule_delay_ms=self._otlp_delay_ms
            )
        if self._writer is not None:
            self._writer.start()
        self._tasks.append(asyncio.create_task(self._drain_loop(), name="meshproxy-telemetry-drain"))
        self._state = TelemetryState.RUNNING

    async def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (records, a last DogStatsD flush, queued spans), then close, within
        about `timeout` seconds."""
        if self._state is not TelemetryState.RUNNING:
            return
        self._state = TelemetryState.STOPPING
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        while self._pending:
            self._drain_batch(DRAIN_BATCH * 4)
        if self._statsd is not None:
            self.flush_stats()
        deadline = asyncio.get_running_loop().time() + timeout
        if self._writer is not None:
            writer = self._writer
            await _blocking(lambda: writer.close(timeout), timeout)
            self._fold_writer_failures(writer)
            self._writer_failed_seen = 0
            self._writer = AccessLogWriter(writer.path, self.store.server)  # ready for a restart
        if self._otlp is not None:
            otlp = self._otlp
            await _blocking(otlp.shutdown, max(0.1, deadline - asyncio.get_running_loop().time()))
            self._otlp = None
        for sender in (self._statsd_sender, self._xray_sender):
            if sender is not None:
                sender.close()
        self._statsd_sender = self._xray_sender = None
        self._statsd = None
        self._state = TelemetryState.STOPPED

    def flush_stats(self) -> None:
        """One DogStatsD flush: counters as deltas since the previous flush, gauges, timer samples."""
        if self._statsd is None or self._statsd_sender is None:
            return
        self._statsd.enable_samples(self.store)
        for datagram in pack(self._statsd.lines(self.store), self._statsd_limit):
            self._statsd_sender.send(datagram)

    async def _statsd_loop(self) -> None:
        interval = max(0.01, self.settings.stats_flush_interval_s)
        while True:
            await asyncio.sleep(interval)
            try:
                self.flush_stats()
            except Exception:
                log.exception("telemetry: DogStatsD flush failed")

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(self._drain_interval)
            while self._pending:
                self._drain_batch(DRAIN_BATCH)
                await asyncio.sleep(0)  # let requests run between batches

    def _drain_batch(self, limit: int) -> None:
        pending = self._pending
        fmt = self._access_format
        writer = self._writer
        lines: list[str] = []
        for _ in range(min(limit, len(pending))):
            record = pending.popleft()
            try:
                if fmt is not None:
                    lines.append(fmt.render(record))
                ctx = record.trace
                if isinstance(ctx, TraceStart):
                    ctx = ctx.context
                if isinstance(ctx, TraceContext) and ctx.sampled:
                    if self._xray_sender is not None and self._segment is not None:
                        self._xray_sender.send(encode_datagram(build_segment(record, ctx, self._segment)))
                    if self._otlp is not None:
                        self._otlp.export(record, ctx)
            except Exception:
                self.store.server.telemetry_dropped_total += 1
                if not self._failures_logged:
                    self._failures_logged = True
                    log.exception("telemetry: could not process a request record")
        if lines:
            if writer is not None:
                writer.submit("".join(lines).encode("utf-8"), len(lines))
                self._fold_writer_failures(writer)
            else:
                self.store.server.telemetry_dropped_total += len(lines)

    def _fold_writer_failures(self, writer: AccessLogWriter) -> None:
        # The writer thread counts its own failures; the loop thread adds them to the stat (no shared +=).
        failed = writer.failed_lines
        if failed > self._writer_failed_seen:
            self.store.server.telemetry_dropped_total += failed - self._writer_failed_seen
            self._writer_failed_seen = failed
