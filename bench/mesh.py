"""The bench mesh as App Mesh resources (`aws appmesh describe-*` style), and the names derived from it.

One mesh `bench`: virtual node `client` (the proxy under test) calls virtual service `upstream.bench.local`,
provided by virtual router `upstream-router` whose single route `all` sends everything to virtual node
`upstream` (nginx on 127.0.0.1). The route has no retry policy, so App Mesh's default policy applies
(spec §4.5), and no timeout, so the 15 s default applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MESH = "bench"
CLIENT_NODE = "client"
UPSTREAM_NODE = "upstream"
VIRTUAL_ROUTER = "upstream-router"
ROUTER_PORT = 80
ROUTE = "all"
VIRTUAL_SERVICE = "upstream.bench.local"
CLIENT_RESOURCE_ARN = f"mesh/{MESH}/virtualNode/{CLIENT_NODE}"  # APPMESH_RESOURCE_ARN, Envoy node.id


def egress_cluster_name(mesh: str, node: str, protocol: str, port: int) -> str:
    """App Mesh's egress cluster name for a backend virtual node listener (spec §4.9, [DUMP])."""
    return f"cds_egress_{mesh}_{node}_{protocol}_{port}"


@dataclass(frozen=True, slots=True)
class BenchMesh:
    """The bench mesh for one upstream (nginx) address."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"

    @property
    def upstream_cluster(self) -> str:
        return egress_cluster_name(MESH, UPSTREAM_NODE, "http", self.upstream_port)

    def resources(self) -> list[dict[str, Any]]:
        """The resources as a JSON-ready list, one `{"<kind>": {...}}` object per resource."""
        return [
            {"mesh": {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}},
            {
                "virtualNode": {
                    "meshName": MESH,
                    "virtualNodeName": CLIENT_NODE,
                    "spec": {
                        "backends": [{"virtualService": {"virtualServiceName": VIRTUAL_SERVICE}}],
                    },
                }
            },
            {
                "virtualNode": {
                    "meshName": MESH,
                    "virtualNodeName": UPSTREAM_NODE,
                    "spec": {
                        "listeners": [{"portMapping": {"port": self.upstream_port, "protocol": "http"}}],
                        "serviceDiscovery": {"dns": {"hostname": self.upstream_host}},
                    },
                }
            },
            {
                "virtualRouter": {
                    "meshName": MESH,
                    "virtualRouterName": VIRTUAL_ROUTER,
                    "spec": {"listeners": [{"portMapping": {"port": ROUTER_PORT, "protocol": "http"}}]},
                }
            },
            {
                "route": {
                    "meshName": MESH,
                    "virtualRouterName": VIRTUAL_ROUTER,
                    "routeName": ROUTE,
                    "spec": {
                        "httpRoute": {
                            "match": {"prefix": "/"},
                            "action": {"weightedTargets": [{"virtualNode": UPSTREAM_NODE, "weight": 100}]},
                        }
                    },
                }
            },
            {
                "virtualService": {
                    "meshName": MESH,
                    "virtualServiceName": VIRTUAL_SERVICE,
                    "spec": {"provider": {"virtualRouter": {"virtualRouterName": VIRTUAL_ROUTER}}},
                }
            },
        ]

    def to_json(self) -> str:
        return json.dumps(self.resources(), indent=2) + "\n"
