"""Active health checks over real sockets (issue 14, item 5): a Cloud Map node (moto's server, instances on
127.0.0.1-3, one port) whose listener has a `healthCheck`; the proxy checks every instance, sends no request
to the one failing its checks, shows it in /clusters and in Envoy's stats, and drops an instance Cloud Map
deregisters on its next refresh although that instance passes its checks (App Mesh roadmap #213).

The component tier covers thresholds, protocols, timeouts, jitter and panic mode on a fake clock
(tests/component/upstream/test_health_checks.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshproxy.upstream.discovery import CLOUD_MAP_REFRESH_S

from .apps import AppLoop, InstanceApps
from .aws import REGION, aws_environ, cloud_map_service, moto_server
from .harness import MeshProxy, free_ports, running_proxy, wait_for
from .resources import Resource, mesh, node_arn, service_via_node, virtual_node

NAMESPACE, SERVICE = "apps.local", "checked"
HEALTH = "/health"
FIRST_CHECKS_S = 3.0  # the first checks come within a tenth of the 5 s interval; room for a busy machine


@pytest.fixture(scope="module")
def cloud_map(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str]]:
    """moto's server, a servicediscovery client on it, and the id of a service in an HTTP namespace."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        client, service_id = cloud_map_service(url, NAMESPACE, SERVICE)
        yield url, client, service_id


def checked_node(port: int) -> Resource:
    return {
        "virtualNode": {
            "meshName": "demo",
            "virtualNodeName": "checked",
            "spec": {
                "listeners": [
                    {
                        "portMapping": {"port": port, "protocol": "http"},
                        "healthCheck": {
                            "protocol": "http",
                            "path": HEALTH,
                            "intervalMillis": 5000,
                            "timeoutMillis": 2000,
                            "healthyThreshold": 2,
                            "unhealthyThreshold": 2,
                        },
                    }
                ],
                "serviceDiscovery": {"awsCloudMap": {"namespaceName": NAMESPACE, "serviceName": SERVICE}},
            },
        }
    }


def health_flags(proxy: MeshProxy) -> dict[str, str]:
    """address -> health_flags of the checked node's hosts, from /clusters."""
    flags = {}
    for line in proxy.admin("/clusters").body.decode().splitlines():
        if line.startswith("cds_egress_demo_checked_") and "::health_flags::" in line:
            _, host, _, value = line.split("::")
            flags[host.rsplit(":", 1)[0]] = value
    return flags


def test_instances_failing_checks_get_no_traffic_and_deregistered_ones_leave(
    cloud_map: tuple[str, Any, str], app_loop: AppLoop, tmp_path: Path
) -> None:
    url, client, service_id = cloud_map
    port = free_ports(1)[0]
    instances = InstanceApps(app_loop, port)
    instances.failing.add("i2")
    for instance, address in (("i1", "127.0.0.1"), ("i2", "127.0.0.2"), ("i3", "127.0.0.3")):
        instances.start(instance, address)
        client.register_instance(
            ServiceId=service_id, InstanceId=instance, Attributes={"AWS_INSTANCE_IPV4": address}
        )
    resources = [
        mesh(),
        checked_node(port),
        virtual_node("front", free_ports(1)[0], backends=["checked.local"]),
        service_via_node("checked.local", "checked"),
    ]
    env = aws_environ(AWS_ENDPOINT_URL_SERVICEDISCOVERY=url, AWS_REGION=REGION)
    expected = {"127.0.0.1": "healthy", "127.0.0.2": "/failed_active_hc", "127.0.0.3": "healthy"}
    try:
        with running_proxy(resources, node_arn("front"), tmp_path, env=env) as proxy:
            assert wait_for(lambda: health_flags(proxy) == expected, FIRST_CHECKS_S, interval=0.1), (
                health_flags(proxy),
                proxy.output_tail(),
            )
            served = Counter(proxy.egress("checked.local").app for _ in range(12))
            stats = proxy.stats()

            client.deregister_instance(ServiceId=service_id, InstanceId="i3")
            started = time.monotonic()
            gone = wait_for(lambda: "127.0.0.3" not in health_flags(proxy), 3 * CLOUD_MAP_REFRESH_S, 0.1)
            left_after = time.monotonic() - started
            after = Counter(proxy.egress("checked.local").app for _ in range(6))
    finally:
        instances.stop()

    assert served == Counter({"i1": 6, "i3": 6}), served
    prefix = next(name.split(".health_check")[0] for name in stats if ".health_check.attempt" in name)
    assert stats[f"{prefix}.health_check.attempt"] >= 3
    assert stats[f"{prefix}.health_check.failure"] >= 1
    assert stats[f"{prefix}.health_check.healthy"] == 2
    assert stats[f"{prefix}.membership_healthy"] == 2
    # deregistered, though passing its checks: gone on the next refresh, and no request reaches it
    assert gone and left_after <= 2 * CLOUD_MAP_REFRESH_S, left_after
    assert after == Counter({"i1": 6}), after
