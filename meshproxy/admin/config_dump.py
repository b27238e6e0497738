"""`/config_dump` in Envoy's shape: `envoy.admin.v3.ConfigDump` JSON, as App Mesh's Envoy answered it.

Four entries, in Envoy's order: `BootstrapConfigDump` (node, admin, runtime layers, stats tags and sinks),
`ClustersConfigDump`, `ListenersConfigDump` and `RoutesConfigDump`. meshproxy's configuration comes from its
own source rather than xDS, but it is versioned and swapped whole like xDS resources, so clusters, listeners
and route configurations are listed as the dynamic resources App Mesh's control plane delivered
(`dynamic_active_clusters`, `dynamic_listeners[].active_state`, `dynamic_route_configs`) with the snapshot's
version and the time it was applied. The resources are rendered by `meshproxy.config.envoy`.

meshproxy's own view of the compiled snapshot stays at `/config_dump?format=meshproxy`. Nothing here holds a
secret: TLS appears as certificate file paths, the configuration source is not shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from meshproxy import __version__
from meshproxy.config.envoy import (
    DOG_STATSD_TYPE,
    ChainOptions,
    EnvoyTelemetry,
    ProxyAddresses,
    admin_and_node,
    duration,
    file_access_log,
    render_cluster,
    render_listener,
    render_route_config,
    resources_from_snapshot,
    sds_cluster,
    stats_config,
)
from meshproxy.config.snapshot import Snapshot
from meshproxy.settings import Settings
from meshproxy.telemetry.names import fixed_tags

ADMIN_TYPE = "type.googleapis.com/envoy.admin.v3."
BOOTSTRAP_DUMP = ADMIN_TYPE + "BootstrapConfigDump"
CLUSTERS_DUMP = ADMIN_TYPE + "ClustersConfigDump"
LISTENERS_DUMP = ADMIN_TYPE + "ListenersConfigDump"
ROUTES_DUMP = ADMIN_TYPE + "RoutesConfigDump"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

Endpoints = Callable[[str], Sequence[tuple[str, int]] | None]


def timestamp(epoch: float) -> str:
    """A protobuf Timestamp in JSON form (RFC 3339, UTC, milliseconds)."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((epoch - whole) * 1000):03d}Z"


def telemetry_of(settings: Settings) -> EnvoyTelemetry | None:
    """X-Ray as App Mesh's agent configures it for ENABLE_ENVOY_XRAY_TRACING (spec §1.7, §5.4)."""
    if not settings.xray:
        return None
    identity = settings.identity
    return EnvoyTelemetry(
        mesh_name=identity.mesh_name,
        virtual_node_name=identity.name,
        xray_segment_name=settings.xray_segment_name,
        xray_port=settings.xray_daemon_port,
        xray_address=settings.xray_daemon_address,
        sampling_rules=settings.xray_sampling_rule_manifest,
    )


def bootstrap(settings: Settings) -> dict[str, Any]:
    """The bootstrap App Mesh's agent would have written for these settings (spec §1.11), minus xDS."""
    identity = settings.identity
    admin_address = "::" if settings.admin_ipv6 else "0.0.0.0"
    if settings.listen_address in ("127.0.0.1", "::1"):
        admin_address = settings.listen_address
    rendered = admin_and_node(identity.node_id, identity.node_cluster, settings.admin_port, admin_address)
    rendered["node"]["user_agent_name"] = "meshproxy"
    rendered["node"]["user_agent_version"] = __version__
    if settings.admin_access_log:
        rendered["admin"]["access_log"] = file_access_log(settings.admin_access_log)
    rendered["stats_config"] = stats_config(fixed_tags(settings))
    if settings.sds_socket_path:
        rendered["static_resources"] = {"clusters": [sds_cluster(settings.sds_socket_path)]}
    rendered["stats_flush_interval"] = duration(settings.stats_flush_interval_s)
    if settings.dogstatsd:
        if settings.statsd_socket_path:
            address: dict[str, Any] = {"pipe": {"path": settings.statsd_socket_path}}
        else:
            address = {
                "socket_address": {
                    "protocol": "UDP",
                    "address": settings.statsd_address,
                    "port_value": settings.statsd_port,
                }
            }
        rendered["stats_sinks"] = [
            {
                "name": "envoy.stat_sinks.dog_statsd",
                "typed_config": {"@type": DOG_STATSD_TYPE, "address": address},
            }
        ]
    return rendered


def addresses_of(settings: Settings) -> ProxyAddresses:
    return ProxyAddresses(settings.listen_address, settings.ingress_port, settings.egress_port)


def envoy_config_dump(
    snapshot: Snapshot, settings: Settings, *, applied_at: float, endpoints: Endpoints = lambda name: None
) -> dict[str, Any]:
    """The ConfigDump of `snapshot`, applied at `applied_at` (epoch seconds)."""
    resources = resources_from_snapshot(snapshot, addresses_of(settings), endpoints)
    options = ChainOptions(telemetry_of(settings), snapshot.access_log)
    version = snapshot.version
    updated = timestamp(applied_at)
    clusters = [
        {
            "version_info": version,
            "cluster": {"@type": CLUSTER_TYPE, **render_cluster(c)},
            "last_updated": updated,
        }
        for c in resources.clusters
    ]
    listeners = [
        {
            "name": listener.name,
            "active_state": {
                "version_info": version,
                "listener": {
                    "@type": LISTENER_TYPE,
                    **render_listener(listener, options),
                },
                "last_updated": updated,
            },
        }
        for listener in resources.listeners
    ]
    routes = [
        {
            "version_info": version,
            "route_config": {"@type": ROUTE_CONFIG_TYPE, **render_route_config(config)},
            "last_updated": updated,
        }
        for config in resources.route_configs
    ]
    return {
        "configs": [
            {"@type": BOOTSTRAP_DUMP, "bootstrap": bootstrap(settings), "last_updated": updated},
            {"@type": CLUSTERS_DUMP, "version_info": version, "dynamic_active_clusters": clusters},
            {"@type": LISTENERS_DUMP, "version_info": version, "dynamic_listeners": listeners},
            {"@type": ROUTES_DUMP, "dynamic_route_configs": routes},
        ]
    }
