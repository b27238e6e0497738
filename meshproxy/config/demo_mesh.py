"""The embedded colour mesh `meshproxy demo` runs.

A front node calls `color.demo.local`, which the `color-router` splits 50/50 between the blue and green nodes
with a retry policy. Returned as `describe-*` responses, the shape a user exports from App Mesh.
"""

from __future__ import annotations

from typing import Any

MESH = "demo"
VIRTUAL_SERVICE = "color.demo.local"
ROUTER = "color-router"
ROUTER_PORT = 8080


def _node(name: str, port: int, backends: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
    }
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceName": vs}} for vs in backends]
    return {"virtualNode": {"meshName": MESH, "virtualNodeName": name, "spec": spec}}


def colour_mesh(blue_port: int, green_port: int, front_port: int) -> list[dict[str, Any]]:
    """App Mesh describe-style resources for the demo, with the local apps on the given loopback ports."""
    return [
        {"mesh": {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}},
        _node("front", front_port, backends=(VIRTUAL_SERVICE,)),
        _node("blue", blue_port),
        _node("green", green_port),
        {
            "virtualRouter": {
                "meshName": MESH,
                "virtualRouterName": ROUTER,
                "spec": {"listeners": [{"portMapping": {"port": ROUTER_PORT, "protocol": "http"}}]},
            }
        },
        {
            "route": {
                "meshName": MESH,
                "virtualRouterName": ROUTER,
                "routeName": "color-route",
                "spec": {
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {
                            "weightedTargets": [
                                {"virtualNode": "blue", "weight": 50},
                                {"virtualNode": "green", "weight": 50},
                            ]
                        },
                        "retryPolicy": {
                            "maxRetries": 3,
                            "perRetryTimeout": {"value": 2, "unit": "s"},
                            "httpRetryEvents": ["server-error", "gateway-error"],
                            "tcpRetryEvents": ["connection-error"],
                        },
                    }
                },
            }
        },
        {
            "virtualService": {
                "meshName": MESH,
                "virtualServiceName": VIRTUAL_SERVICE,
                "spec": {"provider": {"virtualRouter": {"virtualRouterName": ROUTER}}},
            }
        },
    ]
