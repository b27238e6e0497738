"""Service discovery, the pure parts: which addresses a DNS answer or Cloud Map instances give a cluster,
how long an answer stays valid, /etc/hosts names, and the discovery loop's schedule.

Lookups over real sockets (a loopback DNS server, moto's Cloud Map, the proxy) are in
tests/e2e/test_discovery.py.
"""

from __future__ import annotations

import asyncio
import socket

import dns.message
import pytest

from meshproxy.config.snapshot import DnsDiscovery
from meshproxy.upstream.discovery import (
    DNS_REFRESH_S,
    MAX_DNS_REFRESH_S,
    MIN_REFRESH_S,
    DiscoveryError,
    Resolution,
    answer_ttl,
    cloud_map_addresses,
    hosts_file_names,
    keep_discovering,
    refresh_after,
    select_dns_addresses,
)

V4, V6 = socket.AF_INET, socket.AF_INET6
ANSWER = [(V6, "fd00::1"), (V4, "10.0.0.1"), (V6, "fd00::2"), (V4, "10.0.0.2"), (V4, "10.0.0.1")]

# ------------------------------------------------------------------------------------------------ DNS


@pytest.mark.parametrize(
    ("response_type", "preference", "expected"),
    [
        ("ENDPOINTS", None, ["fd00::1", "10.0.0.1", "fd00::2", "10.0.0.2"]),
        ("ENDPOINTS", "IPv4_PREFERRED", ["10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"]),
        ("ENDPOINTS", "IPv6_PREFERRED", ["fd00::1", "fd00::2", "10.0.0.1", "10.0.0.2"]),
        ("ENDPOINTS", "IPv4_ONLY", ["10.0.0.1", "10.0.0.2"]),
        ("ENDPOINTS", "IPv6_ONLY", ["fd00::1", "fd00::2"]),
        ("LOADBALANCER", None, ["fd00::1"]),
        ("LOADBALANCER", "IPv4_PREFERRED", ["10.0.0.1"]),
        ("LOADBALANCER", "IPv4_ONLY", ["10.0.0.1"]),
        ("LOADBALANCER", "IPv6_ONLY", ["fd00::1"]),
    ],
)
def test_dns_answers_by_response_type_and_ip_preference(
    response_type: str, preference: str | None, expected: list[str]
) -> None:
    discovery = DnsDiscovery("svc.local", 8080, response_type=response_type, ip_preference=preference)
    assert select_dns_addresses(ANSWER, discovery) == [(a, 8080) for a in expected]


def test_a_family_the_preference_excludes_gives_no_address() -> None:
    discovery = DnsDiscovery("svc.local", 80, response_type="ENDPOINTS", ip_preference="IPv6_ONLY")
    assert select_dns_addresses([(V4, "10.0.0.1")], discovery) == []


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (None, DNS_REFRESH_S),  # no TTL known (/etc/hosts, no DNS answer)
        (0, DNS_REFRESH_S),  # "do not cache": Envoy falls back to its refresh rate too
        (0.2, MIN_REFRESH_S),
        (30, 30.0),
        (86400, MAX_DNS_REFRESH_S),
    ],
)
def test_refresh_follows_the_ttl_within_bounds(ttl: float | None, expected: float) -> None:
    assert refresh_after(ttl) == expected


def test_answer_ttl_is_the_shortest_link_of_a_cname_chain() -> None:
    query = dns.message.make_query("www.example.test", "A")
    text = """\
id 1
opcode QUERY
rcode NOERROR
flags QR RD RA
;QUESTION
www.example.test. IN A
;ANSWER
www.example.test. 10 IN CNAME host1.example.test.
host1.example.test. 86400 IN A 192.0.2.1
host1.example.test. 86400 IN A 192.0.2.2
"""
    response = dns.message.from_text(text)
    assert answer_ttl(response) == 10
    assert answer_ttl(dns.message.make_response(query)) is None


def test_hosts_file_names_skip_comments_and_take_aliases() -> None:
    text = """\
# a comment 10.0.0.9 commented.example
127.0.0.1   localhost
::1         localhost ip6-localhost   # trailing comment
10.1.2.3    Colour.Apps.Local. colour   alias
   \t
"""
    assert hosts_file_names(text) == {
        "localhost",
        "ip6-localhost",
        "colour.apps.local",
        "colour",
        "alias",
    }


# ------------------------------------------------------------------------------------------------ Cloud Map

BOTH = {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_IPV6": "fd00::1", "AWS_INSTANCE_PORT": "9999"}
V4_ONLY = {"AWS_INSTANCE_IPV4": "10.0.0.2"}
V6_ONLY = {"AWS_INSTANCE_IPV6": "FD00:0::2"}  # written loosely; used in canonical form


@pytest.mark.parametrize(
    ("preference", "expected"),
    [
        (None, ["10.0.0.1", "10.0.0.2", "fd00::2"]),  # spec §4.1: IPv4 if present, else IPv6
        ("IPv4_PREFERRED", ["10.0.0.1", "10.0.0.2", "fd00::2"]),
        ("IPv6_PREFERRED", ["fd00::1", "10.0.0.2", "fd00::2"]),
        ("IPv4_ONLY", ["10.0.0.1", "10.0.0.2"]),
        ("IPv6_ONLY", ["fd00::1", "fd00::2"]),
    ],
)
def test_cloud_map_instances_give_one_endpoint_each_on_the_listener_port(
    preference: str | None, expected: list[str]
) -> None:
    # AWS_INSTANCE_PORT is ignored: App Mesh routes to the node's listener port
    assert cloud_map_addresses([BOTH, V4_ONLY, V6_ONLY], 8080, preference) == [(a, 8080) for a in expected]


def test_cloud_map_skips_malformed_and_duplicate_addresses() -> None:
    instances = [
        {"AWS_INSTANCE_IPV4": "not-an-ip"},
        {"AWS_INSTANCE_IPV4": "fd00::9"},  # wrong family in the IPv4 attribute
        {"AWS_INSTANCE_IPV4": " 10.0.0.7 "},
        {"AWS_INSTANCE_IPV4": "10.0.0.7"},
        {"stage": "blue"},  # no address at all
    ]
    assert cloud_map_addresses(instances, 80, None) == [("10.0.0.7", 80)]
    assert cloud_map_addresses([], 80, None) == []


# ------------------------------------------------------------------------------------------------ the loop


class _Stop(Exception):
    pass


def run_loop(
    answers: list[Resolution | Exception], failure_refresh_s: float = 5.0
) -> tuple[list[object], list[float]]:
    """Drive keep_discovering over `answers`; returns the callbacks it made and the sleeps it asked for."""
    events: list[object] = []
    sleeps: list[float] = []
    pending = list(answers)

    async def resolve() -> Resolution:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if not pending:
            raise _Stop

    async def loop() -> None:
        await keep_discovering(
            resolve,
            events.append,
            lambda reason: events.append(f"error: {reason}"),
            failure_refresh_s=failure_refresh_s,
            sleep=sleep,
        )

    with pytest.raises(_Stop):
        asyncio.run(loop())
    return events, sleeps


def test_the_loop_waits_each_answers_validity_and_retries_failures_on_their_own_schedule() -> None:
    events, sleeps = run_loop(
        [
            Resolution((("10.0.0.1", 80),), 30.0),
            DiscoveryError("svc.local: timed out"),
            Resolution((("10.0.0.1", 80), ("10.0.0.2", 80)), 7.0),
            Resolution((), 5.0),  # an empty, successful answer empties the cluster
        ]
    )
    assert events == [
        [("10.0.0.1", 80)],
        "error: svc.local: timed out",
        [("10.0.0.1", 80), ("10.0.0.2", 80)],
        [],
    ]
    assert sleeps == [30.0, 5.0, 7.0, 5.0]


def test_an_unexpected_exception_is_reported_and_discovery_goes_on() -> None:
    events, sleeps = run_loop([KeyError("Instances"), Resolution((("10.0.0.3", 80),), 5.0)], 2.0)
    assert events == ["error: unexpected KeyError: 'Instances'", [("10.0.0.3", 80)]]
    assert sleeps == [2.0, 5.0]
