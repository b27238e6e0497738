"""Route selection (meshproxy/router/match.py) against App Mesh's route semantics (spec §4.5)."""

from __future__ import annotations

import random
import re
from collections import Counter
from types import MappingProxyType

import pytest

from meshproxy.config.snapshot import (
    RouteEntry,
    RouteMatch,
    RouteTable,
    StringMatchKind,
    ValueMatch,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.core.events import Headers
from meshproxy.router.match import (
    find_virtual_host,
    header_value,
    pick_weighted,
    route_matches,
    select_route,
    split_target,
    value_matches,
)


def route(name: str, match: RouteMatch, *weights: int) -> RouteEntry:
    targets = tuple(
        WeightedCluster(f"cds_egress_{name}_{i}", w, f"node{i}") for i, w in enumerate(weights or (1,))
    )
    return RouteEntry(
        name=name,
        match=match,
        targets=targets,
        total_weight=sum(t.weight for t in targets),
        retry=None,
        timeout=15.0,
        idle_timeout=300.0,
    )


def vhost(name: str, *routes: RouteEntry, domains: tuple[str, ...] = ()) -> VirtualHost:
    return VirtualHost(name=name, domains=domains or (name,), routes=routes)


def table(*hosts: VirtualHost) -> RouteTable:
    by_domain = {domain: host for host in hosts for domain in host.domains}
    return RouteTable("rds_egress_http_15001", hosts, MappingProxyType(by_domain))


# -------------------------------------------------------------------------------------- find_virtual_host

SVC = vhost("svc.apps.local", domains=("svc.apps.local", "svc.apps.local:8080"))
PORTED = vhost("ported.apps.local:9090", domains=("ported.apps.local:9090",))
V6 = vhost("[fd00::1]", domains=("[fd00::1]", "[fd00::1]:8080"))
TABLE = table(SVC, PORTED, V6)


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("svc.apps.local", SVC),
        ("svc.apps.local:8080", SVC),  # name:port domain
        ("svc.apps.local:1234", SVC),  # unknown port: falls back to the bare host name
        ("SVC.Apps.LOCAL:8080", SVC),  # host names are case-insensitive (RFC 9110 §4.2.3)
        ("ported.apps.local:9090", PORTED),
        ("ported.apps.local", None),  # only the name:port domain exists
        ("ported.apps.local:9091", None),
        ("[fd00::1]:8080", V6),  # IPv6 literal authority with port
        ("[fd00::1]:1234", V6),  # ... and its bare-host fallback
        ("[fd00::1]", V6),
        ("[FD00::1]", V6),
        ("other.apps.local", None),
        ("", None),
    ],
)
def test_find_virtual_host(authority: str, expected: VirtualHost | None) -> None:
    assert find_virtual_host(TABLE, authority) is expected


# ------------------------------------------------------------------------------------------ split_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/p?q=1", (None, "/p?q=1")),
        ("/", (None, "/")),
        ("http://svc.apps.local:8080/p/q?x=1", ("svc.apps.local:8080", "/p/q?x=1")),
        ("http://svc.apps.local", ("svc.apps.local", "/")),
        ("https://[fd00::1]:8443/a", ("[fd00::1]:8443", "/a")),
        ("*", (None, "*")),  # asterisk-form (OPTIONS *): routed by Host
        ("svc.apps.local:443", (None, "svc.apps.local:443")),  # authority-form (CONNECT): routed by Host
    ],
)
def test_split_target(target: str, expected: tuple[str | None, str]) -> None:
    assert split_target(target) == expected


def test_split_target_absolute_form_with_query_and_no_path() -> None:
    # RFC 3986 §3.2: the authority ends at the first '/', '?' or '#'.
    assert split_target("http://svc.apps.local?x=1") == ("svc.apps.local", "/?x=1")


# ------------------------------------------------------------------------------------------ value_matches


def vm(
    kind: StringMatchKind,
    value: str = "",
    *,
    pattern: re.Pattern[str] | None = None,
    range_start: int = 0,
    range_end: int = 0,
) -> ValueMatch:
    return ValueMatch("x-h", kind, value, pattern, range_start, range_end)


CASES: list[tuple[ValueMatch, str, bool]] = [
    (vm(StringMatchKind.EXACT, "blue"), "blue", True),
    (vm(StringMatchKind.EXACT, "blue"), "Blue", False),  # values are case-sensitive
    (vm(StringMatchKind.EXACT, "blue"), "blue2", False),
    (vm(StringMatchKind.PREFIX, "bl"), "blue", True),
    (vm(StringMatchKind.PREFIX, "bl"), "able", False),
    (vm(StringMatchKind.SUFFIX, "ue"), "blue", True),
    (vm(StringMatchKind.SUFFIX, "ue"), "uel", False),
    (vm(StringMatchKind.REGEX, pattern=re.compile(r"v\d+")), "v12", True),
    (vm(StringMatchKind.REGEX, pattern=re.compile(r"v\d+")), "v12-beta", False),  # the whole value must match
    (vm(StringMatchKind.REGEX, pattern=re.compile(r"v\d+")), "xv12", False),
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "1", True),  # start inclusive
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "99", True),
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "100", False),  # end exclusive
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "0", False),
    (vm(StringMatchKind.RANGE, range_start=-10, range_end=0), "-5", True),
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "abc", False),  # not a number: no match
    (vm(StringMatchKind.RANGE, range_start=1, range_end=100), "", False),
    (vm(StringMatchKind.PRESENT), "", True),
    (vm(StringMatchKind.PRESENT), "anything", True),
]


@pytest.mark.parametrize(("match", "value", "expected"), CASES)
def test_value_matches(match: ValueMatch, value: str, expected: bool) -> None:
    assert value_matches(match, value) is expected


@pytest.mark.parametrize(("match", "value", "expected"), CASES)
def test_value_matches_inverted(match: ValueMatch, value: str, expected: bool) -> None:
    inverted = ValueMatch(
        match.name, match.kind, match.value, match.pattern, match.range_start, match.range_end, invert=True
    )
    assert value_matches(inverted, value) is (not expected)


@pytest.mark.parametrize("kind", list(StringMatchKind))
def test_missing_header_never_matches_and_inverted_always_does(kind: StringMatchKind) -> None:
    pattern = re.compile(".*") if kind is StringMatchKind.REGEX else None
    assert value_matches(ValueMatch("x-h", kind, "", pattern, 0, 10), None) is False
    assert value_matches(ValueMatch("x-h", kind, "", pattern, 0, 10, invert=True), None) is True


def test_range_accepts_only_plain_decimal_integers() -> None:
    # Envoy parses with absl::SimpleAtoi: ASCII digits, optional sign and surrounding spaces only.
    assert value_matches(vm(StringMatchKind.RANGE, range_start=0, range_end=100), " +5 ") is True
    assert value_matches(vm(StringMatchKind.RANGE, range_start=0, range_end=100), "1_0") is False


# ------------------------------------------------------------------------------------------ header_value


def test_header_value_joins_repeated_headers_in_order() -> None:
    headers: Headers = [(b"x-h", b"a"), (b"host", b"svc"), (b"x-h", b"b"), (b"x-h", b"c")]
    assert header_value(headers, "x-h") == "a,b,c"
    assert header_value(headers, "host") == "svc"
    assert header_value(headers, "x-missing") is None
    assert header_value([(b"x-h", b"")], "x-h") == ""  # present but empty is not missing


def test_header_value_is_latin1_decoded() -> None:
    assert header_value([(b"x-h", "caf\u00e9".encode("latin-1"))], "x-h") == "caf\u00e9"


# ------------------------------------------------------------------------------------------ route_matches


def matches(
    match: RouteMatch, path: str, method: str = "GET", headers: Headers | None = None, port: int = 8080
) -> bool:
    return route_matches(match, method, path, headers or [], port)


def test_prefix_match() -> None:
    m = RouteMatch(prefix="/api")
    assert matches(m, "/api")
    assert matches(m, "/api/v1/items?x=1")
    assert matches(m, "/apiary")  # App Mesh prefixes are plain string prefixes
    assert not matches(m, "/ap")
    assert not matches(m, "/v1/api")
    assert matches(RouteMatch(prefix="/"), "/anything")


def test_prefix_ignores_the_query() -> None:
    assert not matches(RouteMatch(prefix="/a?x"), "/a?x=1")


def test_exact_path_match_ignores_the_query() -> None:
    m = RouteMatch(path_exact="/health")
    assert matches(m, "/health")
    assert matches(m, "/health?verbose=1")
    assert not matches(m, "/health/")
    assert not matches(m, "/healthz")


def test_regex_path_match_is_a_full_match() -> None:
    m = RouteMatch(path_regex=re.compile(r"/items/\d+"))
    assert matches(m, "/items/42")
    assert matches(m, "/items/42?x=1")
    assert not matches(m, "/items/42/parts")
    assert not matches(m, "/v1/items/42")


def test_method_match() -> None:
    m = RouteMatch(prefix="/", method="POST")
    assert matches(m, "/", method="POST")
    assert not matches(m, "/", method="GET")
    assert not matches(m, "/", method="post")  # methods are case-sensitive (RFC 9110 §9.1)


def test_port_match() -> None:
    m = RouteMatch(prefix="/", port=8080)
    assert matches(m, "/", port=8080)
    assert not matches(m, "/", port=9090)


def test_header_matches_all_must_hold() -> None:
    m = RouteMatch(
        prefix="/",
        headers=(
            ValueMatch("x-canary", StringMatchKind.EXACT, "true"),
            ValueMatch("x-tier", StringMatchKind.PREFIX, "gold", invert=True),
        ),
    )
    assert matches(m, "/", headers=[(b"x-canary", b"true"), (b"x-tier", b"silver")])
    assert matches(m, "/", headers=[(b"x-canary", b"true")])  # inverted match on a missing header holds
    assert not matches(m, "/", headers=[(b"x-canary", b"true"), (b"x-tier", b"gold-plus")])
    assert not matches(m, "/", headers=[(b"x-tier", b"silver")])


def test_header_match_sees_repeated_headers_joined() -> None:
    m = RouteMatch(prefix="/", headers=(ValueMatch("x-h", StringMatchKind.EXACT, "a,b"),))
    assert matches(m, "/", headers=[(b"x-h", b"a"), (b"x-h", b"b")])


def test_query_parameter_exact_match_is_url_decoded() -> None:
    m = RouteMatch(prefix="/", query=(ValueMatch("user name", StringMatchKind.EXACT, "a b&c"),))
    assert matches(m, "/search?user%20name=a+b%26c")
    assert matches(m, "/search?x=1&user+name=a%20b%26c&y=2")
    assert not matches(m, "/search?user%20name=a+b")
    assert not matches(m, "/search")
    assert not matches(m, "/search?user%20name")


def test_query_parameter_presence_only() -> None:
    m = RouteMatch(prefix="/", query=(ValueMatch("debug", StringMatchKind.PRESENT),))
    assert matches(m, "/?debug")
    assert matches(m, "/?debug=")
    assert matches(m, "/?a=1&debug=0")
    assert not matches(m, "/?debugger=1")
    assert not matches(m, "/")


def test_query_parameter_first_occurrence_wins() -> None:
    m = RouteMatch(prefix="/", query=(ValueMatch("v", StringMatchKind.EXACT, "1"),))
    assert matches(m, "/?v=1&v=2")
    assert not matches(m, "/?v=2&v=1")


def test_grpc_service_and_method() -> None:
    service_only = RouteMatch(grpc_service="pkg.Greeter")
    assert matches(service_only, "/pkg.Greeter/SayHello", method="POST")
    assert matches(service_only, "/pkg.Greeter/SayBye", method="POST")
    assert not matches(service_only, "/pkg.Greeter2/SayHello", method="POST")
    assert not matches(service_only, "/other.Greeter/SayHello", method="POST")
    both = RouteMatch(grpc_service="pkg.Greeter", grpc_method="SayHello")
    assert matches(both, "/pkg.Greeter/SayHello", method="POST")
    assert not matches(both, "/pkg.Greeter/SayHelloAgain", method="POST")
    assert not matches(both, "/pkg.Greeter/SayBye", method="POST")


def test_empty_match_accepts_everything() -> None:
    assert matches(RouteMatch(), "/x", method="DELETE", headers=[(b"a", b"b")], port=1)


# ------------------------------------------------------------------------------------------- select_route


def test_select_route_takes_the_first_match_in_compiled_order() -> None:
    exact = route("exact", RouteMatch(path_exact="/api/special"))
    api_post = route("api-post", RouteMatch(prefix="/api", method="POST"))
    api = route("api", RouteMatch(prefix="/api"))
    catch_all = route("all", RouteMatch(prefix="/"))
    host = vhost("svc", exact, api_post, api, catch_all)
    assert select_route(host, "GET", "/api/special", []) is exact
    assert select_route(host, "POST", "/api/special", []) is exact  # earlier route shadows later ones
    assert select_route(host, "POST", "/api/items", []) is api_post
    assert select_route(host, "GET", "/api/items", []) is api
    assert select_route(host, "GET", "/web", []) is catch_all


def test_select_route_none_when_nothing_matches() -> None:
    host = vhost("svc", route("api", RouteMatch(prefix="/api")), route("h", RouteMatch(path_exact="/h")))
    assert select_route(host, "GET", "/web", []) is None
    assert select_route(vhost("empty"), "GET", "/", []) is None


def test_select_route_passes_the_port() -> None:
    a = route("a", RouteMatch(prefix="/", port=8080))
    b = route("b", RouteMatch(prefix="/", port=9090))
    host = vhost("svc", a, b)
    assert select_route(host, "GET", "/", [], 9090) is b
    assert select_route(host, "GET", "/", [], 8080) is a


# ------------------------------------------------------------------------------------------ pick_weighted


def test_pick_weighted_follows_the_weights() -> None:
    entry = route("w", RouteMatch(), 20, 30, 0, 50)
    rng = random.Random(1234)
    picks = Counter(pick.cluster for pick in (pick_weighted(entry, rng) for _ in range(10_000)) if pick)
    assert sum(picks.values()) == 10_000
    zero = entry.targets[2].cluster
    assert picks[zero] == 0  # weight 0 = no traffic (spec §4.5)
    for target in entry.targets:
        if target.weight:
            share = picks[target.cluster] / 10_000
            assert abs(share - target.weight / 100) < 0.025, (target, share)


def test_pick_weighted_weight_zero_target_is_never_picked() -> None:
    entry = route("w", RouteMatch(), 0, 1, 0)
    rng = random.Random(99)
    assert {pick_weighted(entry, rng) for _ in range(2_000)} == {entry.targets[1]}


def test_pick_weighted_all_zero_is_none() -> None:
    rng = random.Random(5)
    assert pick_weighted(route("z", RouteMatch(), 0, 0, 0), rng) is None
    assert pick_weighted(route("z1", RouteMatch(), 0), rng) is None


def test_pick_weighted_single_target() -> None:
    entry = route("one", RouteMatch(), 100)
    assert pick_weighted(entry, random.Random(0)) is entry.targets[0]
    assert pick_weighted(entry) is entry.targets[0]


class _TopOfRange(random.Random):
    """A random source that returns the largest float below 1.0, to reach the rounding fallback."""

    def random(self) -> float:
        return 1.0 - 2**-53


def test_pick_weighted_top_of_range_picks_the_last_weighted_target() -> None:
    entry = route("w", RouteMatch(), 1, 2, 0)
    assert pick_weighted(entry, _TopOfRange()) is entry.targets[1]
