"""The bench mesh as App Mesh resources (`aws appmesh describe-*` style), and the names derived from it.

One mesh `bench`: virtual node `client` (the proxy under test) calls virtual service `upstream.bench.local`,
provided by virtual router `upstream-router` whose single route `all` sends everything to virtual node
`upstream` (nginx on 127.0.0.1). The route has no retry policy, so App Mesh's default policy applies
(spec §4.5), and no timeout, so the 15 s default applies.

The protocol picks the variant (`MeshProtocol`):

- `http`: router listener, route (`httpRoute`) and upstream listener are http; nginx answers HTTP/1.1;
- `http2`: the same as http2 (`http2Route`); the upstream node's listener is http2, so both proxies speak
  h2c to nginx's h2c server;
- `grpc`: router listener grpc, a match-all `grpcRoute`, upstream listener grpc (nginx h2c, gRPC answer);
- `tcp`: no backends at all: the client node itself gets a *tcp listener* on the TCP app's port, and the
  bench measures the ingress path (client -> ingress port -> the local app), because reaching a `tcpRoute`
  through the egress listener needs the original destination port, i.e. iptables interception (spec §2.4).

`access_log` sets the client node's `logging.accessLog.file.path` (spec §4.2, §5.5) with no format, so
Envoy's default format applies.
"""

from __future__ import annotations

import enum
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


class MeshProtocol(enum.StrEnum):
    """The listener protocol of the bench mesh variant (App Mesh's `portMapping.protocol`)."""

    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"


# The route spec member for each HTTP-family protocol (spec §4.5: exactly one route type).
_ROUTE_KIND = {
    MeshProtocol.HTTP: "httpRoute",
    MeshProtocol.HTTP2: "http2Route",
    MeshProtocol.GRPC: "grpcRoute",
}


def egress_cluster_name(mesh: str, node: str, protocol: str, port: int) -> str:
    """App Mesh's egress cluster name for a backend virtual node listener (spec §4.9, [DUMP])."""
    return f"cds_egress_{mesh}_{node}_{protocol}_{port}"


def ingress_cluster_name(mesh: str, node: str, protocol: str, port: int) -> str:
    """App Mesh's ingress (local app) cluster name for one of the node's own listeners."""
    return f"cds_ingress_{mesh}_{node}_{protocol}_{port}"


@dataclass(frozen=True, slots=True)
class BenchMesh:
    """The bench mesh for one upstream address: nginx for the HTTP variants, the TCP app for `tcp`."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    protocol: MeshProtocol = MeshProtocol.HTTP
    access_log: str | None = None  # the client node's access log file; None = no access logging

    @property
    def upstream_cluster(self) -> str:
        """The cluster the client's traffic reaches: egress to node `upstream`, or ingress for `tcp`."""
        if self.protocol is MeshProtocol.TCP:
            return ingress_cluster_name(MESH, CLIENT_NODE, self.protocol.value, self.upstream_port)
        return egress_cluster_name(MESH, UPSTREAM_NODE, self.protocol.value, self.upstream_port)

    def _client(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.protocol is MeshProtocol.TCP:
            spec["listeners"] = [{"portMapping": {"port": self.upstream_port, "protocol": "tcp"}}]
            spec["serviceDiscovery"] = {"dns": {"hostname": self.upstream_host}}
        else:
            spec["backends"] = [{"virtualService": {"virtualServiceName": VIRTUAL_SERVICE}}]
        if self.access_log is not None:
            spec["logging"] = {"accessLog": {"file": {"path": self.access_log}}}
        return {"virtualNode": {"meshName": MESH, "virtualNodeName": CLIENT_NODE, "spec": spec}}

    def resources(self) -> list[dict[str, Any]]:
        """The resources as a JSON-ready list, one `{"<kind>": {...}}` object per resource."""
        mesh = {"mesh": {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}}
        if self.protocol is MeshProtocol.TCP:
            return [mesh, self._client()]
        protocol = self.protocol.value
        match: dict[str, Any] = {} if self.protocol is MeshProtocol.GRPC else {"prefix": "/"}
        return [
            mesh,
            self._client(),
            {
                "virtualNode": {
                    "meshName": MESH,
                    "virtualNodeName": UPSTREAM_NODE,
                    "spec": {
                        "listeners": [{"portMapping": {"port": self.upstream_port, "protocol": protocol}}],
                        "serviceDiscovery": {"dns": {"hostname": self.upstream_host}},
                    },
                }
            },
            {
                "virtualRouter": {
                    "meshName": MESH,
                    "virtualRouterName": VIRTUAL_ROUTER,
                    "spec": {"listeners": [{"portMapping": {"port": ROUTER_PORT, "protocol": protocol}}]},
                }
            },
            {
                "route": {
                    "meshName": MESH,
                    "virtualRouterName": VIRTUAL_ROUTER,
                    "routeName": ROUTE,
                    "spec": {
                        _ROUTE_KIND[self.protocol]: {
                            "match": match,
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
