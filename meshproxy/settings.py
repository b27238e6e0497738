"""The App Mesh / Envoy environment variables, parsed once into one frozen `Settings`.

Parsing follows the App Mesh agent (spec §1.1): values are whitespace-trimmed and an empty value counts as
unset; booleans use Go's strconv.ParseBool set; a value that cannot be parsed is fatal (`SettingsError`, which
names the variable) and start-up stops. The few values the agent clamps instead of rejecting
(`LISTENER_DRAIN_WAIT_TIME_S`, `ENVOY_LOG_LEVEL`) are replaced by their default with a logged warning, as the
agent does.

Entry points: `load_settings(env, config_source=...)` and `parse_identity(env)`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshproxy.codec.h1 import MAX_HEADERS_COUNT, MAX_HEADERS_KB
from meshproxy.config.snapshot import (
    DEFAULT_RETRY_BUDGET,
    ENVOY_DEFAULT_LIMITS,
    ConnectionPoolLimits,
    Identity,
    ResourceKind,
    RetryBudget,
)
from meshproxy.config.sources import SourceOptions, parse_headers

log = logging.getLogger("meshproxy.settings")


class SettingsError(Exception):
    """An environment variable has a value meshproxy cannot use. `variable` names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


@dataclass(frozen=True, slots=True)
class Settings:
    identity: Identity
    # config source (file path or http(s) URL): --config or MESHPROXY_CONFIG
    config_source: str | None = None
    config_refresh_s: float = 5.0  # MESHPROXY_CONFIG_REFRESH_S, 0 = read once, never poll
    initial_fetch_timeout_s: float = 0.0  # ENVOY_INITIAL_FETCH_TIMEOUT, 0 = wait forever
    # listeners
    ingress_port: int = 15000  # APPMESH_ENVOY_INGRESS_PORT (same variable the route manager reads)
    egress_port: int = 15001  # APPMESH_ENVOY_EGRESS_PORT
    listen_address: str = "0.0.0.0"  # MESHPROXY_LISTEN_ADDRESS
    # admin
    admin_port: int = 9901  # ENVOY_ADMIN_ACCESS_PORT
    admin_ipv6: bool = False  # ENVOY_ADMIN_ACCESS_ENABLE_IPV6
    admin_access_log: str = (
        "/tmp/envoy_admin_access.log"  # ENVOY_ADMIN_ACCESS_LOG_FILE (default_admin_access_log)
    )
    # process
    log_level: str = "info"  # ENVOY_LOG_LEVEL: trace debug info warn error critical off ("warning" -> "warn")
    concurrency: int = 1  # ENVOY_CONCURRENCY (worker processes)
    drain_wait_s: int = 20  # LISTENER_DRAIN_WAIT_TIME_S, 5..110
    http1_parser: str = "httptools"  # MESHPROXY_HTTP1_PARSER: httptools | h11
    http2_codec: str = "lean"  # MESHPROXY_HTTP2_CODEC: lean | h2 (the h2 library, the reference)
    # request head limits, Envoy's defaults (HCM max_request_headers_kb, max_headers_count): beyond -> 431
    max_request_headers_kb: int = MAX_HEADERS_KB  # MESHPROXY_MAX_REQUEST_HEADERS_KB, 1..8192 (Envoy's range)
    max_request_headers_count: int = MAX_HEADERS_COUNT  # MESHPROXY_MAX_REQUEST_HEADERS_COUNT, >= 1
    ignored_uid: int = 1337  # APPMESH_IGNORE_UID: the UID the interception rules skip
    # resilience under failure and load (issue 14)
    request_headers_timeout_s: float | None = 60.0  # MESHPROXY_REQUEST_HEADERS_TIMEOUT_S; 0 -> None (none)
    retry_budget: RetryBudget | None = (
        DEFAULT_RETRY_BUDGET  # MESHPROXY_RETRY_BUDGET_*; _TOKENS=0 -> None (none)
    )
    egress_limits: ConnectionPoolLimits = ENVOY_DEFAULT_LIMITS  # MESHPROXY_EGRESS_MAX_{CONNECTIONS,...}
    # stats
    stats_tags: bool = False  # ENABLE_ENVOY_STATS_TAGS
    stats_flush_interval_s: float = 5.0  # ENVOY_STATS_FLUSH_INTERVAL (Go duration)
    metric_extension_version: int = 0  # APPMESH_METRIC_EXTENSION_VERSION
    dogstatsd: bool = False  # ENABLE_ENVOY_DOG_STATSD
    statsd_address: str = "127.0.0.1"  # STATSD_ADDRESS
    statsd_port: int = 8125  # STATSD_PORT
    statsd_socket_path: str | None = None  # STATSD_SOCKET_PATH (wins over address/port)
    # tracing (at most one driver)
    xray: bool = False  # ENABLE_ENVOY_XRAY_TRACING
    xray_daemon_address: str = "127.0.0.1"  # AWS_XRAY_DAEMON_ADDRESS (may be ip:port)
    xray_daemon_port: int = 2000  # XRAY_DAEMON_PORT
    xray_sampling_rate: float = 0.05  # XRAY_SAMPLING_RATE, 0..1, 2 decimals
    xray_sampling_rule_manifest: str | None = None  # XRAY_SAMPLING_RULE_MANIFEST
    xray_segment_name: str = ""  # XRAY_SEGMENT_NAME, default "<mesh>/<resource>"
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT
    # config source access: MESHPROXY_CONFIG_HEADERS / --config-header (secrets: kept out of the repr),
    # MESHPROXY_CONFIG_CA_BUNDLE / --config-ca-bundle
    config_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    config_ca_bundle: str | None = None
    # TLS: APPMESH_SDS_SOCKET_PATH, the unix socket of the SDS agent serving `sds` certificates (spec §1.8);
    # unset, `sds` secrets cannot be fetched (the Kubernetes injector set SPIRE's agent socket)
    sds_socket_path: str | None = None

    @property
    def source_options(self) -> SourceOptions:
        return SourceOptions(headers=self.config_headers, ca_bundle=self.config_ca_bundle)


# Go strconv.ParseBool (spec §1.1).
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
# Go strconv.Atoi: optional sign, ASCII digits only (Python's int() would also take "1_000" and "٣").
_INT = re.compile(r"[+-]?[0-9]+")
# Envoy's `-l` levels the agent accepts (spec §1.3, [SCA-cfg] validateEnvoyLogLevel).
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical", "off")
HTTP1_PARSERS = ("httptools", "h11")
HTTP2_CODECS = ("lean", "h2")
DRAIN_WAIT_MIN_S, DRAIN_WAIT_MAX_S, DRAIN_WAIT_DEFAULT_S = 5, 110, 20
INT32_MAX = 2147483647  # Envoy's uint32 limits (max_headers_count, circuit breakers), kept int32-sized
# Go time.ParseDuration units, in seconds.
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = re.compile("([0-9]*(?:\\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_TRACING_VARIABLES = (
    "ENABLE_ENVOY_XRAY_TRACING",
    "ENABLE_ENVOY_DATADOG_TRACING",
    "ENABLE_ENVOY_JAEGER_TRACING",
)
_IDENTITY_VARIABLES = ("APPMESH_RESOURCE_ARN", "APPMESH_RESOURCE_NAME", "APPMESH_VIRTUAL_NODE_NAME")


class _Env:
    """Typed, agent-compatible readers over one environment mapping (spec §1.1)."""

    __slots__ = ("_env",)

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str) -> str | None:
        """The trimmed value, or None when unset or blank."""
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        value = self.get(name)
        return default if value is None else value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise SettingsError(
            name,
            "must be a boolean value (1, t, T, true, TRUE, True, 0, f, F, false, FALSE, False), "
            f"got {value!r}",
        )

    def integer(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if not _INT.fullmatch(value):
            raise SettingsError(name, f"must be a base-10 integer, got {value!r}")
        return int(value)

    def port(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if not 1 <= value <= 65535:
            raise SettingsError(name, f"must be a port number in 1..65535, got {value}")
        return value

    def decimal(self, name: str, default: float) -> float:
        value = self.get(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"must be a decimal number, got {value!r}") from None
        if not math.isfinite(number):
            raise SettingsError(name, f"must be a finite decimal number, got {value!r}")
        return number


def parse_identity(env: Mapping[str, str]) -> Identity:
    """Who this proxy is (spec §1.2, [SCA-boot] getNodeId / getMeshResourceFromNodeId).

    The node id is the first set of APPMESH_RESOURCE_ARN, APPMESH_RESOURCE_NAME, APPMESH_VIRTUAL_NODE_NAME,
    kept verbatim. It is split on '/': at least four parts, mesh = parts[1], type = parts[2]
    (virtualNode | virtualGateway), name = parts[3]; this reads both a full ARN
    (`arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/serviceB`) and the short
    `mesh/apps/virtualNode/serviceB` form. node_cluster = APPMESH_RESOURCE_CLUSTER, else
    APPMESH_VIRTUAL_NODE_CLUSTER, else the node id.
    """
    reader = _Env(env)
    variable, node_id = next(
        ((name, value) for name in _IDENTITY_VARIABLES if (value := reader.get(name)) is not None),
        (_IDENTITY_VARIABLES[0], None),
    )
    if node_id is None:
        raise SettingsError(variable, "APPMESH_RESOURCE_ARN environment variable must be set.")
    parts = node_id.split("/")
    if len(parts) < 4:
        raise SettingsError(
            variable,
            f"{node_id!r} is not a virtual node or virtual gateway: expected "
            "'arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>' "
            "or 'mesh/<mesh>/virtualNode/<name>'",
        )
    mesh, kind_text, name = parts[1], parts[2], parts[3]
    try:
        kind = ResourceKind(kind_text)
    except ValueError:
        raise SettingsError(
            variable, f"resource type {kind_text!r} in {node_id!r} must be virtualNode or virtualGateway"
        ) from None
    if not mesh or not name:
        raise SettingsError(variable, f"{node_id!r} has an empty mesh or resource name")
    node_cluster = (
        reader.get("APPMESH_RESOURCE_CLUSTER") or reader.get("APPMESH_VIRTUAL_NODE_CLUSTER") or node_id
    )
    return Identity(node_id=node_id, mesh=mesh, kind=kind, name=name, node_cluster=node_cluster)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go `time.ParseDuration` string (`5000ms`, `10s`, `1m30s`, `1.5h`).

    Raises ValueError if `text` is not a Go duration.
    """
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(rest):
        part = _GO_DURATION_PART.match(rest, pos)
        if part is None or part.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        pos = part.end()
    return sign * total


def _literal_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _xray_daemon(reader: _Env) -> tuple[str, int]:
    """AWS_XRAY_DAEMON_ADDRESS may be `ip`, `ip:port` or `[v6]:port`; its port wins over XRAY_DAEMON_PORT."""
    port = reader.port("XRAY_DAEMON_PORT", 2000)
    value = reader.get("AWS_XRAY_DAEMON_ADDRESS")
    if value is None:
        return "127.0.0.1", port
    if _literal_ip(value):
        return value, port
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not _literal_ip(host):
        raise SettingsError(
            "AWS_XRAY_DAEMON_ADDRESS",
            f"must be a literal IP address or ip:port (hostnames are rejected), got {value!r}",
        )
    if not _INT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise SettingsError("AWS_XRAY_DAEMON_ADDRESS", f"port must be in 1..65535, got {port_text!r}")
    return host, int(port_text)


def _sampling_rate(reader: _Env) -> float:
    """XRAY_SAMPLING_RATE: 0..1, rounded half away from zero to 2 decimals as the agent does (spec §1.7)."""
    name = "XRAY_SAMPLING_RATE"
    rate = reader.decimal(name, 0.05)
    if not 0.0 <= rate <= 1.0:
        raise SettingsError(name, f"must be a decimal between 0 and 1.00, got {reader.get(name)!r}")
    return math.floor(rate * 100 + 0.5) / 100


def _sampling_manifest(reader: _Env) -> str | None:
    """XRAY_SAMPLING_RULE_MANIFEST must be a readable version-2 localized sampling-rules file (spec §1.7)."""
    name = "XRAY_SAMPLING_RULE_MANIFEST"
    path = reader.get(name)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as manifest_file:
            manifest = json.load(manifest_file)
    except OSError as exc:
        raise SettingsError(name, f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(name, f"{path!r} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != 2:
        raise SettingsError(name, f'{path!r} must be a sampling-rules manifest with "version": 2')
    return path


def _tracing(reader: _Env) -> bool:
    """At most one tracing driver; meshproxy implements X-Ray (and OTLP), not Datadog/Jaeger (spec §1.7)."""
    enabled = [name for name in _TRACING_VARIABLES if reader.flag(name)]
    if len(enabled) > 1:
        raise SettingsError(
            enabled[1], f"only one tracing driver may be enabled, got {' and '.join(enabled)}"
        )
    if enabled and enabled[0] != "ENABLE_ENVOY_XRAY_TRACING":
        raise SettingsError(
            enabled[0], "not supported by meshproxy; use X-Ray or OTEL_EXPORTER_OTLP_ENDPOINT"
        )
    return bool(enabled)


def _log_level(reader: _Env) -> str:
    value = reader.get("ENVOY_LOG_LEVEL")
    if value is None:
        return "info"
    level = value.lower()
    if level not in LOG_LEVELS:
        log.warning("ENVOY_LOG_LEVEL %r is not one of %s; using info", value, " ".join(LOG_LEVELS))
        return "info"
    return "warn" if level == "warning" else level


def _drain_wait(reader: _Env) -> int:
    name = "LISTENER_DRAIN_WAIT_TIME_S"
    value = reader.integer(name, DRAIN_WAIT_DEFAULT_S)
    if not DRAIN_WAIT_MIN_S <= value <= DRAIN_WAIT_MAX_S:
        log.warning(
            "%s=%d is outside %d..%d; using %d",
            name,
            value,
            DRAIN_WAIT_MIN_S,
            DRAIN_WAIT_MAX_S,
            DRAIN_WAIT_DEFAULT_S,
        )
        return DRAIN_WAIT_DEFAULT_S
    return value


def _stats_flush_interval(reader: _Env) -> float:
    name = "ENVOY_STATS_FLUSH_INTERVAL"
    value = reader.get(name)
    if value is None:
        return 5.0
    try:
        seconds = parse_go_duration(value)
    except ValueError:
        raise SettingsError(
            name, f"must be a Go duration such as 5000ms, 10s or 1m30s, got {value!r}"
        ) from None
    # Envoy's bootstrap accepts 1ms <= stats_flush_interval < 300s.
    if not 0.001 <= seconds < 300.0:
        raise SettingsError(name, f"must be at least 1ms and less than 300s, got {value!r}")
    return seconds


def _bounded(reader: _Env, name: str, default: int, low: int, high: int) -> int:
    value = reader.integer(name, default)
    if not low <= value <= high:
        raise SettingsError(name, f"must be an integer in {low}..{high}, got {value}")
    return value


def default_admin_access_log(uid: int, admin_port: int) -> str:
    """ENVOY_ADMIN_ACCESS_LOG_FILE's default: App Mesh's `/tmp/envoy_admin_access.log`, named per user and
    admin port, so that proxies sharing a /tmp (a host, an ECS task on EC2, the tests) each write their own,
    and a file left by another user (root) never stops UID 1337 from writing. In a container /tmp is its
    own; set the variable to keep App Mesh's exact path."""
    return f"/tmp/envoy_admin_access_{uid}_{admin_port}.log"


def _choice(reader: _Env, name: str, choices: tuple[str, ...], default: str) -> str:
    value = reader.text(name, default)
    if value not in choices:
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _non_negative(reader: _Env, name: str, value: float) -> float:
    if value < 0:
        raise SettingsError(name, f"must not be negative, got {reader.get(name)!r}")
    return value


def _config_headers(reader: _Env) -> tuple[tuple[str, str], ...]:
    name = "MESHPROXY_CONFIG_HEADERS"
    value = reader.get(name)
    if value is None:
        return ()
    try:
        return parse_headers(value)
    except ValueError as exc:  # the reason never repeats a value: headers carry credentials
        raise SettingsError(name, f"{exc} (one 'Name: value' per line)") from None


def _request_headers_timeout(reader: _Env) -> float | None:
    name = "MESHPROXY_REQUEST_HEADERS_TIMEOUT_S"
    seconds = _non_negative(reader, name, reader.decimal(name, 60.0))
    return seconds or None


def _retry_budget(reader: _Env) -> RetryBudget | None:
    """MESHPROXY_RETRY_BUDGET_TOKENS (100; 0 turns the budget off), _TOKEN_RATIO (1), _MIN_PER_S (5)."""
    default = RetryBudget()
    tokens = _non_negative(
        reader,
        "MESHPROXY_RETRY_BUDGET_TOKENS",
        reader.decimal("MESHPROXY_RETRY_BUDGET_TOKENS", default.max_tokens),
    )
    ratio = _non_negative(
        reader,
        "MESHPROXY_RETRY_BUDGET_TOKEN_RATIO",
        reader.decimal("MESHPROXY_RETRY_BUDGET_TOKEN_RATIO", default.token_ratio),
    )
    floor = _non_negative(
        reader,
        "MESHPROXY_RETRY_BUDGET_MIN_PER_S",
        reader.decimal("MESHPROXY_RETRY_BUDGET_MIN_PER_S", default.min_retries_per_second),
    )
    return RetryBudget(tokens, ratio, floor) if tokens else None


def _egress_limits(reader: _Env) -> ConnectionPoolLimits:
    """Circuit-breaker thresholds of egress clusters: Envoy's defaults (1024) unless set (2147483647 is App
    Mesh's 'unlimited')."""
    default = ENVOY_DEFAULT_LIMITS
    return ConnectionPoolLimits(
        max_connections=_bounded(
            reader, "MESHPROXY_EGRESS_MAX_CONNECTIONS", default.max_connections, 1, INT32_MAX
        ),
        max_pending_requests=_bounded(
            reader,
            "MESHPROXY_EGRESS_MAX_PENDING_REQUESTS",
            default.max_pending_requests,
            1,
            INT32_MAX,
        ),
        max_requests=_bounded(reader, "MESHPROXY_EGRESS_MAX_REQUESTS", default.max_requests, 1, INT32_MAX),
    )


def load_settings(env: Mapping[str, str], *, config_source: str | None = None) -> Settings:
    """Parse the App Mesh / Envoy environment into `Settings` (spec §1.1-1.7).

    `config_source` (the `--config` flag) wins over MESHPROXY_CONFIG. Raises `SettingsError` naming the first
    variable whose value cannot be used; warnings for clamped values go to the `meshproxy.settings` logger.
    """
    reader = _Env(env)
    identity = parse_identity(env)

    listen_address = reader.text("MESHPROXY_LISTEN_ADDRESS", "0.0.0.0")
    if not _literal_ip(listen_address):
        raise SettingsError(
            "MESHPROXY_LISTEN_ADDRESS", f"must be a literal IP address, got {listen_address!r}"
        )
    concurrency = reader.integer("ENVOY_CONCURRENCY", -1)
    ignored_uid = reader.integer("APPMESH_IGNORE_UID", 1337)
    if ignored_uid < 0:
        raise SettingsError("APPMESH_IGNORE_UID", f"must not be negative, got {ignored_uid}")
    metric_extension_version = reader.integer("APPMESH_METRIC_EXTENSION_VERSION", 0)
    if metric_extension_version < 0:
        raise SettingsError(
            "APPMESH_METRIC_EXTENSION_VERSION", f"must not be negative, got {metric_extension_version}"
        )

    xray = _tracing(reader)
    xray_address, xray_port = _xray_daemon(reader)
    admin_port = reader.port("ENVOY_ADMIN_ACCESS_PORT", 9901)
    segment_default = f"{identity.mesh_name}/{identity.name}"

    return Settings(
        identity=identity,
        config_source=config_source or reader.get("MESHPROXY_CONFIG"),
        config_refresh_s=_non_negative(
            reader, "MESHPROXY_CONFIG_REFRESH_S", reader.decimal("MESHPROXY_CONFIG_REFRESH_S", 5.0)
        ),
        initial_fetch_timeout_s=float(
            _non_negative(
                reader, "ENVOY_INITIAL_FETCH_TIMEOUT", reader.integer("ENVOY_INITIAL_FETCH_TIMEOUT", 0)
            )
        ),
        ingress_port=reader.port("APPMESH_ENVOY_INGRESS_PORT", 15000),
        egress_port=reader.port("APPMESH_ENVOY_EGRESS_PORT", 15001),
        listen_address=listen_address,
        admin_port=admin_port,
        admin_ipv6=reader.flag("ENVOY_ADMIN_ACCESS_ENABLE_IPV6"),
        admin_access_log=reader.text(
            "ENVOY_ADMIN_ACCESS_LOG_FILE", default_admin_access_log(os.getuid(), admin_port)
        ),
        log_level=_log_level(reader),
        # unset or <= 0 means "Envoy's default" to the agent; for us that is one worker process
        concurrency=concurrency if concurrency > 0 else 1,
        drain_wait_s=_drain_wait(reader),
        http1_parser=_choice(reader, "MESHPROXY_HTTP1_PARSER", HTTP1_PARSERS, "httptools"),
        http2_codec=_choice(reader, "MESHPROXY_HTTP2_CODEC", HTTP2_CODECS, "lean"),
        max_request_headers_kb=_bounded(reader, "MESHPROXY_MAX_REQUEST_HEADERS_KB", MAX_HEADERS_KB, 1, 8192),
        max_request_headers_count=_bounded(
            reader, "MESHPROXY_MAX_REQUEST_HEADERS_COUNT", MAX_HEADERS_COUNT, 1, INT32_MAX
        ),
        ignored_uid=ignored_uid,
        request_headers_timeout_s=_request_headers_timeout(reader),
        retry_budget=_retry_budget(reader),
        egress_limits=_egress_limits(reader),
        stats_tags=reader.flag("ENABLE_ENVOY_STATS_TAGS"),
        stats_flush_interval_s=_stats_flush_interval(reader),
        metric_extension_version=metric_extension_version,
        dogstatsd=reader.flag("ENABLE_ENVOY_DOG_STATSD"),
        statsd_address=reader.text("STATSD_ADDRESS", "127.0.0.1"),
        statsd_port=reader.port("STATSD_PORT", 8125),
        statsd_socket_path=reader.get("STATSD_SOCKET_PATH"),
        xray=xray,
        xray_daemon_address=xray_address,
        xray_daemon_port=xray_port,
        xray_sampling_rate=_sampling_rate(reader),
        xray_sampling_rule_manifest=_sampling_manifest(reader),
        xray_segment_name=reader.text("XRAY_SEGMENT_NAME", segment_default),
        otel_endpoint=reader.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        config_headers=_config_headers(reader),
        config_ca_bundle=reader.get("MESHPROXY_CONFIG_CA_BUNDLE"),
        sds_socket_path=reader.get("APPMESH_SDS_SOCKET_PATH"),
    )
