"""Pure interception rules: spec -> iptables-restore text, and iptables-save text -> what is installed.

Nothing here runs a command. `apply.py` reads `iptables-save -t nat`, hands the text to `parse_nat_table`,
asks `plan_apply` / `plan_clean` for a restore transaction and feeds it to `iptables-restore --noflush`.

The rules are App Mesh's, in the CNI plugin's order (spec §2.1, `setupIptablesRules`), per IP family:

    nat APPMESH_INGRESS  (only with app ports)  -p tcp -m multiport --dports <app ports> -> REDIRECT <ingress>
    nat PREROUTING       -p tcp -m addrtype ! --src-type LOCAL -> APPMESH_INGRESS
    nat APPMESH_EGRESS   --uid-owner <uid> RETURN, --gid-owner <gid> RETURN, --dports <ignored ports> RETURN,
                         -d <ignored address> RETURN (one rule each), -p tcp REDIRECT <egress>
    nat OUTPUT           -p tcp -m addrtype ! --dst-type LOCAL -> APPMESH_EGRESS

Every rule is written the way `iptables-save` prints it back (`-d` before `-p`, `/32` on host addresses,
`--to-ports`), so the rendered lines can be compared with what is installed, string for string.

Difference from the CNI plugin: multiport takes at most 15 ports. The plugin keeps the first 15 and drops the
rest with only a log line ([CNI] `forEachSlice`, spec §2.1); we split longer lists into several rules of at
most 15 ports each, so every listed port is honoured.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshproxy.interception.spec import Family, InterceptionSpec

INGRESS_CHAIN = "APPMESH_INGRESS"
EGRESS_CHAIN = "APPMESH_EGRESS"
OWN_CHAINS = (INGRESS_CHAIN, EGRESS_CHAIN)
MULTIPORT_LIMIT = 15  # xt_multiport's XT_MULTI_PORTS

# The hooks: only traffic from outside the namespace is captured inbound, only traffic leaving the namespace
# is captured outbound (spec §2.3), so app <-> sidecar traffic on localhost / the pod IP stays direct.
INGRESS_JUMP = f"-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j {INGRESS_CHAIN}"
EGRESS_JUMP = f"-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j {EGRESS_CHAIN}"


@dataclass(frozen=True, slots=True)
class NatRules:
    """The nat-table rules for one IP family, in `iptables-save` spelling and in install order.

    `chains` are the user chains to create; `rules` the `-A CHAIN ...` lines (chain contents and the jumps
    from PREROUTING / OUTPUT).
    """

    family: Family
    chains: tuple[str, ...]
    rules: tuple[str, ...]

    def chain_rules(self, chain: str) -> tuple[str, ...]:
        return tuple(r for r in self.rules if rule_chain(r) == chain)

    @property
    def jumps(self) -> tuple[str, ...]:
        """The rules that hook our chains into the built-in chains."""
        return tuple(r for r in self.rules if rule_chain(r) not in OWN_CHAINS)


def chunks(ports: Sequence[int], size: int = MULTIPORT_LIMIT) -> list[tuple[int, ...]]:
    """Split a port list into multiport-sized groups, keeping the order."""
    return [tuple(ports[i : i + size]) for i in range(0, len(ports), size)]


def _multiport(ports: Iterable[int]) -> str:
    return "-p tcp -m multiport --dports " + ",".join(str(p) for p in ports)


def expected_rules(spec: InterceptionSpec, family: Family) -> NatRules:
    """The rules `spec` installs for `family` (spec §2.1 table, rows 1-10, in that order)."""
    chains: list[str] = []
    rules: list[str] = []
    if spec.app_ports and spec.proxy_ingress_port is not None:
        chains.append(INGRESS_CHAIN)
        rules += [
            f"-A {INGRESS_CHAIN} {_multiport(group)} -j REDIRECT --to-ports {spec.proxy_ingress_port}"
            for group in chunks(spec.app_ports)
        ]
        rules.append(INGRESS_JUMP)
    chains.append(EGRESS_CHAIN)
    if spec.ignored_uid is not None:
        rules.append(f"-A {EGRESS_CHAIN} -m owner --uid-owner {spec.ignored_uid} -j RETURN")
    if spec.ignored_gid is not None:
        rules.append(f"-A {EGRESS_CHAIN} -m owner --gid-owner {spec.ignored_gid} -j RETURN")
    rules += [
        f"-A {EGRESS_CHAIN} {_multiport(group)} -j RETURN" for group in chunks(spec.egress_ignored_ports)
    ]
    # iptables expands `-d a,b` into one rule per address, printed with its prefix length (spec §2.1 row 8).
    rules += [f"-A {EGRESS_CHAIN} -d {net} -p tcp -j RETURN" for net in spec.ignored_networks(family)]
    rules.append(f"-A {EGRESS_CHAIN} -p tcp -j REDIRECT --to-ports {spec.proxy_egress_port}")
    rules.append(EGRESS_JUMP)
    return NatRules(family, tuple(chains), tuple(rules))


def render(spec: InterceptionSpec, family: Family) -> str:
    """The iptables-restore input that installs `spec` for `family` in a namespace that has none of it yet.

    Feed it to `iptables-restore --noflush` (or `ip6tables-restore --noflush`): the transaction is atomic.
    """
    rules = expected_rules(spec, family)
    lines = ["*nat", *(f":{chain} - [0:0]" for chain in rules.chains), *rules.rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def rule_chain(rule: str) -> str:
    """The chain of an `-A CHAIN ...` line."""
    parts = rule.split(None, 2)
    return parts[1] if len(parts) > 1 else ""


def rule_target(rule: str) -> str | None:
    """The `-j` / `-g` target of a rule, or None."""
    try:
        tokens = shlex.split(rule)
    except ValueError:
        tokens = rule.split()
    for i, token in enumerate(tokens[:-1]):
        if token in ("-j", "--jump", "-g", "--goto"):
            return tokens[i + 1]
    return None


@dataclass(frozen=True, slots=True)
class NatTable:
    """The nat table of one family as `iptables-save -t nat` printed it (rule counters not kept)."""

    chains: tuple[str, ...]  # every chain declared, built-in and user
    rules: tuple[str, ...]  # every `-A` line, in order

    def has_chain(self, chain: str) -> bool:
        return chain in self.chains

    def chain_rules(self, chain: str) -> tuple[str, ...]:
        return tuple(r for r in self.rules if rule_chain(r) == chain)

    def jumps_to(self, chains: Iterable[str]) -> tuple[str, ...]:
        """Rules in other chains whose target is one of `chains`."""
        wanted = set(chains)
        return tuple(r for r in self.rules if rule_chain(r) not in wanted and rule_target(r) in wanted)

    def own_rules(self) -> tuple[str, ...]:
        """Everything App Mesh interception owns here: our chains' contents and the jumps into them."""
        return tuple(r for r in self.rules if rule_chain(r) in OWN_CHAINS or rule_target(r) in OWN_CHAINS)


EMPTY_NAT = NatTable((), ())


def parse_nat_table(save_text: str) -> NatTable:
    """Read the `*nat` section of iptables-save output. No nat section gives an empty table."""
    chains: list[str] = []
    rules: list[str] = []
    in_nat = False
    for raw in save_text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat or not line or line.startswith("#"):
            continue
        elif line == "COMMIT":
            in_nat = False
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("["):
            # `iptables-save -c` prefixes each rule with its counters: `[pkts:bytes] -A ...`
            rules.append(line.split("]", 1)[1].strip())
        elif line.startswith("-A "):
            rules.append(line)
    return NatTable(tuple(chains), tuple(rules))


class InstallState(enum.StrEnum):
    ABSENT = "absent"  # no APPMESH chain and no jump
    MATCHES = "matches"  # installed, exactly what the spec renders
    DIFFERS = "differs"  # something is installed, but not what the spec renders (or partially)
    INSTALLED = "installed"  # something is installed; no spec to compare with


@dataclass(frozen=True, slots=True)
class FamilyStatus:
    """What `status` reports for one family."""

    family: Family
    state: InstallState
    installed: tuple[str, ...]  # our chains' rules and the jumps, as installed
    missing: tuple[str, ...] = ()  # rendered rules that are not installed
    unexpected: tuple[str, ...] = ()  # installed rules the spec does not render (or duplicates)


def _installed_matches(current: NatTable, desired: NatRules) -> bool:
    own_chains = tuple(c for c in current.chains if c in OWN_CHAINS)
    if sorted(own_chains) != sorted(desired.chains):
        return False
    for chain in desired.chains:
        if current.chain_rules(chain) != desired.chain_rules(chain):
            return False
    return sorted(current.jumps_to(OWN_CHAINS)) == sorted(desired.jumps)


def compare(current: NatTable, desired: NatRules | None, family: Family) -> FamilyStatus:
    """Compare what is installed with what a spec renders (`desired` None: just report what is installed)."""
    installed = current.own_rules()
    present = bool(installed) or any(current.has_chain(c) for c in OWN_CHAINS)
    if desired is None:
        return FamilyStatus(family, InstallState.INSTALLED if present else InstallState.ABSENT, installed)
    if not present:
        # Nothing installed is a match for a family the spec gives no rules (IPv6 when it is off).
        state = InstallState.ABSENT if desired.rules else InstallState.MATCHES
        return FamilyStatus(family, state, installed, missing=desired.rules)
    if _installed_matches(current, desired):
        return FamilyStatus(family, InstallState.MATCHES, installed)
    remaining = list(installed)
    missing: list[str] = []
    for rule in desired.rules:
        if rule in remaining:
            remaining.remove(rule)
        else:
            missing.append(rule)
    return FamilyStatus(family, InstallState.DIFFERS, installed, tuple(missing), tuple(remaining))


def _delete(rule: str) -> str:
    return "-D" + rule[2:]


def plan_clean(current: NatTable) -> str | None:
    """The restore transaction that removes exactly what `plan_apply` adds, or None if nothing is installed.

    Like the CNI plugin's DEL (spec §2.1): delete each jump into our chains, then flush and delete the chains.
    Jumps are deleted by their exact installed spelling, so other rules in PREROUTING / OUTPUT stay untouched.
    """
    own = [c for c in OWN_CHAINS if current.has_chain(c)]
    jumps = current.jumps_to(OWN_CHAINS)
    if not own and not jumps:
        return None
    lines = ["*nat", *(_delete(j) for j in jumps)]
    lines += [f"-F {c}" for c in own]
    lines += [f"-X {c}" for c in own]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def plan_apply(spec: InterceptionSpec, family: Family, current: NatTable) -> str | None:
    """The restore transaction that makes the installed rules equal `spec`'s, or None if they already do.

    With `--noflush`, declaring `:CHAIN` creates the chain or flushes it if it exists, so the chain contents
    are replaced whole. A jump that is already installed exactly once is kept where it is (re-applying must
    not move it behind rules someone appended later); stale or duplicate jumps are deleted, missing ones
    appended, and a chain the spec no longer uses (the ingress chain when app ports were removed) is deleted.
    """
    desired = expected_rules(spec, family)
    if _installed_matches(current, desired):
        return None
    lines = ["*nat", *(f":{chain} - [0:0]" for chain in desired.chains)]
    keep: list[str] = []
    for jump in current.jumps_to(OWN_CHAINS):
        if jump in desired.jumps and jump not in keep:
            keep.append(jump)
        else:
            lines.append(_delete(jump))
    stale = [c for c in OWN_CHAINS if current.has_chain(c) and c not in desired.chains]
    lines += [f"-F {c}" for c in stale]
    lines += [f"-X {c}" for c in stale]
    for chain in desired.chains:
        lines += desired.chain_rules(chain)
    lines += [j for j in desired.jumps if j not in keep]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
