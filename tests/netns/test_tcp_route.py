"""A tcpRoute behind real interception (issue 5): the app connects to a virtual service's port at an address
nobody answers; iptables redirects it to meshproxy's egress port; the proxy reads the original port, follows
the TCP route and splits connections 50/50 between two virtual nodes in the peer namespace.

    peer ns: db-a on 10.250.1.2:7100, db-b on 10.250.1.3:7100 (the probe's one-JSON-line servers)
    pod ns:  the app (UID 1000) connects to 10.250.9.9:7100; meshproxy (UID 1337) egress 15001
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .conftest import (
    APP_UID,
    MESHPROXY,
    NOWHERE_V4,
    PEER_V4,
    PEER_V4_ALT,
    PROXY_UID,
    READY_TIMEOUT_S,
    meshproxy_iptables,
    pod_pair_context,
    stop_process,
)

MESH = "m"
DB_PORT = 7100
ADMIN_PORT = 9901
CONNECTIONS = 40


def _node(name: str, address: str, protocol: str = "tcp", port: int = DB_PORT) -> dict[str, Any]:
    return {
        "virtualNode": {
            "meshName": MESH,
            "virtualNodeName": name,
            "spec": {
                "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
                "serviceDiscovery": {"dns": {"hostname": address}},
                **(
                    {"backends": [{"virtualService": {"virtualServiceName": "db.m.local"}}]}
                    if name == "app"
                    else {}
                ),
            },
        }
    }


def resources() -> list[dict[str, Any]]:
    return [
        {"mesh": {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}}},
        _node("app", "app.m.local", "http", 8080),
        _node("db-a", PEER_V4),
        _node("db-b", PEER_V4_ALT),
        {
            "virtualRouter": {
                "meshName": MESH,
                "virtualRouterName": "db-router",
                "spec": {"listeners": [{"portMapping": {"port": DB_PORT, "protocol": "tcp"}}]},
            }
        },
        {
            "route": {
                "meshName": MESH,
                "virtualRouterName": "db-router",
                "routeName": "split",
                "spec": {
                    "tcpRoute": {
                        "action": {
                            "weightedTargets": [
                                {"virtualNode": "db-a", "weight": 50},
                                {"virtualNode": "db-b", "weight": 50},
                            ]
                        }
                    }
                },
            }
        },
        {
            "virtualService": {
                "meshName": MESH,
                "virtualServiceName": "db.m.local",
                "spec": {"provider": {"virtualRouter": {"virtualRouterName": "db-router"}}},
            }
        },
    ]


def test_tcp_route_splits_intercepted_connections_between_two_nodes() -> None:
    config_dir = Path(tempfile.mkdtemp(prefix="meshproxy-tcp-"))  # readable by UID 1337
    try:
        config_dir.chmod(0o755)
        config = config_dir / "mesh.json"
        config.write_text(json.dumps(resources()))
        config.chmod(0o644)
        with pod_pair_context(ipv6=False) as pair, (config_dir / "meshproxy.log").open("w") as log:
            pair.serve(pair.peer, "db-a", [DB_PORT], host=PEER_V4)
            pair.serve(pair.peer, "db-b", [DB_PORT], host=PEER_V4_ALT)
            rules = {
                "APPMESH_IGNORE_UID": str(PROXY_UID),
                "APPMESH_ENVOY_INGRESS_PORT": "15000",
                "APPMESH_ENVOY_EGRESS_PORT": "15001",
                "APPMESH_APP_PORTS": "8080",
            }
            assert meshproxy_iptables(pair.pod, "apply", rules).returncode == 0
            proxy = pair.pod.spawn(
                [*MESHPROXY, "run", "--config", str(config)],
                uid=PROXY_UID,
                env={
                    "APPMESH_RESOURCE_ARN": f"mesh/{MESH}/virtualNode/app",
                    "LISTENER_DRAIN_WAIT_TIME_S": "5",
                },
                output=log,
            )
            try:
                deadline = time.monotonic() + READY_TIMEOUT_S
                while True:
                    ready = pair.pod.run(
                        [
                            "curl",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            f"http://127.0.0.1:{ADMIN_PORT}/ready",
                        ],
                        check=False,
                    )
                    if ready.stdout == "200":
                        break
                    assert proxy.poll() is None and time.monotonic() < deadline, (
                        config_dir / "meshproxy.log"
                    ).read_text()
                    time.sleep(0.1)
                servers: Counter[str] = Counter()
                for i in range(CONNECTIONS):
                    reply = pair.connect(pair.pod, NOWHERE_V4, DB_PORT, uid=APP_UID, send=f"hello {i}")
                    assert "server" in reply, reply
                    assert reply["received"] == f"hello {i}"  # the bytes crossed the proxy unchanged
                    servers[reply["server"]] += 1
                # 40 Bernoulli(0.5) trials: each side gets 20 +/- 3.2; 5 sigma leaves at least 4
                assert set(servers) == {"db-a", "db-b"}, servers
                assert min(servers.values()) >= 4, servers
                stats = pair.pod.run(
                    ["curl", "-s", f"http://127.0.0.1:{ADMIN_PORT}/stats"], check=False
                ).stdout
                values = dict(
                    (name.strip(), int(value))
                    for name, _, value in (line.partition(": ") for line in stats.splitlines())
                    if value.strip().isdigit()
                )
                assert values["tcp.egress.downstream_cx_total"] == CONNECTIONS
                assert values["cluster.cds_egress_m_db-a_tcp_7100.upstream_cx_total"] == servers["db-a"]
                assert values["cluster.cds_egress_m_db-b_tcp_7100.upstream_cx_total"] == servers["db-b"]
            finally:
                stop_process(proxy)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
