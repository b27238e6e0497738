"""Service discovery over real sockets (issue 6): DNS TTLs, DNS ENDPOINTS / LOADBALANCER, AWS Cloud Map.

- The record-TTL reader (dnspython) against a DNS server this test runs on a loopback UDP port; names that
  /etc/hosts answers are never sent to a DNS server.
- `resolve_dns` for `localhost` in-process, and a proxy whose node is found at `localhost` with ENDPOINTS
  (every address) and with LOADBALANCER + IPv4_ONLY (one address), read back from /clusters.
- Cloud Map: moto's server (a subprocess on loopback) holds instances on 127.0.0.1-4 that all listen on one
  port; the proxy discovers them with DiscoverInstances (AWS_ENDPOINT_URL_SERVICEDISCOVERY points it at
  moto), applies the node's attribute filter, load-balances over them and follows deregistrations and
  registrations on its refresh.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import dns.asyncresolver
import dns.message
import dns.rrset
import pytest

from meshproxy.config.snapshot import DnsDiscovery
from meshproxy.upstream.discovery import (
    CLOUD_MAP_REFRESH_S,
    DNS_REFRESH_S,
    DiscoveryError,
    DnsTtlResolver,
    HostsFile,
    resolve_dns,
)

from .apps import AppLoop, ColourApp, InstanceApps
from .aws import REGION, aws_environ, cloud_map_service, moto_server
from .harness import MeshProxy, free_ports, running_proxy, wait_for
from .resources import Resource, mesh, node_arn, service_via_node, virtual_node

# ------------------------------------------------------------------------------------------ DNS TTLs


class LoopbackDns(asyncio.DatagramProtocol):
    """A DNS server on 127.0.0.1: answers from `records` {name: [rrset text lines]}, NXDOMAIN otherwise."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().rstrip(".")
        self.queries.append(f"{name} {dns.rdatatype.to_text(question.rdtype)}")
        response = dns.message.make_response(query)
        lines = self.records.get(name)
        if lines is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            for line in lines:
                rrset = dns.rrset.from_text(*line.split(maxsplit=4))
                if rrset.rdtype in (question.rdtype, dns.rdatatype.CNAME):
                    response.answer.append(rrset)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def ttl_lookups(
    records: dict[str, list[str]], names: list[tuple[str, int]], hosts: HostsFile
) -> tuple[list[float | None], list[str]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: LoopbackDns(records), local_addr=("127.0.0.1", 0)
    )
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = int(transport.get_extra_info("sockname")[1])
        ttl_resolver = DnsTtlResolver(resolver, hosts)
        ttls = [await ttl_resolver.ttl(name, {family}) for name, family in names]
    finally:
        transport.close()
    return ttls, server.queries


def test_record_ttls_are_read_from_dns_and_hosts_file_names_never_asked(tmp_path: Path) -> None:
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1 localhost pinned.apps.local\n")
    records = {
        "colour.apps.local": ["colour.apps.local. 42 IN A 127.0.0.1", "colour.apps.local. 9 IN AAAA ::1"],
        "www.apps.local": [
            "www.apps.local. 7 IN CNAME edge.apps.local.",
            "edge.apps.local. 3600 IN A 127.0.0.2",
        ],
        "pinned.apps.local": ["pinned.apps.local. 1 IN A 127.0.0.9"],
    }
    names = [
        ("colour.apps.local", socket.AF_INET),
        ("colour.apps.local", socket.AF_INET6),
        ("www.apps.local", socket.AF_INET),  # the CNAME's TTL is the shorter one
        ("pinned.apps.local", socket.AF_INET),  # /etc/hosts answers it: no TTL, no query
        ("missing.apps.local", socket.AF_INET),  # NXDOMAIN: no TTL
    ]
    ttls, queries = asyncio.run(ttl_lookups(records, names, HostsFile(str(hosts_file))))
    assert ttls == [42.0, 9.0, 7.0, None, None]
    assert "pinned.apps.local A" not in queries
    assert queries[:3] == ["colour.apps.local A", "colour.apps.local AAAA", "www.apps.local A"]


def test_localhost_resolves_from_the_hosts_file_on_the_fixed_refresh() -> None:
    expected = list(
        dict.fromkeys(str(i[4][0]) for i in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
    )
    every = asyncio.run(resolve_dns(DnsDiscovery("localhost", 80, response_type="ENDPOINTS")))
    one = asyncio.run(resolve_dns(DnsDiscovery("localhost", 80, ip_preference="IPv4_ONLY")))
    assert [a for a, _ in every.addresses] == expected
    assert every.refresh_s == DNS_REFRESH_S  # /etc/hosts has no TTL
    assert one.addresses == (("127.0.0.1", 80),)


def test_a_name_without_a_usable_address_is_a_discovery_error() -> None:
    # a numeric IPv6 name under IPv4_ONLY fails inside getaddrinfo, with no DNS traffic
    with pytest.raises(DiscoveryError, match=r"::1: .*"):
        asyncio.run(resolve_dns(DnsDiscovery("::1", 80, ip_preference="IPv4_ONLY")))


# ------------------------------------------------------------------------------------------ DNS in the proxy


def cluster_hosts(proxy: MeshProxy, cluster_prefix: str) -> set[str]:
    """The `hostname` of every host /clusters lists for clusters whose name starts with `cluster_prefix`."""
    text = proxy.admin("/clusters").body.decode()
    return {
        line.rsplit("::", 1)[1]
        for line in text.splitlines()
        if line.startswith(cluster_prefix) and "::hostname::" in line
    }


def dns_node(name: str, port: int, response_type: str, preference: str | None = None) -> Resource:
    node = virtual_node(name, port, hostname="localhost")
    dns_spec = node["virtualNode"]["spec"]["serviceDiscovery"]["dns"]
    dns_spec["responseType"] = response_type
    if preference is not None:
        dns_spec["ipPreference"] = preference
    return node


def test_dns_endpoints_and_loadbalancer_in_the_proxy(app_loop: AppLoop, tmp_path: Path) -> None:
    app: ColourApp = app_loop.colour_app("local", dual_stack=True)
    resources = [
        mesh(),
        dns_node("every", app.port, "ENDPOINTS"),
        dns_node("one", app.port, "LOADBALANCER", "IPv4_ONLY"),
        virtual_node("front", free_ports(1)[0], backends=["every.local", "one.local"]),
        service_via_node("every.local", "every"),
        service_via_node("one.local", "one"),
    ]
    localhost = {str(i[4][0]) for i in socket.getaddrinfo("localhost", app.port, type=socket.SOCK_STREAM)}
    with running_proxy(resources, node_arn("front"), tmp_path) as proxy:
        replies = [proxy.egress(host) for host in ("every.local", "one.local") * 4]
        every = cluster_hosts(proxy, "cds_egress_demo_every_")
        one = cluster_hosts(proxy, "cds_egress_demo_one_")
    assert [(r.status, r.app) for r in replies] == [(200, "local")] * 8
    assert every == localhost
    assert one == {"127.0.0.1"}


# ------------------------------------------------------------------------------------------ Cloud Map

NAMESPACE, SERVICE = "apps.local", "colour"
CLOUD_MAP_CHANGE_TIMEOUT_S = CLOUD_MAP_REFRESH_S * 3


@pytest.fixture(scope="module")
def cloud_map(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """moto's server and a boto3 servicediscovery client on it, with an HTTP namespace and a service."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        client, _ = cloud_map_service(url, NAMESPACE, SERVICE)
        yield url, client


def cloud_map_node(name: str, port: int, attributes: dict[str, str], **extra: Any) -> Resource:
    return {
        "virtualNode": {
            "meshName": "demo",
            "virtualNodeName": name,
            "spec": {
                "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                "serviceDiscovery": {
                    "awsCloudMap": {
                        "namespaceName": extra.get("namespace", NAMESPACE),
                        "serviceName": SERVICE,
                        "attributes": [{"key": k, "value": v} for k, v in attributes.items()],
                    }
                },
            },
        }
    }


def answers(proxy: MeshProxy, host: str, count: int) -> list[tuple[int, str | None]]:
    return [(r.status, r.app) for r in (proxy.egress(host) for _ in range(count))]


def test_cloud_map_instances_filtered_balanced_and_followed(
    cloud_map: tuple[str, Any], app_loop: AppLoop, tmp_path: Path
) -> None:
    url, client = cloud_map
    service_id = next(s["Id"] for s in client.list_services()["Services"] if s["Name"] == SERVICE)
    port = free_ports(1)[0]
    apps = InstanceApps(app_loop, port)
    instances = {"i1": ("127.0.0.1", "blue"), "i2": ("127.0.0.2", "green"), "i3": ("127.0.0.3", "blue")}
    for instance, (address, stage) in instances.items():
        apps.start(instance, address)
        attributes = {"AWS_INSTANCE_IPV4": address, "AWS_INSTANCE_PORT": str(port), "stage": stage}
        client.register_instance(ServiceId=service_id, InstanceId=instance, Attributes=attributes)
    resources = [
        mesh(),
        cloud_map_node("colour-blue", port, {"stage": "blue"}),
        cloud_map_node("elsewhere", port, {}, namespace="no-such-namespace.local"),
        virtual_node("front", free_ports(1)[0], backends=["blue.local", "elsewhere.local"]),
        service_via_node("blue.local", "colour-blue"),
        service_via_node("elsewhere.local", "elsewhere"),
    ]
    env = aws_environ(AWS_ENDPOINT_URL_SERVICEDISCOVERY=url, AWS_REGION=REGION)
    try:
        with running_proxy(resources, node_arn("front"), tmp_path, env=env) as proxy:
            spread = answers(proxy, "blue.local", 8)
            unknown_namespace = proxy.egress("elsewhere.local")
            alive = proxy.admin("/ready").status

            client.deregister_instance(ServiceId=service_id, InstanceId="i1")
            apps.start("i4", "127.0.0.4")
            client.register_instance(
                ServiceId=service_id,
                InstanceId="i4",
                Attributes={"AWS_INSTANCE_IPV4": "127.0.0.4", "stage": "blue"},
            )
            started = time.monotonic()
            assert wait_for(
                lambda: cluster_hosts(proxy, "cds_egress_demo_colour-blue_") == {"127.0.0.3", "127.0.0.4"},
                CLOUD_MAP_CHANGE_TIMEOUT_S,
                interval=0.2,
            ), (cluster_hosts(proxy, "cds_egress_demo_colour-blue_"), proxy.output_tail())
            followed_after = time.monotonic() - started
            after = answers(proxy, "blue.local", 8)
    finally:
        apps.stop()

    # the attribute filter keeps the blue instances; round robin reaches both
    assert sorted(set(spread)) == [(200, "i1"), (200, "i3")], spread
    assert (200, "i2") not in spread
    assert sorted(set(after)) == [(200, "i3"), (200, "i4")], after
    assert followed_after <= CLOUD_MAP_CHANGE_TIMEOUT_S
    # a namespace Cloud Map does not know: no hosts (503), and the proxy stays up and ready
    assert unknown_namespace.status == 503, unknown_namespace
    assert alive == 200
    assert "NamespaceNotFound" in proxy.stderr_text()
