"""The stats store: plain integers on the request path, read by sinks on their own schedule.

Every stat is declared once, here, as a field whose name is Envoy's stat name relative to its scope
(`cluster.<name>.` + field, `listener.<address>.` + field, ...). Fields a class's `gauge_names()` lists
are gauges; every other int field is a counter. Response codes are counted per code (`upstream_rq_<code>`),
and the `_2xx`-style classes are derived when rendering, as Envoy's tag extraction would see them.

Call sites do `stats.upstream_rq_total += 1`: no name building, no locks (one event loop per process).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields

# Envoy's default histogram bucket bounds (ms), from the admin docs' example (spec §5.3).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
    3600000,
)  # fmt: skip


class Histogram:
    """A cumulative histogram of millisecond samples with Envoy's bucket bounds.

    `record` is the only call on the request path: one bisect and two adds. Sinks that want per-sample values
    (DogStatsD timers) read `recent`, a bounded list they drain.
    """

    __slots__ = ("bounds", "count", "counts", "recent", "recent_dropped", "recent_limit", "sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS, recent_limit: int = 0) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot is +Inf
        self.count = 0
        self.sum = 0.0
        self.recent: list[float] = []
        self.recent_limit = recent_limit
        self.recent_dropped = 0

    def record(self, value_ms: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value_ms)] += 1
        self.count += 1
        self.sum += value_ms
        if self.recent_limit:
            if len(self.recent) < self.recent_limit:
                self.recent.append(value_ms)
            else:
                self.recent_dropped += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out

    def quantile(self, q: float) -> float | None:
        """Approximate quantile (upper bucket bound), as Envoy's /stats summary prints it."""
        if not self.count:
            return None
        target = q * self.count
        running = 0
        for i, c in enumerate(self.counts):
            running += c
            if running >= target and c:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.recent.clear()


class _Scope:
    """Shared behaviour of every stats scope: enumerate counters and gauges by their declared names.

    Each scope names its gauges in a classmethod rather than a `ClassVar`: compiled with mypyc (the request
    path counts into these scopes), a dataclass loses its `ClassVar` annotations and would make it a field.
    """

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset()

    def counters(self) -> list[tuple[str, int]]:
        gauges = self.gauge_names()
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
            if f.type in ("int", int) and f.name not in gauges
        ]

    def gauges(self) -> list[tuple[str, int]]:
        return [(name, getattr(self, name)) for name in sorted(self.gauge_names())]

    def reset_counters(self) -> None:
        gauges = self.gauge_names()
        for f in fields(self):  # type: ignore[arg-type]
            if f.type in ("int", int) and f.name not in gauges:
                setattr(self, f.name, 0)
        ssl = getattr(self, "ssl", None)
        if ssl is not None:
            ssl.reset_counters()
            ssl.ciphers.clear()
            ssl.versions.clear()


@dataclass(slots=True, eq=False)
class TlsStats(_Scope):
    """`<listener|cluster scope>.ssl.*` of a listener that terminates TLS or a cluster that originates it
    (Envoy's SSL stats, `ALL_SSL_STATS`), with the socket factory's context counters (Envoy's
    `<scope>.server_ssl_socket_factory.*` / `client_ssl_socket_factory.*`).

    `ciphers` / `versions` count handshakes by negotiated cipher suite and protocol version
    (`ssl.ciphers.<cipher>`, `ssl.versions.<version>`; Envoy's `ssl.curves` / `ssl.sigalgs` are not kept:
    Python's ssl module does not report the negotiated group or signature algorithm). A verification
    failure counts only its own `fail_verify_*` stat, as Envoy counts it; other handshake failures count
    `connection_error`.
    """

    connection_error: int = 0
    handshake: int = 0
    session_reused: int = 0
    no_certificate: int = 0  # a handshake with no peer certificate (listeners: the client sent none)
    fail_verify_no_cert: int = 0  # a client certificate was required and none came
    fail_verify_error: int = 0  # the peer's certificate did not verify against the trust bundle
    fail_verify_san: int = 0  # ... verified, but carries none of the subject alternative names accepted
    fail_verify_cert_hash: int = 0
    context_update_by_sds: int = 0  # <factory>.ssl_context_update_by_sds
    # <factory>.*_context_secrets_not_ready: Envoy declares both on both sides; a listener counts the
    # downstream one, a cluster the upstream one
    downstream_context_secrets_not_ready: int = 0
    upstream_context_secrets_not_ready: int = 0
    ciphers: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def count_handshake(self, cipher: str | None, version: str | None) -> None:
        self.handshake += 1
        if cipher:
            self.ciphers[cipher] = self.ciphers.get(cipher, 0) + 1
        if version:
            self.versions[version] = self.versions.get(version, 0) + 1


@dataclass(slots=True, eq=False)
class ClusterStats(_Scope):
    """`cluster.<name>.*`"""

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset(
        {"upstream_cx_active", "upstream_rq_active", "upstream_rq_pending_active", "membership_total",
         "membership_healthy", "outlier_detection_ejections_active", "health_check_healthy"}
    )  # fmt: skip

    upstream_cx_total: int = 0
    upstream_cx_active: int = 0
    upstream_cx_connect_fail: int = 0
    upstream_cx_connect_timeout: int = 0
    upstream_cx_none_healthy: int = 0  # no host to pick (Envoy's counter behind 503 UH)
    upstream_cx_destroy: int = 0
    upstream_cx_destroy_remote: int = 0
    upstream_cx_destroy_local: int = 0
    upstream_cx_overflow: int = 0
    upstream_cx_rx_bytes_total: int = 0
    upstream_cx_tx_bytes_total: int = 0
    upstream_rq_total: int = 0
    upstream_rq_active: int = 0
    upstream_rq_completed: int = 0
    upstream_rq_pending_total: int = 0
    upstream_rq_pending_active: int = 0
    upstream_rq_pending_overflow: int = 0
    upstream_rq_retry: int = 0
    upstream_rq_retry_success: int = 0
    upstream_rq_retry_overflow: int = 0
    upstream_rq_retry_limit_exceeded: int = 0
    upstream_rq_timeout: int = 0
    upstream_rq_per_try_timeout: int = 0
    upstream_rq_rx_reset: int = 0
    upstream_rq_tx_reset: int = 0
    upstream_rq_maintenance_mode: int = 0
    upstream_rq_pending_failure_eject: int = 0
    membership_total: int = 0
    membership_healthy: int = 0
    outlier_detection_ejections_active: int = 0
    outlier_detection_ejections_enforced_total: int = 0
    lb_healthy_panic: int = 0  # requests balanced over every host: too few were healthy
    health_check_attempt: int = 0  # cluster.<name>.health_check.* (active health checks)
    health_check_success: int = 0
    health_check_failure: int = 0
    health_check_network_failure: int = 0  # no answer: refused, reset, timed out
    health_check_healthy: int = 0
    rq_by_code: dict[int, int] = field(default_factory=dict)  # upstream_rq_<code>
    upstream_rq_time: Histogram = field(default_factory=Histogram)
    ssl: TlsStats | None = None  # set while the cluster originates TLS

    def count_response(self, status: int) -> None:
        self.rq_by_code[status] = self.rq_by_code.get(status, 0) + 1

    def tls(self) -> TlsStats:
        """The cluster's `ssl.*` scope, created when it first originates TLS (Envoy has it only then)."""
        if self.ssl is None:
            self.ssl = TlsStats()
        return self.ssl


@dataclass(slots=True, eq=False)
class ListenerStats(_Scope):
    """`listener.<address>.*` (address like `0.0.0.0_15000`)."""

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset({"downstream_cx_active"})

    downstream_cx_total: int = 0
    downstream_cx_active: int = 0
    downstream_cx_destroy: int = 0
    downstream_cx_overflow: int = 0
    no_filter_chain_match: int = 0
    ssl: TlsStats | None = None  # listener.<address>.ssl.*: set once the listener terminates TLS (spec §5.1)

    def tls(self) -> TlsStats:
        if self.ssl is None:
            self.ssl = TlsStats()
        return self.ssl


@dataclass(slots=True, eq=False)
class HttpConnManagerStats(_Scope):
    """`http.<prefix>.*` (prefix `ingress` / `egress`, or `ingress.http.<port>` with several listeners)."""

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset({"downstream_cx_active", "downstream_rq_active"})

    downstream_cx_total: int = 0
    downstream_cx_active: int = 0
    downstream_cx_http1_total: int = 0
    downstream_cx_http2_total: int = 0
    downstream_cx_protocol_error: int = 0
    downstream_cx_destroy_remote_active_rq: int = 0
    downstream_cx_rx_bytes_total: int = 0
    downstream_cx_tx_bytes_total: int = 0
    downstream_cx_upgrades_total: int = 0
    downstream_rq_total: int = 0
    downstream_rq_active: int = 0
    downstream_rq_http1_total: int = 0
    downstream_rq_http2_total: int = 0
    downstream_rq_rx_reset: int = 0
    downstream_rq_timeout: int = 0
    downstream_rq_idle_timeout: int = 0
    downstream_rq_header_timeout: int = 0  # a request head incomplete for the request-headers timeout
    downstream_rq_completed: int = 0
    no_route: int = 0
    no_cluster: int = 0
    rq_total: int = 0
    rq_by_code: dict[int, int] = field(default_factory=dict)  # downstream_rq_<code>
    downstream_rq_time: Histogram = field(default_factory=Histogram)
    downstream_cx_length_ms: Histogram = field(default_factory=Histogram)

    def count_response(self, status: int) -> None:
        self.rq_by_code[status] = self.rq_by_code.get(status, 0) + 1


@dataclass(slots=True, eq=False)
class TcpProxyStats(_Scope):
    """`tcp.<prefix>.*`"""

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset({"downstream_cx_total_active"})

    downstream_cx_total: int = 0
    downstream_cx_total_active: int = 0
    downstream_cx_rx_bytes_total: int = 0
    downstream_cx_tx_bytes_total: int = 0
    downstream_cx_no_route: int = 0
    idle_timeout: int = 0
    upstream_flush_total: int = 0


@dataclass(slots=True, eq=False)
class ServerStats(_Scope):
    """`server.*`, `cluster_manager.*`, `listener_manager.*`, `control_plane.*` (process-wide)."""

    @classmethod
    def gauge_names(cls) -> frozenset[str]:
        return frozenset(
        {"server_live", "server_state", "server_uptime", "server_concurrency", "server_memory_allocated",
         "cluster_manager_active_clusters", "cluster_manager_warming_clusters",
         "listener_manager_total_listeners_active", "control_plane_connected_state"}
    )  # fmt: skip

    server_live: int = 0
    server_state: int = 2  # Envoy: 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING, 3 INITIALIZING
    server_uptime: int = 0
    server_concurrency: int = 1
    server_memory_allocated: int = 0
    cluster_manager_active_clusters: int = 0
    cluster_manager_warming_clusters: int = 0
    cluster_manager_cds_update_success: int = 0
    cluster_manager_cds_update_rejected: int = 0
    listener_manager_lds_update_success: int = 0
    listener_manager_lds_update_rejected: int = 0
    listener_manager_listener_create_failure: int = 0
    listener_manager_total_listeners_active: int = 0
    control_plane_connected_state: int = 0
    worker_restarts: int = 0  # ENVOY_CONCURRENCY > 1: workers restarted by the supervisor
    telemetry_dropped_total: int = 0  # meshproxy: records dropped by full background sink queues
    telemetry_send_errors_total: int = 0  # meshproxy: DogStatsD / X-Ray datagrams the kernel refused


@dataclass(slots=True, eq=False)
class TargetStats(_Scope):
    """The App Mesh metrics extension's outbound scope for one (TargetVirtualService, TargetVirtualNode) pair.

    Only created when APPMESH_METRIC_EXTENSION_VERSION=1 (spec §5.1). Rendered as
    `envoy.appmesh.<Metric>` / `envoy_appmesh_<Metric>` with the Target* dimensions; the names of the
    fields map to the extension's metric names in `TARGET_METRIC_NAMES`.
    """

    request_count_per_target: int = 0
    http_code_target_2xx_count: int = 0
    http_code_target_3xx_count: int = 0
    http_code_target_4xx_count: int = 0
    http_code_target_5xx_count: int = 0
    target_processed_bytes: int = 0
    target_response_time: Histogram = field(default_factory=Histogram)  # request start -> full response, ms

    def count_response(self, status: int) -> None:
        """Count one upstream response in its HTTPCode_Target_<d>XX_Count class (1xx is not counted)."""
        if 200 <= status < 300:
            self.http_code_target_2xx_count += 1
        elif 300 <= status < 400:
            self.http_code_target_3xx_count += 1
        elif 400 <= status < 500:
            self.http_code_target_4xx_count += 1
        elif 500 <= status < 600:
            self.http_code_target_5xx_count += 1


# The metrics extension's metric name for each TargetStats field (spec §5.1 table).
TARGET_METRIC_NAMES: dict[str, str] = {
    "request_count_per_target": "RequestCountPerTarget",
    "http_code_target_2xx_count": "HTTPCode_Target_2XX_Count",
    "http_code_target_3xx_count": "HTTPCode_Target_3XX_Count",
    "http_code_target_4xx_count": "HTTPCode_Target_4XX_Count",
    "http_code_target_5xx_count": "HTTPCode_Target_5XX_Count",
    "target_processed_bytes": "TargetProcessedBytes",
    "target_response_time": "TargetResponseTime",
}


# Envoy name of each ServerStats field (its scope is part of the field name).
SERVER_STAT_NAMES: dict[str, str] = {
    "server_live": "server.live",
    "server_state": "server.state",
    "server_uptime": "server.uptime",
    "server_concurrency": "server.concurrency",
    "server_memory_allocated": "server.memory_allocated",
    "cluster_manager_active_clusters": "cluster_manager.active_clusters",
    "cluster_manager_warming_clusters": "cluster_manager.warming_clusters",
    "cluster_manager_cds_update_success": "cluster_manager.cds.update_success",
    "cluster_manager_cds_update_rejected": "cluster_manager.cds.update_rejected",
    "listener_manager_lds_update_success": "listener_manager.lds.update_success",
    "listener_manager_lds_update_rejected": "listener_manager.lds.update_rejected",
    "listener_manager_listener_create_failure": "listener_manager.listener_create_failure",
    "listener_manager_total_listeners_active": "listener_manager.total_listeners_active",
    "control_plane_connected_state": "control_plane.connected_state",
    "worker_restarts": "meshproxy.worker_restarts",
    "telemetry_dropped_total": "meshproxy.telemetry.dropped_total",
    "telemetry_send_errors_total": "meshproxy.telemetry.send_errors_total",
}


class StatsStore:
    """All scopes of one process, created on first use and kept across config swaps (names are stable)."""

    def __init__(self) -> None:
        self.server = ServerStats()
        self.clusters: dict[str, ClusterStats] = {}
        self.listeners: dict[str, ListenerStats] = {}
        self.http: dict[str, HttpConnManagerStats] = {}
        self.tcp: dict[str, TcpProxyStats] = {}
        # Metrics extension (APPMESH_METRIC_EXTENSION_VERSION=1): (virtual service, virtual node) -> scope.
        self.targets: dict[tuple[str, str], TargetStats] = {}
        # Listener protocol ("http" | "http2" | "grpc") of each HTTP connection manager prefix, set by the
        # data plane when it applies a snapshot (not per request); the extension's GrpcRequestCount reads it.
        self.http_protocols: dict[str, str] = {}

    def cluster(self, name: str) -> ClusterStats:
        s = self.clusters.get(name)
        if s is None:
            s = self.clusters[name] = ClusterStats()
        return s

    def listener(self, address: str) -> ListenerStats:
        s = self.listeners.get(address)
        if s is None:
            s = self.listeners[address] = ListenerStats()
        return s

    def http_conn_manager(self, prefix: str) -> HttpConnManagerStats:
        s = self.http.get(prefix)
        if s is None:
            s = self.http[prefix] = HttpConnManagerStats()
        return s

    def tcp_proxy(self, prefix: str) -> TcpProxyStats:
        s = self.tcp.get(prefix)
        if s is None:
            s = self.tcp[prefix] = TcpProxyStats()
        return s

    def target(self, virtual_service: str, virtual_node: str) -> TargetStats:
        key = (virtual_service, virtual_node)
        s = self.targets.get(key)
        if s is None:
            s = self.targets[key] = TargetStats()
        return s

    def histograms(self) -> list[Histogram]:
        """Every histogram in the store (sinks adjust `recent_limit` on them)."""
        out: list[Histogram] = [c.upstream_rq_time for c in self.clusters.values()]
        for h in self.http.values():
            out.append(h.downstream_rq_time)
            out.append(h.downstream_cx_length_ms)
        out.extend(t.target_response_time for t in self.targets.values())
        return out

    def reset_counters(self) -> None:
        self.server.reset_counters()
        for group in (self.clusters, self.listeners, self.http, self.tcp, self.targets):
            for scope in group.values():
                scope.reset_counters()


def gauge_names(scope: type) -> frozenset[str]:
    """The gauges of a stats scope class (none for other classes)."""
    return scope.gauge_names() if issubclass(scope, _Scope) else frozenset()
