"""Snapshot -> JSON-able dict (for `/config_dump`) and -> a stable text listing (for `meshproxy render`).

Both are deterministic: mapping keys are sorted, sets are sorted lists, regexes are their pattern text, enums
their values, and dataclass fields keep their declared order. `RouteTable.by_domain` is an index of
`virtual_hosts`, so the dict form lists it as domain -> virtual host name rather than repeating the hosts.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

from meshproxy.config.snapshot import (
    CloudMapDiscovery,
    Cluster,
    ConnectionPoolLimits,
    Discovery,
    DnsDiscovery,
    RetryPolicy,
    RouteEntry,
    RouteMatch,
    RouteTable,
    Snapshot,
    StaticDiscovery,
    StringMatchKind,
    TlsOrigination,
    TlsTermination,
    ValueMatch,
    VirtualHost,
)


def _plain(value: Any) -> Any:
    if isinstance(value, VirtualHost):
        return _dataclass(value)
    if isinstance(value, RouteTable):
        fields = _dataclass(value)
        fields["by_domain"] = {domain: host.name for domain, host in sorted(value.by_domain.items())}
        return fields
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, frozenset | set):
        return sorted(_plain(item) for item in value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _dataclass(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        out[field.name] = _plain(getattr(value, field.name))
    return out


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The whole snapshot as JSON-able data with a stable key order (`json.dumps` needs no options)."""
    data = _dataclass(snapshot)
    data["identity"]["mesh_name"] = snapshot.identity.mesh_name
    for name, cluster in snapshot.clusters.items():
        data["clusters"][name]["discovery"] = {
            "type": _discovery_type(cluster.discovery),
            **data["clusters"][name]["discovery"],
        }
    return data


def _discovery_type(discovery: Discovery) -> str:
    match discovery:
        case StaticDiscovery():
            return "static"
        case DnsDiscovery():
            return "dns"
        case CloudMapDiscovery():
            return "awsCloudMap"


# --- text -------------------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "off"
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _value_match(match: ValueMatch) -> str:
    not_ = "!" if match.invert else ""
    match match.kind:
        case StringMatchKind.PRESENT:
            return f"{not_}{match.name}"
        case StringMatchKind.EXACT:
            return f"{match.name}{not_}={match.value}"
        case StringMatchKind.PREFIX:
            return f"{match.name}{not_}^={match.value}"
        case StringMatchKind.SUFFIX:
            return f"{match.name}{not_}$={match.value}"
        case StringMatchKind.REGEX:
            assert match.pattern is not None
            return f"{match.name}{not_}~{match.pattern.pattern}"
        case StringMatchKind.RANGE:
            return f"{match.name}{not_}=[{match.range_start},{match.range_end})"


def _route_match(match: RouteMatch) -> str:
    parts = []
    if match.grpc_service is not None or match.grpc_method is not None:
        parts.append(f"grpc {match.grpc_service or '*'}/{match.grpc_method or '*'}")
    if match.path_exact is not None:
        parts.append(f"path {match.path_exact}")
    if match.path_regex is not None:
        parts.append(f"path ~{match.path_regex.pattern}")
    if match.prefix is not None:
        parts.append(f"prefix {match.prefix}")
    if match.hostname_exact is not None:
        parts.append(f"host {match.hostname_exact}")
    if match.hostname_suffix is not None:
        parts.append(f"host *{match.hostname_suffix}")
    if match.method is not None:
        parts.append(f"method {match.method}")
    if match.scheme is not None:
        parts.append(f"scheme {match.scheme}")
    if match.port is not None:
        parts.append(f"port {match.port}")
    if match.headers:
        parts.append("headers " + " ".join(_value_match(h) for h in match.headers))
    if match.query:
        parts.append("query " + " ".join(_value_match(q) for q in match.query))
    return ", ".join(parts) or "any"


def _retry(retry: RetryPolicy | None) -> str:
    if retry is None:
        return "none"
    on = []
    if retry.retriable_statuses:
        on.append("status " + ",".join(str(s) for s in sorted(retry.retriable_statuses)))
    if retry.retry_on_reset:
        on.append("reset")
    if retry.retry_on_connect_failure:
        on.append("connect-failure")
    if retry.retry_on_refused_stream:
        on.append("refused-stream")
    if retry.grpc_statuses:
        on.append("grpc " + ",".join(str(s) for s in sorted(retry.grpc_statuses)))
    default = " (App Mesh default)" if retry.is_default else ""
    events = "; ".join(on) or "nothing"
    return f"{retry.max_retries}x per-try {_duration(retry.per_try_timeout)} on {events}{default}"


def _route_lines(route: RouteEntry, indent: str) -> list[str]:
    priority = "" if route.priority is None else f" priority {route.priority}"
    lines = [f"{indent}{route.name} [{route.protocol}]{priority}: {_route_match(route.match)}"]
    for target in route.targets:
        lines.append(f"{indent}  -> {target.cluster} weight {target.weight}/{route.total_weight}")
    lines.append(
        f"{indent}  timeout {_duration(route.timeout)}, idle {_duration(route.idle_timeout)}, retry "
        f"{_retry(route.retry)}"
    )
    if route.rewrite is not None:
        rewrite = route.rewrite
        parts = [
            f"{name} {value}"
            for name, value in (
                ("prefix", rewrite.prefix),
                ("path", rewrite.exact),
                ("host", rewrite.hostname),
            )
            if value is not None
        ]
        lines.append(f"{indent}  rewrite {', '.join(parts)}")
    return lines


def _table_lines(table: RouteTable, indent: str) -> list[str]:
    lines = [f"{indent}route table {table.name}"]
    if not table.virtual_hosts:
        lines.append(f"{indent}  (no virtual hosts)")
    for host in table.virtual_hosts:
        lines.append(f"{indent}  virtual host {host.name} [{host.protocol}]: {', '.join(host.domains)}")
        if not host.routes:
            lines.append(f"{indent}    (no routes)")
        for route in host.routes:
            lines.extend(_route_lines(route, indent + "    "))
    return lines


def _discovery(discovery: Discovery) -> str:
    match discovery:
        case StaticDiscovery():
            return "static " + ", ".join(f"{host}:{port}" for host, port in discovery.addresses)
        case DnsDiscovery():
            preference = f" {discovery.ip_preference}" if discovery.ip_preference else ""
            return f"dns {discovery.hostname}:{discovery.port} {discovery.response_type}{preference}"
        case CloudMapDiscovery():
            attributes = "".join(f" {key}={value}" for key, value in discovery.attributes)
            return f"cloudmap {discovery.namespace}/{discovery.service}:{discovery.port}{attributes}"


def _cluster_lines(cluster: Cluster) -> list[str]:
    lines = [
        f"  {cluster.name} [{cluster.protocol}] {_discovery(cluster.discovery)}, connect "
        f"{_duration(cluster.connect_timeout)}"
    ]
    limits = cluster.limits
    if limits != ConnectionPoolLimits():
        lines.append(
            f"    limits connections {limits.max_connections}, pending {limits.max_pending_requests}, "
            f"requests {limits.max_requests}"
        )
    if cluster.outlier is not None:
        o = cluster.outlier
        lines.append(
            f"    outlier {o.max_server_errors} errors / {_duration(o.interval)}, eject "
            f"{_duration(o.base_ejection)}, "
            f"max {o.max_ejection_percent}%"
        )
    if cluster.health_check is not None:
        h = cluster.health_check
        path = f" {h.path}" if h.path else ""
        lines.append(
            f"    health {h.protocol}{path} every {_duration(h.interval)}, timeout {_duration(h.timeout)}, "
            f"healthy {h.healthy_threshold}, unhealthy {h.unhealthy_threshold}"
        )
    if cluster.tls is not None:
        lines.append(f"    tls {_origination(cluster.tls)}")
    return lines


def _termination(tls: TlsTermination) -> str:
    text = f"{tls.mode} {tls.certificate.describe()}"
    if tls.validation is not None:
        names = ", ".join(tls.validation.subject_alternative_names) or "any"
        required = "required" if tls.require_client_certificate else "optional"
        text += f", client certificate {required} (trust {tls.validation.describe()}, SANs {names})"
    return text


def _origination(tls: TlsOrigination) -> str:
    if tls.validation is None:
        text = "without validating the server (its listener terminates TLS; no client policy for the port)"
    else:
        names = ", ".join(tls.validation.subject_alternative_names) or "any"
        text = f"trust {tls.validation.describe()}, SANs {names}"
    return text if tls.certificate is None else f"{text}, client certificate {tls.certificate.describe()}"


def render_text(snapshot: Snapshot) -> str:
    """A stable, human-readable listing of listeners, route tables (routes, weights), TCP routes, clusters."""
    identity = snapshot.identity
    lines = [
        f"{identity.kind} {identity.name} in mesh {identity.mesh_name} (config version {snapshot.version})",
        f"egress filter {snapshot.egress_filter}",
        f"backends {', '.join(snapshot.backends) or 'none'}",
    ]
    if snapshot.access_log is not None:
        fmt = (
            "json"
            if snapshot.access_log.json_format
            else "text"
            if snapshot.access_log.text_format
            else "default"
        )
        lines.append(f"access log {snapshot.access_log.path} ({fmt} format)")
    if snapshot.ingress:
        lines.append("ingress listeners")
        for listener in snapshot.ingress:
            tls = f", tls {_termination(listener.tls)}" if listener.tls is not None else ""
            lines.append(
                f"  {listener.protocol} {listener.port} -> {listener.cluster} (timeout "
                f"{_duration(listener.timeout)}, "
                f"idle {_duration(listener.idle_timeout)}{tls})"
            )
    for gateway in snapshot.gateway:
        tls = f", tls {_termination(gateway.tls)}" if gateway.tls is not None else ""
        lines.append(f"gateway listener {gateway.protocol} {gateway.port}{tls}")
        lines.extend(_table_lines(gateway.routes, "  "))
    lines.append("egress")
    lines.extend(_table_lines(snapshot.egress_routes, "  "))
    if snapshot.tcp_routes:
        lines.append("  tcp routes")
        for port, route in sorted(snapshot.tcp_routes.items()):
            lines.append(f"    port {port} ({route.virtual_service})")
            lines.extend(_route_lines(route, "      "))
    lines.append("clusters")
    for name in sorted(snapshot.clusters):
        lines.extend(_cluster_lines(snapshot.clusters[name]))
    return "\n".join(lines) + "\n"
