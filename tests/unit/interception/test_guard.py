"""The start-up guard: does the installed egress chain exempt the proxy's own UID/GID?"""

from __future__ import annotations

import os

import pytest

from meshproxy.interception.apply import IptablesError, read_nat_table
from meshproxy.interception.guard import check_not_intercepted, egress_exempts
from meshproxy.interception.rules import NatTable, parse_nat_table
from meshproxy.interception.spec import Family

JUMP = "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS\n"
REDIRECT = "-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001\n"


def table(*rules: str, hooked: bool = True) -> NatTable:
    body = "".join(rules) + (JUMP if hooked else "")
    return parse_nat_table(f"*nat\n:OUTPUT ACCEPT [0:0]\n:APPMESH_EGRESS - [0:0]\n{body}COMMIT\n")


UID_RETURN = "-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN\n"
GID_RETURN = "-A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN\n"


def test_the_ignored_uid_is_exempt_and_others_are_not() -> None:
    t = table(UID_RETURN, REDIRECT)
    assert egress_exempts(t, 1337, 1337) is True
    assert egress_exempts(t, 0, 0) is False
    assert egress_exempts(t, 1000, 1337) is False


def test_the_ignored_gid_exempts_any_uid_in_that_group() -> None:
    t = table(GID_RETURN, REDIRECT)
    assert egress_exempts(t, 0, 1338) is True
    assert egress_exempts(t, 1338, 0) is False
    assert egress_exempts(t, 0, None) is False  # unknown gid: cannot be shown exempt


def test_ranges_and_negation() -> None:
    assert egress_exempts(
        table("-A APPMESH_EGRESS -m owner --uid-owner 1000-2000 -j RETURN\n", REDIRECT), 1337, 0
    )
    negated = table("-A APPMESH_EGRESS -m owner ! --uid-owner 0 -j RETURN\n", REDIRECT)
    assert egress_exempts(negated, 1337, 0) is True
    assert egress_exempts(negated, 0, 0) is False


def test_a_return_after_the_redirect_does_not_count() -> None:
    assert egress_exempts(table(REDIRECT, UID_RETURN), 1337, 1337) is False


def test_a_narrowed_return_is_not_an_exemption() -> None:
    narrowed = "-A APPMESH_EGRESS -d 10.0.0.0/8 -p tcp -m owner --uid-owner 1337 -j RETURN\n"
    assert egress_exempts(table(narrowed, REDIRECT), 1337, 1337) is False
    ports = "-A APPMESH_EGRESS -p tcp -m multiport --dports 22 -j RETURN\n"
    assert egress_exempts(table(ports, REDIRECT), 1337, 1337) is False


def test_no_interception_gives_none() -> None:
    assert egress_exempts(parse_nat_table(""), 0, 0) is None
    assert egress_exempts(table(UID_RETURN), 0, 0) is None  # chain flushed of its REDIRECT ("disable")
    assert egress_exempts(table(UID_RETURN, REDIRECT, hooked=False), 0, 0) is None


def test_check_in_a_namespace_without_rules_passes() -> None:
    # Real iptables-save: as root it reads this namespace's nat table, unprivileged (or without iptables)
    # the read fails. Either way there is nothing to refuse unless this namespace intercepts. The netns
    # tests cover the refusing case.
    try:
        installed = read_nat_table(Family.IPV4).has_chain("APPMESH_EGRESS")
    except IptablesError:
        installed = False
    if installed:
        pytest.skip("this test host's own namespace has APPMESH rules installed")
    assert check_not_intercepted(os.geteuid()) is None
