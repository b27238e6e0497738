"""Active health checks of a cluster's hosts: a backend virtual node's listener `healthCheck` (spec §4.2), run
from the client side as App Mesh's Envoys did.

Each host is checked every `intervalMillis` (plus up to 10 % of jitter, so sidecars drift out of step; the
first check comes within a tenth of the interval) on its own connection through the `Connector` seam, with
`timeoutMillis` for the whole check, timed on the `Clock` seam:

- `http`: `GET <path>` over HTTP/1.1 (`Host` is the cluster's name and `User-Agent: Envoy/HC`, as Envoy
  sends); 200 passes;
- `http2`: the same request over h2c (prior knowledge); 200 passes;
- `grpc`: `grpc.health.v1.Health/Check` for the empty service name; `SERVING` with grpc-status 0 passes;
- `tcp`: the connection opens.

The thresholds and what a result does to a host are upstream/health.py's (pure); the cluster is told after
each change so that it recounts its pick set. Stats: `cluster.<name>.health_check.attempt`, `success`,
`failure`, `network_failure`, `healthy`, as Envoy names them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Callable
from typing import Protocol, cast

from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived
from h2.exceptions import H2Error

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.grpc import GRPC_CONTENT_TYPE
from meshproxy.config.snapshot import HealthCheck, ListenerProtocol
from meshproxy.core.clock import Clock, Timer
from meshproxy.net.connector import ConnectFailure, Connector
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.health import after_check, first_check_in, next_check_in
from meshproxy.upstream.host import Host

log = logging.getLogger("meshproxy.upstream")

USER_AGENT = b"Envoy/HC"
GRPC_HEALTH_PATH = b"/grpc.health.v1.Health/Check"
GRPC_EMPTY_REQUEST = b"\x00\x00\x00\x00\x00"  # an uncompressed, empty HealthCheckRequest (service "")
GRPC_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}


class CheckResult(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # the host answered, not healthy
    NETWORK = "network"  # no answer: refused, reset, timed out


class Judge(Protocol):
    """What one check sends and how it reads the answer (None: not decided yet)."""

    def request(self) -> bytes: ...

    def feed(self, data: bytes) -> CheckResult | None: ...


class Http1Judge:
    """`GET <path>` over HTTP/1.1; the status line decides."""

    __slots__ = ("buffer", "path", "server_name")

    def __init__(self, path: str, server_name: str) -> None:
        self.path = path
        self.server_name = server_name
        self.buffer = b""

    def request(self) -> bytes:
        return b"GET %b HTTP/1.1\r\nHost: %b\r\nUser-Agent: %b\r\nConnection: close\r\n\r\n" % (
            self.path.encode(),
            self.server_name.encode(),
            USER_AGENT,
        )

    def feed(self, data: bytes) -> CheckResult | None:
        self.buffer += data
        line, found, _ = self.buffer.partition(b"\r\n")
        if not found:
            return None if len(self.buffer) < 8192 else CheckResult.FAILED
        parts = line.split(b" ", 2)
        passed = len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"
        return CheckResult.PASSED if passed else CheckResult.FAILED


class H2Judge:
    """One request on an h2c connection: `GET <path>` (http2, the status decides), or gRPC's Health/Check
    (grpc: decided when the stream ends, by grpc-status 0 and a SERVING answer)."""

    __slots__ = ("grpc", "grpc_status", "h2", "message", "path", "server_name", "status")

    def __init__(self, path: str, server_name: str, grpc: bool) -> None:
        self.path = path
        self.server_name = server_name
        self.grpc = grpc
        self.h2 = h2_codec.new_connection(client_side=True)
        self.status = b""
        self.grpc_status = b""
        self.message = b""

    def request(self) -> bytes:
        h2 = self.h2
        h2.initiate_connection()
        headers = [
            (b":method", b"POST" if self.grpc else b"GET"),
            (b":scheme", b"http"),
            (b":path", GRPC_HEALTH_PATH if self.grpc else self.path.encode()),
            (b":authority", self.server_name.encode()),
            (b"user-agent", USER_AGENT),
        ]
        if self.grpc:
            headers += [(b"content-type", GRPC_CONTENT_TYPE), (b"te", b"trailers")]
        h2.send_headers(1, headers, end_stream=not self.grpc)
        if self.grpc:
            h2.send_data(1, GRPC_EMPTY_REQUEST, end_stream=True)
        return h2.data_to_send()

    def feed(self, data: bytes) -> CheckResult | None:
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            return CheckResult.FAILED
        for event in events:
            if isinstance(event, ResponseReceived | TrailersReceived):
                fields = dict(event.headers)
                self.status = fields.get(b":status", self.status)
                self.grpc_status = fields.get(b"grpc-status", self.grpc_status)
                if not self.grpc:
                    return CheckResult.PASSED if self.status == b"200" else CheckResult.FAILED
            elif isinstance(event, DataReceived):
                self.message += event.data
            elif isinstance(event, StreamEnded):
                serving = self.grpc_status == b"0" and self.message[5:] == GRPC_SERVING
                return CheckResult.PASSED if self.status == b"200" and serving else CheckResult.FAILED
            elif isinstance(event, StreamReset):
                return CheckResult.FAILED
        return None


class _CheckConnection(asyncio.Protocol):
    """One check's connection: sends the judge's request once connected, hands it what comes back."""

    __slots__ = ("judge", "outcome", "transport")

    def __init__(self, judge: Judge | None, outcome: asyncio.Future[CheckResult]) -> None:
        self.judge = judge
        self.outcome = outcome
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.judge is None:  # tcp: connecting is the check
            self._decide(CheckResult.PASSED)
        else:
            self.transport.write(self.judge.request())

    def data_received(self, data: bytes) -> None:
        if self.judge is not None and not self.outcome.done():
            result = self.judge.feed(data)
            if result is not None:
                self._decide(result)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._decide(CheckResult.NETWORK)

    def _decide(self, result: CheckResult) -> None:
        if not self.outcome.done():
            self.outcome.set_result(result)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HealthChecker:
    """Checks every host of one cluster; `on_change` is called when a host's health changed."""

    __slots__ = (
        "check", "clock", "connector", "hosts", "on_change", "rng", "server_name", "stats", "stopped",
        "tasks",
    )  # fmt: skip

    def __init__(
        self,
        check: HealthCheck,
        server_name: str,
        connector: Connector,
        clock: Clock,
        stats: ClusterStats,
        on_change: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.check = check
        self.server_name = server_name
        self.connector = connector
        self.clock = clock
        self.stats = stats
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.hosts: dict[Host, Timer | None] = {}  # the hosts checked, with the timer of the next check
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False

    def __repr__(self) -> str:
        check = self.check
        return (
            f"<HealthChecker {check.protocol.value} every {check.interval:g}s hosts={len(self.hosts)} "
            f"in_flight={len(self.tasks)}>"
        )

    def set_hosts(self, hosts: list[Host]) -> None:
        """Check new hosts (soon: they are out of the pick set until their first check), stop checking the
        ones that left."""
        current = set(hosts)
        for host in [h for h in self.hosts if h not in current]:
            timer = self.hosts.pop(host)
            if timer is not None:
                timer.cancel()
        for host in hosts:
            if host not in self.hosts:
                self._schedule(host, first_check_in(self.check, self.rng))

    def stop(self) -> None:
        self.stopped = True
        for timer in self.hosts.values():
            if timer is not None:
                timer.cancel()
        self.hosts.clear()
        for task in self.tasks:
            task.cancel()

    # ---------------------------------------------------------------- one check
    def _schedule(self, host: Host, delay: float) -> None:
        self.hosts[host] = self.clock.call_later(delay, lambda: self._due(host))

    def _due(self, host: Host) -> None:
        if self.stopped or host not in self.hosts:
            return
        self.hosts[host] = None
        task = asyncio.get_running_loop().create_task(self._run(host))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, host: Host) -> None:
        self.stats.health_check_attempt += 1
        result = await self._probe(host)
        if self.stopped or host not in self.hosts:
            return  # the host left meanwhile: its result means nothing now
        self._record(host, result)
        self._schedule(host, next_check_in(self.check, self.rng))

    async def _probe(self, host: Host) -> CheckResult:
        check = self.check
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[CheckResult] = loop.create_future()
        timer = self.clock.call_later(
            check.timeout, lambda: None if outcome.done() else outcome.set_result(CheckResult.NETWORK)
        )
        connection = _CheckConnection(self._judge(), outcome)
        try:
            await self.connector.connect(connection, host.address, check.port or host.port, check.timeout)
        except ConnectFailure:
            timer.cancel()
            return CheckResult.NETWORK
        try:
            return await outcome
        finally:
            timer.cancel()
            connection.close()

    def _judge(self) -> Judge | None:
        check = self.check
        path = check.path or "/"
        if check.protocol is ListenerProtocol.HTTP:
            return Http1Judge(path, self.server_name)
        if check.protocol in (ListenerProtocol.HTTP2, ListenerProtocol.GRPC):
            return H2Judge(path, self.server_name, grpc=check.protocol is ListenerProtocol.GRPC)
        return None

    def _record(self, host: Host, result: CheckResult) -> None:
        stats = self.stats
        passed = result is CheckResult.PASSED
        if passed:
            stats.health_check_success += 1
        else:
            stats.health_check_failure += 1
            if result is CheckResult.NETWORK:
                stats.health_check_network_failure += 1
        was_failed, first = host.hc_failed, host.hc_pending
        host.hc_failed, host.hc_streak = after_check(was_failed, host.hc_streak, passed, self.check, first)
        host.hc_pending = False
        if host.hc_failed is not was_failed:
            log.info("cluster %s: host %s is %s (health check %s)", self.server_name, host.label,
                     "unhealthy" if host.hc_failed else "healthy", result.value)  # fmt: skip
        if host.hc_failed is not was_failed or first:
            self.on_change()
