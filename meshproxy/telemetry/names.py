"""Stat names and tags: a StatsStore seen the way Envoy's tag extraction sees it.

Every sink (Prometheus, DogStatsD, /stats) reads the store through `collect`, which yields one `StatPoint`
per counter, gauge and histogram with three names:

- `name.full`: Envoy's stat name (`cluster.cds_egress_apps_b_http_9080.upstream_rq_200`), as `/stats`
  prints it;
- `name.extracted`: the tag-extracted name (`cluster.upstream_rq`), what Prometheus and DogStatsD print;
- `name.tags`: the extracted tags in order (`envoy.response_code=200`, `envoy.cluster_name=...`).

Extraction follows Envoy's default tag extractors and App Mesh's tag specifiers (spec §5.1):
`cluster.<name>.` -> envoy.cluster_name; `listener.<address>.` -> envoy.listener_address; `http.<prefix>.` ->
envoy.http_conn_manager_prefix (first token only, as Envoy's `http.$.**`); App Mesh's multi-listener prefix
`ingress.<protocol>.<port>` -> appmesh.listener_protocol and appmesh.listener_port; `tcp.<prefix>.` ->
envoy.tcp_prefix; `_rq_<ddd>` -> envoy.response_code (name keeps `_rq`); `_rq_<d>xx` ->
envoy.response_code_class (name keeps `_rq_xx`). Fixed tags (`appmesh.mesh`, `appmesh.virtual_node`, `Mesh`,
`VirtualNode`, ...) are added to every point by `StatNaming` according to the settings.

Names are built once per (scope, stat) and cached, so a flush or a scrape allocates points, not strings.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

from meshproxy.config.snapshot import ResourceKind
from meshproxy.settings import Settings
from meshproxy.telemetry.stats import (
    SERVER_STAT_NAMES,
    TARGET_METRIC_NAMES,
    ClusterStats,
    Histogram,
    HttpConnManagerStats,
    StatsStore,
)

Tags = tuple[tuple[str, str], ...]

# Envoy's HTTP connection manager always declares downstream_rq_1xx..5xx, even before any response.
_HTTP_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5)
# App Mesh (>= 1.22.2.1) names the connection manager of each listener `ingress.<protocol>.<port>` when a
# virtual node has several listeners (spec §5.1, tag specifiers appmesh.listener_protocol / _port).
_APPMESH_LISTENER_PREFIX = re.compile(r"(\w+?)\.(\w+?)\.([0-9]+)")


# Scope fields whose Envoy name has a dot where a Python field cannot (Envoy's outlier detection stats).
FIELD_STAT_NAMES: dict[str, str] = {
    "outlier_detection_ejections_active": "outlier_detection.ejections_active",
    "outlier_detection_ejections_enforced_total": "outlier_detection.ejections_enforced_total",
}


class StatKind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class StatName:
    """One stat's Envoy name, tag-extracted name and extracted tags (fixed tags not included)."""

    full: str
    extracted: str
    tags: Tags


@dataclass(frozen=True, slots=True)
class StatPoint:
    """One stat read from the store. `value` is the counter/gauge value; `histogram` is set for histograms."""

    name: StatName
    kind: StatKind
    value: int = 0
    histogram: Histogram | None = None


def fixed_tags(settings: Settings) -> Tags:
    """The tags App Mesh attaches to every stat (spec §5.1): stats tags, then the metrics extension's."""
    identity = settings.identity
    gateway = identity.kind is ResourceKind.VIRTUAL_GATEWAY
    tags: list[tuple[str, str]] = []
    if settings.stats_tags:
        tags.append(("appmesh.mesh", identity.mesh_name))
        tags.append(("appmesh.virtual_gateway" if gateway else "appmesh.virtual_node", identity.name))
    if settings.metric_extension_version == 1:
        tags.append(("Mesh", identity.mesh_name))
        tags.append(("VirtualGateway" if gateway else "VirtualNode", identity.name))
    return tuple(tags)


class StatNaming:
    """Builds and caches `StatName`s; carries the fixed tags and which stats are inbound for the extension."""

    def __init__(
        self,
        fixed: Tags = (),
        *,
        metric_extension: bool = False,
        egress_port: int = 15001,
        gateway: bool = False,
    ) -> None:
        self.fixed = fixed
        self.metric_extension = metric_extension
        self.egress_port = egress_port
        self.gateway = gateway
        self._cache: dict[tuple[str, str, str], StatName] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> StatNaming:
        return cls(
            fixed_tags(settings),
            metric_extension=settings.metric_extension_version == 1,
            egress_port=settings.egress_port,
            gateway=settings.identity.kind is ResourceKind.VIRTUAL_GATEWAY,
        )

    # -- scope prefixes -------------------------------------------------------------------------------------
    def scoped(self, scope: str, key: str, stat: str) -> StatName:
        """`<scope>.<key>.<stat>` with the scope's tag and the response-code extractors applied to `stat`."""
        cache_key = (scope, key, stat)
        name = self._cache.get(cache_key)
        if name is not None:
            return name
        stat = FIELD_STAT_NAMES.get(stat, stat)
        stat_tags, stat_rest = _extract_response_code(stat)
        if scope == "cluster":
            extracted = "cluster." + stat_rest
            tags = (*stat_tags, ("envoy.cluster_name", key))
        elif scope == "listener":
            extracted = "listener." + stat_rest
            tags = (*stat_tags, ("envoy.listener_address", key))
        elif scope == "http":
            prefix_tags, remainder = _http_prefix_tags(key)
            extracted = "http." + remainder + stat_rest
            tags = (*stat_tags, *prefix_tags)
        elif scope == "tcp":
            extracted = "tcp." + stat_rest
            tags = (*stat_tags, ("envoy.tcp_prefix", key))
        else:  # pragma: no cover - internal callers only
            raise ValueError(scope)
        name = StatName(scope + "." + key + "." + stat, extracted, tags)
        self._cache[cache_key] = name
        return name

    def plain(self, full: str) -> StatName:
        cache_key = ("", "", full)
        name = self._cache.get(cache_key)
        if name is None:
            name = self._cache[cache_key] = StatName(full, full, ())
        return name

    def target(self, virtual_service: str, virtual_node: str, metric: str) -> StatName:
        cache_key = ("appmesh", virtual_service + "\x00" + virtual_node, metric)
        name = self._cache.get(cache_key)
        if name is None:
            full = "appmesh.TargetVirtualNode." + virtual_node + ".TargetVirtualService." + virtual_service
            name = StatName(
                full + "." + metric,
                "appmesh." + metric,
                (("TargetVirtualNode", virtual_node), ("TargetVirtualService", virtual_service)),
            )
            self._cache[cache_key] = name
        return name

    # -- inbound / outbound split for the metrics extension -------------------------------------------------
    def inbound_listener(self, address: str) -> bool:
        if self.gateway:
            return True
        return not address.endswith("_" + str(self.egress_port))

    @staticmethod
    def inbound_prefix(prefix: str) -> bool:
        return prefix.split(".", 1)[0] != "egress"


def _extract_response_code(stat: str) -> tuple[Tags, str]:
    """Envoy's RESPONSE_CODE (`_rq(_(\\d{3}))$`) and RESPONSE_CODE_CLASS (`_rq_((\\d))xx$`) extractors."""
    if len(stat) > 7 and stat[-7:-3] == "_rq_":
        tail = stat[-3:]
        if tail.isdigit():
            return (("envoy.response_code", tail),), stat[:-4]
        if tail[0].isdigit() and tail[1:] == "xx":
            return (("envoy.response_code_class", tail[0]),), stat[:-3] + "xx"
    return (), stat


def _http_prefix_tags(prefix: str) -> tuple[Tags, str]:
    """Tags of an HTTP connection manager prefix and what stays in the name (Envoy `http.$.**`)."""
    m = _APPMESH_LISTENER_PREFIX.fullmatch(prefix)
    if m is not None and m.group(1) == "ingress":
        return (
            ("envoy.http_conn_manager_prefix", m.group(1)),
            ("appmesh.listener_protocol", m.group(2)),
            ("appmesh.listener_port", m.group(3)),
        ), ""
    first, dot, rest = prefix.partition(".")
    return (("envoy.http_conn_manager_prefix", first),), (rest + "." if dot else "")


def _code_points(
    naming: StatNaming, scope: str, key: str, base: str, by_code: dict[int, int]
) -> Iterator[StatPoint]:
    """Per-code counters and their classes (`<base>_200`, `<base>_2xx`), as Envoy counts both."""
    classes: dict[int, int] = {}
    for code, count in by_code.items():
        classes[code // 100] = classes.get(code // 100, 0) + count
        yield StatPoint(naming.scoped(scope, key, base + "_" + str(code)), StatKind.COUNTER, count)
    if scope == "http":
        for d in _HTTP_CLASSES:
            classes.setdefault(d, 0)
    for d, count in classes.items():
        yield StatPoint(naming.scoped(scope, key, base + "_" + str(d) + "xx"), StatKind.COUNTER, count)


def _cluster_points(naming: StatNaming, key: str, s: ClusterStats) -> Iterator[StatPoint]:
    for stat, value in s.counters():
        yield StatPoint(naming.scoped("cluster", key, stat), StatKind.COUNTER, value)
    for stat, value in s.gauges():
        yield StatPoint(naming.scoped("cluster", key, stat), StatKind.GAUGE, value)
    yield from _code_points(naming, "cluster", key, "upstream_rq", s.rq_by_code)
    yield StatPoint(
        naming.scoped("cluster", key, "upstream_rq_time"), StatKind.HISTOGRAM, 0, s.upstream_rq_time
    )


def _http_points(naming: StatNaming, key: str, s: HttpConnManagerStats) -> Iterator[StatPoint]:
    for stat, value in s.counters():
        yield StatPoint(naming.scoped("http", key, stat), StatKind.COUNTER, value)
    for stat, value in s.gauges():
        yield StatPoint(naming.scoped("http", key, stat), StatKind.GAUGE, value)
    yield from _code_points(naming, "http", key, "downstream_rq", s.rq_by_code)
    yield StatPoint(
        naming.scoped("http", key, "downstream_rq_time"), StatKind.HISTOGRAM, 0, s.downstream_rq_time
    )
    yield StatPoint(
        naming.scoped("http", key, "downstream_cx_length_ms"),
        StatKind.HISTOGRAM,
        0,
        s.downstream_cx_length_ms,
    )


def _extension_points(naming: StatNaming, store: StatsStore) -> Iterator[StatPoint]:
    """The metrics extension (spec §5.1): inbound metrics derived from the store, outbound per target."""
    active = new = processed = requests = grpc = 0
    for address, listener in store.listeners.items():
        if naming.inbound_listener(address):
            active += listener.downstream_cx_active
            new += listener.downstream_cx_total
    for prefix, http in store.http.items():
        if naming.inbound_prefix(prefix):
            requests += http.downstream_rq_total
            processed += http.downstream_cx_rx_bytes_total + http.downstream_cx_tx_bytes_total
            protocol = store.http_protocols.get(prefix)
            if protocol is None:
                m = _APPMESH_LISTENER_PREFIX.fullmatch(prefix)
                protocol = m.group(2) if m is not None else None
            if protocol == "grpc":
                grpc += http.downstream_rq_total
    for prefix, tcp in store.tcp.items():
        if naming.inbound_prefix(prefix):
            processed += tcp.downstream_cx_rx_bytes_total + tcp.downstream_cx_tx_bytes_total
    yield StatPoint(naming.plain("appmesh.ActiveConnectionCount"), StatKind.GAUGE, active)
    yield StatPoint(naming.plain("appmesh.NewConnectionCount"), StatKind.COUNTER, new)
    yield StatPoint(naming.plain("appmesh.ProcessedBytes"), StatKind.COUNTER, processed)
    yield StatPoint(naming.plain("appmesh.RequestCount"), StatKind.COUNTER, requests)
    yield StatPoint(naming.plain("appmesh.GrpcRequestCount"), StatKind.COUNTER, grpc)
    for (virtual_service, virtual_node), target in store.targets.items():
        for stat, value in target.counters():
            metric = TARGET_METRIC_NAMES[stat]
            yield StatPoint(naming.target(virtual_service, virtual_node, metric), StatKind.COUNTER, value)
        yield StatPoint(
            naming.target(virtual_service, virtual_node, TARGET_METRIC_NAMES["target_response_time"]),
            StatKind.HISTOGRAM,
            0,
            target.target_response_time,
        )


def collect(store: StatsStore, naming: StatNaming) -> list[StatPoint]:
    """Every stat of `store`, named and tagged. Cheap enough for a scrape or a flush, never per request."""
    points: list[StatPoint] = []
    server = store.server
    for stat, value in server.counters():
        points.append(StatPoint(naming.plain(SERVER_STAT_NAMES[stat]), StatKind.COUNTER, value))
    for stat, value in server.gauges():
        points.append(StatPoint(naming.plain(SERVER_STAT_NAMES[stat]), StatKind.GAUGE, value))
    for key, cluster in store.clusters.items():
        points.extend(_cluster_points(naming, key, cluster))
    for key, listener in store.listeners.items():
        for stat, value in listener.counters():
            points.append(StatPoint(naming.scoped("listener", key, stat), StatKind.COUNTER, value))
        for stat, value in listener.gauges():
            points.append(StatPoint(naming.scoped("listener", key, stat), StatKind.GAUGE, value))
    for key, http in store.http.items():
        points.extend(_http_points(naming, key, http))
    for key, tcp in store.tcp.items():
        for stat, value in tcp.counters():
            points.append(StatPoint(naming.scoped("tcp", key, stat), StatKind.COUNTER, value))
        for stat, value in tcp.gauges():
            points.append(StatPoint(naming.scoped("tcp", key, stat), StatKind.GAUGE, value))
    if naming.metric_extension:
        points.extend(_extension_points(naming, store))
    return points
