"""The App Mesh / Envoy environment variables, parsed once into one frozen `Settings`.

Parsing follows the App Mesh agent (spec §1.1): values are whitespace-trimmed and an empty value counts as
unset; booleans use Go's strconv.ParseBool set; a value that cannot be parsed is fatal (`SettingsError`, which
names the variable) and start-up stops.

`load_settings` is implemented in this module by the config work; the field names below are the contract the
data plane and the telemetry sinks read.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshproxy.config.snapshot import Identity


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
    config_refresh_s: float = 5.0  # MESHPROXY_CONFIG_REFRESH_S
    initial_fetch_timeout_s: float = 0.0  # ENVOY_INITIAL_FETCH_TIMEOUT, 0 = wait forever
    # listeners
    ingress_port: int = 15000  # APPMESH_ENVOY_INGRESS_PORT (same variable the route manager reads)
    egress_port: int = 15001  # APPMESH_ENVOY_EGRESS_PORT
    listen_address: str = "0.0.0.0"  # MESHPROXY_LISTEN_ADDRESS
    # admin
    admin_port: int = 9901  # ENVOY_ADMIN_ACCESS_PORT
    admin_ipv6: bool = False  # ENVOY_ADMIN_ACCESS_ENABLE_IPV6
    admin_access_log: str = "/tmp/envoy_admin_access.log"  # ENVOY_ADMIN_ACCESS_LOG_FILE
    # process
    log_level: str = "info"  # ENVOY_LOG_LEVEL
    concurrency: int = 1  # ENVOY_CONCURRENCY (worker processes)
    drain_wait_s: int = 20  # LISTENER_DRAIN_WAIT_TIME_S, 5..110
    http1_parser: str = "httptools"  # MESHPROXY_HTTP1_PARSER: httptools | h11
    ignored_uid: int = 1337  # APPMESH_IGNORE_UID: the UID the interception rules skip
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
