"""Builders for App Mesh resources in `aws appmesh describe-*` shape, as the proxy's config file holds them.

Each builder returns one list item (`{"mesh": {...}}`, `{"virtualNode": {...}}`, ...). Only the members a test
needs are set; the proxy applies App Mesh's defaults to the rest (spec §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Resource = dict[str, Any]

MESH = "demo"


def duration(seconds: float) -> dict[str, Any]:
    """An App Mesh `Duration`: whole seconds as unit "s", anything else as milliseconds."""
    if float(seconds).is_integer():
        return {"value": int(seconds), "unit": "s"}
    return {"value": round(seconds * 1000), "unit": "ms"}


def mesh(name: str = MESH, *, egress: str = "DROP_ALL") -> Resource:
    return {"mesh": {"meshName": name, "spec": {"egressFilter": {"type": egress}}}}


def listener(
    port: int,
    *,
    protocol: str = "http",
    timeout_s: float | None = None,
    max_connections: int | None = None,
    max_pending_requests: int | None = None,
) -> dict[str, Any]:
    """A virtual-node listener; `timeout_s` is its perRequest timeout, the pool limits its connectionPool."""
    spec: dict[str, Any] = {"portMapping": {"port": port, "protocol": protocol}}
    if timeout_s is not None:
        spec["timeout"] = {protocol: {"perRequest": duration(timeout_s)}}
    if max_connections is not None:
        pool: dict[str, int] = {"maxConnections": max_connections}
        if max_pending_requests is not None:
            pool["maxPendingRequests"] = max_pending_requests
        spec["connectionPool"] = {protocol: pool}
    return spec


def virtual_node(
    name: str,
    listeners: int | Sequence[dict[str, Any]],
    *,
    hostname: str = "127.0.0.1",
    backends: Sequence[str] = (),
    mesh: str = MESH,
) -> Resource:
    """A virtual node found by DNS at `hostname`; an int `listeners` is one http listener on that port."""
    listener_specs = [listener(listeners)] if isinstance(listeners, int) else list(listeners)
    spec: dict[str, Any] = {
        "listeners": listener_specs,
        "serviceDiscovery": {"dns": {"hostname": hostname}},
    }
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceName": b}} for b in backends]
    return {"virtualNode": {"meshName": mesh, "virtualNodeName": name, "spec": spec}}


def virtual_router(name: str, port: int = 8080, *, mesh: str = MESH) -> Resource:
    return {
        "virtualRouter": {
            "meshName": mesh,
            "virtualRouterName": name,
            "spec": {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}]},
        }
    }


def retry_policy(
    max_retries: int, per_retry_timeout_s: float, events: Sequence[str] = ("server-error",)
) -> dict[str, Any]:
    return {
        "maxRetries": max_retries,
        "perRetryTimeout": duration(per_retry_timeout_s),
        "httpRetryEvents": list(events),
    }


def route(
    router: str,
    name: str,
    targets: Sequence[tuple[str, int]],
    *,
    prefix: str | None = "/",
    path_exact: str | None = None,
    path_regex: str | None = None,
    method: str | None = None,
    headers: Sequence[dict[str, Any]] = (),
    query: Sequence[dict[str, Any]] = (),
    priority: int | None = None,
    retry: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    mesh: str = MESH,
) -> Resource:
    """An httpRoute on `router` to `targets` [(virtual node, weight)]. A path match replaces the prefix."""
    match: dict[str, Any] = {}
    if path_exact is not None:
        match["path"] = {"exact": path_exact}
    elif path_regex is not None:
        match["path"] = {"regex": path_regex}
    elif prefix is not None:
        match["prefix"] = prefix
    if method is not None:
        match["method"] = method
    if headers:
        match["headers"] = list(headers)
    if query:
        match["queryParameters"] = list(query)
    http_route: dict[str, Any] = {
        "match": match,
        "action": {"weightedTargets": [{"virtualNode": node, "weight": weight} for node, weight in targets]},
    }
    if retry is not None:
        http_route["retryPolicy"] = retry
    if timeout_s is not None:
        http_route["timeout"] = {"perRequest": duration(timeout_s)}
    spec: dict[str, Any] = {"httpRoute": http_route}
    if priority is not None:
        spec["priority"] = priority
    return {"route": {"meshName": mesh, "virtualRouterName": router, "routeName": name, "spec": spec}}


def service_via_router(name: str, router: str, *, mesh: str = MESH) -> Resource:
    return {
        "virtualService": {
            "meshName": mesh,
            "virtualServiceName": name,
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}},
        }
    }


def service_via_node(name: str, node: str, *, mesh: str = MESH) -> Resource:
    return {
        "virtualService": {
            "meshName": mesh,
            "virtualServiceName": name,
            "spec": {"provider": {"virtualNode": {"virtualNodeName": node}}},
        }
    }


def front_and_backend(
    service: str, backend: str, port: int, *, hostname: str = "127.0.0.1"
) -> list[Resource]:
    """The smallest mesh with a call in it: node `front` (the proxy's, `node_arn("front")`) may call
    `service`, provided by node `backend` (an http listener on `port`, found by DNS at `hostname`); the
    implicit route carries App Mesh's default retry policy."""
    return [
        mesh(),
        virtual_node(backend, port, hostname=hostname),
        virtual_node("front", port, backends=[service]),
        service_via_node(service, backend),
    ]


def node_arn(node: str, *, mesh: str = MESH) -> str:
    """The short APPMESH_RESOURCE_ARN form the agent also accepts: mesh/<mesh>/virtualNode/<node>."""
    return f"mesh/{mesh}/virtualNode/{node}"


def egress_cluster(node: str, port: int, *, mesh: str = MESH, protocol: str = "http") -> str:
    return f"cds_egress_{mesh}_{node}_{protocol}_{port}"


def ingress_cluster(node: str, port: int, *, mesh: str = MESH, protocol: str = "http") -> str:
    return f"cds_ingress_{mesh}_{node}_{protocol}_{port}"
