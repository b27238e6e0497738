"""The only module that runs iptables: read the nat table, write restore transactions.

Every change is one `iptables-restore --noflush` transaction (atomic: all of it or none of it), planned by the
pure functions in `rules.py` from what `iptables-save -t nat` shows right now. So `apply` is idempotent (a
second run finds the rules in place and changes nothing), and `clean` deletes exactly our chains and the jumps
into them, by their installed spelling, leaving every other rule as it was.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from meshproxy.interception.rules import (
    FamilyStatus,
    NatRules,
    NatTable,
    compare,
    expected_rules,
    parse_nat_table,
    plan_apply,
    plan_clean,
)
from meshproxy.interception.spec import Family, InterceptionError, InterceptionSpec

COMMAND_TIMEOUT_S = 20.0  # iptables-restore waits for the xtables lock (-w) rather than failing at once

_SAVE = {Family.IPV4: "iptables-save", Family.IPV6: "ip6tables-save"}
_RESTORE = {Family.IPV4: "iptables-restore", Family.IPV6: "ip6tables-restore"}


class IptablesError(InterceptionError):
    """An iptables command could not run or failed. The message says which command and why."""


@dataclass(frozen=True, slots=True)
class FamilyChange:
    """What `apply` or `clean` did for one family. `transaction` is None when nothing had to change."""

    family: Family
    transaction: str | None
    skipped: str | None = None  # why the family was left alone (e.g. no ip6tables and IPv6 not asked for)


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise IptablesError(
            f"{argv[0]} not found: install iptables (Debian/Ubuntu: apt-get install iptables)"
        ) from None
    except PermissionError as exc:
        raise IptablesError(f"{argv[0]} cannot be run: {exc}") from exc
    except subprocess.TimeoutExpired:
        raise IptablesError(f"{' '.join(argv)} did not finish within {COMMAND_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        hint = ""
        if "ermission denied" in detail or "must be root" in detail:
            hint = " (changing or reading iptables needs root or CAP_NET_ADMIN)"
        raise IptablesError(f"{' '.join(argv)} failed: {detail}{hint}")
    return done.stdout


def read_nat_save(family: Family) -> str:
    """`iptables-save -t nat` (or ip6tables-save) output. Raises IptablesError when it cannot be read."""
    return _run([_SAVE[family], "-t", "nat"])


def read_nat_table(family: Family) -> NatTable:
    return parse_nat_table(read_nat_save(family))


def restore(family: Family, transaction: str) -> None:
    """Run one atomic `iptables-restore --noflush` transaction (waiting for the xtables lock)."""
    _run([_RESTORE[family], "--noflush", "--wait"], stdin=transaction)


def apply(spec: InterceptionSpec) -> list[FamilyChange]:
    """Install `spec`'s rules, replacing any earlier APPMESH rules; a no-op when they are already in place.

    With IPv6 off, APPMESH rules left in ip6tables by an earlier apply are removed; a host without ip6tables
    is then not an error.
    """
    changes: list[FamilyChange] = []
    for family in Family:
        if family in spec.families:
            transaction = plan_apply(spec, family, read_nat_table(family))
        else:
            try:
                current = read_nat_table(family)
            except IptablesError as exc:
                changes.append(FamilyChange(family, None, skipped=f"IPv6 not enabled; {exc}"))
                continue
            transaction = plan_clean(current)
        if transaction is not None:
            restore(family, transaction)
        changes.append(FamilyChange(family, transaction))
    return changes


def clean() -> list[FamilyChange]:
    """Remove the APPMESH chains and their jumps in both families. Idempotent."""
    changes: list[FamilyChange] = []
    errors: list[str] = []
    for family in Family:
        try:
            current = read_nat_table(family)
        except IptablesError as exc:
            if family is Family.IPV6:
                changes.append(FamilyChange(family, None, skipped=str(exc)))
                continue
            errors.append(str(exc))
            continue
        transaction = plan_clean(current)
        if transaction is not None:
            restore(family, transaction)
        changes.append(FamilyChange(family, transaction))
    if errors:
        raise IptablesError("; ".join(errors))
    return changes


def status(spec: InterceptionSpec | None) -> list[FamilyStatus]:
    """What is installed per family, compared with `spec` when one is given.

    A family the spec does not enable is expected to be empty; without ip6tables it is left out.
    """
    reports: list[FamilyStatus] = []
    for family in Family:
        try:
            current = read_nat_table(family)
        except IptablesError:
            if family is Family.IPV6 and (spec is None or not spec.enable_ipv6):
                continue
            raise
        desired: NatRules | None = None
        if spec is not None:
            # A family the spec does not enable should have nothing installed.
            desired = expected_rules(spec, family) if family in spec.families else NatRules(family, (), ())
        reports.append(compare(current, desired, family))
    return reports
