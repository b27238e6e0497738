"""Start-up guard: refuse to run as an identity the installed interception rules would redirect.

The egress chain sends every outbound TCP connection to the proxy's egress port except those of the ignored
UID/GID (spec §2.3). A proxy running as any other identity would capture its own upstream connections and loop
into itself. Envoy did not check this; a misconfigured task then failed with opaque timeouts. We check at
start-up and say what is wrong.

Reading the nat table needs CAP_NET_ADMIN, which the proxy normally lacks (it runs as UID 1337): then the
check cannot see the rules and passes (returns None). It bites where the mistake is likeliest: a proxy
started as root, or with capabilities, in a namespace whose rules exempt another UID.
"""

from __future__ import annotations

import os
import pwd
import shlex
from dataclasses import dataclass

from meshproxy.interception.apply import IptablesError, read_nat_table
from meshproxy.interception.rules import EGRESS_CHAIN, EGRESS_JUMP, NatTable, rule_target
from meshproxy.interception.spec import Family

# Matches that do not narrow an owner exemption: every redirected packet is TCP, and comments match nothing.
_NEUTRAL = {("-p", "tcp"), ("-m", "tcp"), ("-m", "owner"), ("-m", "comment")}


@dataclass(frozen=True, slots=True)
class OwnerMatch:
    """One `--uid-owner` / `--gid-owner` condition: an inclusive id range, possibly negated."""

    kind: str  # "uid" | "gid"
    low: int
    high: int
    negated: bool = False

    def matches(self, uid: int, gid: int | None) -> bool:
        value = uid if self.kind == "uid" else gid
        if value is None:
            return False  # an unknown gid cannot be shown to be exempt
        return (self.low <= value <= self.high) != self.negated


def _owner_exemption(rule: str) -> list[OwnerMatch] | None:
    """The owner conditions of a `-j RETURN` rule that is conditional only on the owner, else None."""
    try:
        tokens = shlex.split(rule)[2:]  # drop `-A CHAIN`
    except ValueError:
        return None
    if rule_target(rule) != "RETURN":
        return None
    conditions: list[OwnerMatch] = []
    i = 0
    while i < len(tokens):
        negated = tokens[i] == "!"
        if negated:
            i += 1
        if i + 1 >= len(tokens):
            return None
        option, value = tokens[i], tokens[i + 1]
        i += 2
        if option in ("-j", "--jump"):
            continue
        if option in ("--uid-owner", "--gid-owner"):
            low, _, high = value.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                return None  # a user/group name; iptables-save prints numbers, so this is not ours
            conditions.append(OwnerMatch(option[2:5], int(low), int(high or low), negated))
        elif (option, value) not in _NEUTRAL or negated:
            return None  # narrowed by destination, port, ...: not a blanket exemption
    return conditions or None


def egress_exempts(table: NatTable, uid: int, gid: int | None) -> bool | None:
    """Whether `table`'s egress chain lets connections of uid/gid through unredirected.

    None when the table does not intercept egress at all (no APPMESH_EGRESS hooked from OUTPUT with a
    REDIRECT). Only RETURN rules before the first REDIRECT count: later ones are never reached.
    """
    if not table.has_chain(EGRESS_CHAIN) or EGRESS_JUMP not in table.jumps_to([EGRESS_CHAIN]):
        return None
    rules = table.chain_rules(EGRESS_CHAIN)
    first_redirect = next((i for i, r in enumerate(rules) if rule_target(r) == "REDIRECT"), None)
    if first_redirect is None:
        return None
    for rule in rules[:first_redirect]:
        conditions = _owner_exemption(rule)
        if conditions and all(c.matches(uid, gid) for c in conditions):
            return True
    return False


def _exempt_identities(table: NatTable) -> list[str]:
    shown: list[str] = []
    for rule in table.chain_rules(EGRESS_CHAIN):
        for c in _owner_exemption(rule) or ():
            ids = str(c.low) if c.low == c.high else f"{c.low}-{c.high}"
            shown.append(f"{'not ' if c.negated else ''}{c.kind.upper()} {ids}")
    return shown


def _primary_gid(uid: int) -> int | None:
    if uid == os.geteuid():
        return os.getegid()
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def check_not_intercepted(uid: int, gid: int | None = None) -> str | None:
    """An error message if installed rules would redirect this identity's own outbound TCP, else None.

    `gid` defaults to the effective GID when `uid` is this process's effective UID, else the UID's primary
    group. Returns None when the nat table cannot be read (no iptables, no privilege): the check then has
    nothing to go on, and the proxy must not refuse to start because of that.
    """
    if gid is None:
        gid = _primary_gid(uid)
    for family in Family:
        try:
            table = read_nat_table(family)
        except IptablesError:
            continue
        if egress_exempts(table, uid, gid) is False:
            exempt = ", ".join(_exempt_identities(table)) or "none"
            tool = "iptables" if family is Family.IPV4 else "ip6tables"
            return (
                f"meshproxy is running as UID {uid} (GID {gid if gid is not None else 'unknown'}), but the "
                f"installed {tool} nat chain {EGRESS_CHAIN} redirects this identity's outbound TCP to the "
                f"proxy's egress port, so the proxy's own upstream connections would loop back into itself. "
                f"Run meshproxy as the ignored UID/GID of the interception rules (APPMESH_IGNORE_UID / "
                f"IgnoredUID, usually 1337; exempt now: {exempt}), or change the rules."
            )
    return None
