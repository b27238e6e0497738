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
from dataclasses import dataclass, fields
from typing import NamedTuple

from meshproxy.config.snapshot import ResourceKind
from meshproxy.settings import Settings
from meshproxy.telemetry.stats import (
    SERVER_STAT_NAMES,
    TARGET_METRIC_NAMES,
    Histogram,
    StatsStore,
    TlsStats,
    gauge_names,
)

Tags = tuple[tuple[str, str], ...]

# Envoy's HTTP connection manager always declares downstream_rq_1xx..5xx, even before any response.
_HTTP_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5)
# App Mesh (>= 1.22.2.1) names the connection manager of each listener `ingress.<protocol>.<port>` when a
# virtual node has several listeners (spec §5.1, tag specifiers appmesh.listener_protocol / _port).
_APPMESH_LISTENER_PREFIX = re.compile(r"(\w+?)\.(\w+?)\.([0-9]+)")


# Scope fields whose Envoy name has a dot where a Python field cannot (outlier detection, health checks).
FIELD_STAT_NAMES: dict[str, str] = {
    "outlier_detection_ejections_active": "outlier_detection.ejections_active",
    "outlier_detection_ejections_enforced_total": "outlier_detection.ejections_enforced_total",
    "health_check_attempt": "health_check.attempt",
    "health_check_success": "health_check.success",
    "health_check_failure": "health_check.failure",
    "health_check_network_failure": "health_check.network_failure",
    "health_check_healthy": "health_check.healthy",
}
# A TLS scope's stats below its listener or cluster: `ssl.<stat>`, except the socket factory's, which Envoy
# names per side (`server_ssl_socket_factory.*` on listeners, `client_ssl_socket_factory.*` on clusters).
_TLS_FACTORY = {"listener": "server_ssl_socket_factory", "cluster": "client_ssl_socket_factory"}
_TLS_FACTORY_STATS = {
    "context_update_by_sds": "ssl_context_update_by_sds",
    "downstream_context_secrets_not_ready": "downstream_context_secrets_not_ready",
    "upstream_context_secrets_not_ready": "upstream_context_secrets_not_ready",
}
# The tags of the per-value TLS counters, as Envoy 1.40 extracts them (a cluster's cipher keeps the older
# `cipher_suite` tag name; read from real Envoy's /stats/prometheus, tests/e2e/test_mesh_tls_envoy.py).
_TLS_VALUE_TAGS = {
    ("listener", "ciphers"): "envoy.ssl_cipher",
    ("cluster", "ciphers"): "cipher_suite",
    ("listener", "versions"): "envoy.ssl_version",
    ("cluster", "versions"): "envoy.ssl_version",
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


class StatPoint(NamedTuple):
    """One stat read from the store. `value` is the counter/gauge value; `histogram` is set for histograms.

    A NamedTuple rather than a dataclass: a scrape builds thousands of them.
    """

    name: StatName
    kind: StatKind
    value: int = 0
    histogram: Histogram | None = None


# (name, kind, attribute) of every declared stat of one scope instance, built once per scope.
Plan = tuple[tuple[StatName, StatKind, str], ...]
_class_fields: dict[type, tuple[tuple[str, StatKind], ...]] = {}


def _declared(cls: type) -> tuple[tuple[str, StatKind], ...]:
    """A scope class's stats in render order: counters, gauges (sorted), histograms."""
    out = _class_fields.get(cls)
    if out is None:
        gauges = gauge_names(cls)
        declared = fields(cls)
        out = (
            *(
                (f.name, StatKind.COUNTER)
                for f in declared
                if f.type in ("int", int) and f.name not in gauges
            ),
            *((name, StatKind.GAUGE) for name in sorted(gauges)),
            *((f.name, StatKind.HISTOGRAM) for f in declared if f.type in ("Histogram", Histogram)),
        )
        _class_fields[cls] = out
    return out


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
        self._plans: dict[tuple[str, str], Plan] = {}
        self._codes: dict[tuple[str, str], dict[str, StatName]] = {}

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

    def plan(self, scope: str, key: str, cls: type) -> Plan:
        """Names of every declared stat of one scope instance (`scope` "server" / "target" / Envoy scope)."""
        cache_key = (scope, key)
        plan = self._plans.get(cache_key)
        if plan is None:
            entries = []
            for attr, kind in _declared(cls):
                if scope == "server":
                    name = self.plain(SERVER_STAT_NAMES[attr])
                elif scope == "target":
                    virtual_service, _, virtual_node = key.partition("\x00")
                    name = self.target(virtual_service, virtual_node, TARGET_METRIC_NAMES[attr])
                else:
                    name = self.scoped(scope, key, attr)
                entries.append((name, kind, attr))
            plan = self._plans[cache_key] = tuple(entries)
        return plan

    def tls_plan(self, scope: str, key: str) -> Plan:
        """Names of a listener's or cluster's TLS stats (`listener.<address>.ssl.handshake`, ...)."""
        cache_key = (scope + ".ssl", key)
        plan = self._plans.get(cache_key)
        if plan is None:
            factory = _TLS_FACTORY[scope]
            entries = []
            for attr, kind in _declared(TlsStats):
                factory_stat = _TLS_FACTORY_STATS.get(attr)
                stat = f"{factory}.{factory_stat}" if factory_stat else "ssl." + attr
                entries.append((self.scoped(scope, key, stat), kind, attr))
            plan = self._plans[cache_key] = tuple(entries)
        return plan

    def tls_value(self, scope: str, key: str, kind: str, value: str) -> StatName:
        """`<scope>.<key>.ssl.<kind>.<value>` (kind `ciphers` or `versions`): the value becomes a tag."""
        stat = f"ssl.{kind}.{value}"
        cache_key = (scope, key, stat)
        name = self._cache.get(cache_key)
        if name is None:
            base = self.scoped(scope, key, "ssl." + kind)
            tags = ((_TLS_VALUE_TAGS[(scope, kind)], value), *base.tags)
            name = self._cache[cache_key] = StatName(f"{scope}.{key}.{stat}", base.extracted, tags)
        return name

    def code(self, scope: str, key: str, stat: str) -> StatName:
        """`<base>_<code>` / `<base>_<d>xx` names of one scope, cached without building a key per call."""
        codes = self._codes.get((scope, key))
        if codes is None:
            codes = self._codes[(scope, key)] = {}
        name = codes.get(stat)
        if name is None:
            name = codes[stat] = self.scoped(scope, key, stat)
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


def _emit(points: list[StatPoint], plan: Plan, scope: object) -> None:
    for name, kind, attr in plan:
        value = getattr(scope, attr)
        if kind is StatKind.HISTOGRAM:
            points.append(StatPoint(name, kind, 0, value))
        else:
            points.append(StatPoint(name, kind, value))


def _code_points(
    points: list[StatPoint], naming: StatNaming, scope: str, key: str, base: str, by_code: dict[int, int]
) -> None:
    """Per-code counters and their classes (`<base>_200`, `<base>_2xx`), as Envoy counts both."""
    classes: dict[int, int] = dict.fromkeys(_HTTP_CLASSES, 0) if scope == "http" else {}
    for code, count in by_code.items():
        classes[code // 100] = classes.get(code // 100, 0) + count
        points.append(StatPoint(naming.code(scope, key, base + "_" + str(code)), StatKind.COUNTER, count))
    for d, count in classes.items():
        points.append(StatPoint(naming.code(scope, key, base + "_" + str(d) + "xx"), StatKind.COUNTER, count))


def _extension_points(points: list[StatPoint], naming: StatNaming, store: StatsStore) -> None:
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
    points.append(StatPoint(naming.plain("appmesh.ActiveConnectionCount"), StatKind.GAUGE, active))
    points.append(StatPoint(naming.plain("appmesh.NewConnectionCount"), StatKind.COUNTER, new))
    points.append(StatPoint(naming.plain("appmesh.ProcessedBytes"), StatKind.COUNTER, processed))
    points.append(StatPoint(naming.plain("appmesh.RequestCount"), StatKind.COUNTER, requests))
    points.append(StatPoint(naming.plain("appmesh.GrpcRequestCount"), StatKind.COUNTER, grpc))
    for (virtual_service, virtual_node), target in store.targets.items():
        _emit(points, naming.plan("target", virtual_service + "\x00" + virtual_node, type(target)), target)


def _tls_points(points: list[StatPoint], naming: StatNaming, scope: str, key: str, tls: TlsStats) -> None:
    _emit(points, naming.tls_plan(scope, key), tls)
    for cipher, count in tls.ciphers.items():
        points.append(StatPoint(naming.tls_value(scope, key, "ciphers", cipher), StatKind.COUNTER, count))
    for version, count in tls.versions.items():
        points.append(StatPoint(naming.tls_value(scope, key, "versions", version), StatKind.COUNTER, count))


def collect(store: StatsStore, naming: StatNaming) -> list[StatPoint]:
    """Every stat of `store`, named and tagged. Cheap enough for a scrape or a flush, never per request."""
    points: list[StatPoint] = []
    _emit(points, naming.plan("server", "", type(store.server)), store.server)
    for key, cluster in store.clusters.items():
        _emit(points, naming.plan("cluster", key, type(cluster)), cluster)
        _code_points(points, naming, "cluster", key, "upstream_rq", cluster.rq_by_code)
        if cluster.ssl is not None:
            _tls_points(points, naming, "cluster", key, cluster.ssl)
    for key, listener in store.listeners.items():
        _emit(points, naming.plan("listener", key, type(listener)), listener)
        if listener.ssl is not None:
            _tls_points(points, naming, "listener", key, listener.ssl)
    for key, http in store.http.items():
        _emit(points, naming.plan("http", key, type(http)), http)
        _code_points(points, naming, "http", key, "downstream_rq", http.rq_by_code)
    for key, tcp in store.tcp.items():
        _emit(points, naming.plan("tcp", key, type(tcp)), tcp)
    if naming.metric_extension:
        _extension_points(points, naming, store)
    return points
