"""`meshproxy iptables apply | clean | status | render`: App Mesh traffic interception from the command line.

Settings come from the route manager's environment variables or the ECS proxyConfiguration names as flags
(flags win), see `spec.py`. Exit status: 0 done; 1 iptables failed (message on stderr); 2 invalid settings or
usage (each problem names its variable or flag). `status` also exits 3 when no APPMESH rules are installed and
4 when installed rules differ from the settings given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from meshproxy.interception import apply as iptables
from meshproxy.interception.rules import FamilyStatus, InstallState, render
from meshproxy.interception.spec import (
    FIELDS,
    Family,
    InterceptionSpec,
    InvalidSpec,
    collect_values,
    parse_spec,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_INSTALLED = 3
EXIT_DIFFERS = 4

_COMMANDS = {
    "apply": "install the APPMESH_INGRESS / APPMESH_EGRESS nat rules (idempotent; needs NET_ADMIN)",
    "clean": "remove exactly the rules apply installed",
    "status": "show the installed rules (and whether they match the settings, if any are given)",
    "render": "print the iptables-restore input for the settings, without touching iptables",
}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog="meshproxy iptables",
        description="App Mesh transparent interception (nat chains APPMESH_INGRESS and APPMESH_EGRESS).",
        epilog="Each setting can also come from its environment variable: "
        + ", ".join(f"{f.flag[2:]}={f.env}" for f in FIELDS)
        + ". Flags win over variables.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument(
        "command",
        nargs="?",
        choices=tuple(_COMMANDS),
        help="; ".join(f"{k}: {v}" for k, v in _COMMANDS.items()),
    )
    for f in FIELDS:
        parser.add_argument(f.flag, dest=f.key, metavar="VALUE", help=f"(env {f.env})")
    parser.add_argument(
        "--family",
        choices=[f.value for f in Family],
        help="render: print only this family's input for iptables-restore / ip6tables-restore",
    )
    return parser


def _spec(args: argparse.Namespace, environ: Mapping[str, str], required: bool) -> InterceptionSpec | None:
    flags = {f.key: getattr(args, f.key) for f in FIELDS}
    values = collect_values(environ, flags)
    if not values and not required:
        return None
    return parse_spec(values)


def _print_status(reports: Sequence[FamilyStatus], out: TextIO) -> int:
    if not reports:
        print("no nat table could be read", file=out)
        return EXIT_FAILED
    for report in reports:
        print(f"{report.family}: {report.state}", file=out)
        for rule in report.installed:
            print(f"  {rule}", file=out)
        for rule in report.missing if report.state is InstallState.DIFFERS else ():
            print(f"  missing: {rule}", file=out)
        for rule in report.unexpected:
            print(f"  unexpected: {rule}", file=out)
    states = {r.state for r in reports}
    if InstallState.DIFFERS in states:
        return EXIT_DIFFERS
    if states == {InstallState.ABSENT}:
        return EXIT_NOT_INSTALLED
    if InstallState.INSTALLED in states:  # no settings given: something is installed
        return EXIT_OK
    # Settings given: a family that should have rules and has none means a partial install.
    return EXIT_DIFFERS if InstallState.ABSENT in states else EXIT_OK


def run(argv: Sequence[str], environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """The command with its environment and streams passed in (what `main` and the tests call)."""
    try:
        args = _parser().parse_args(list(argv))
    except UsageError as exc:
        print(f"meshproxy iptables: {exc}\n\n{_parser().format_usage().rstrip()}", file=err)
        return EXIT_USAGE
    if args.help:
        out.write(_parser().format_help())
        return EXIT_OK
    if args.command is None:
        print(f"meshproxy iptables: a command is required\n\n{_parser().format_usage().rstrip()}", file=err)
        return EXIT_USAGE
    try:
        if args.command == "clean":
            for change in iptables.clean():
                _report_change(change, out)
            return EXIT_OK
        if args.command == "status":
            return _print_status(iptables.status(_spec(args, environ, required=False)), out)
        spec = _spec(args, environ, required=True)
        assert spec is not None
        if args.command == "render":
            families = [Family(args.family)] if args.family else list(spec.families)
            for family in families:
                if not args.family:
                    tool = "iptables-restore" if family is Family.IPV4 else "ip6tables-restore"
                    print(f"# {family}: {tool} --noflush", file=out)
                out.write(render(spec, family))
            return EXIT_OK
        for change in iptables.apply(spec):
            _report_change(change, out)
        return EXIT_OK
    except InvalidSpec as exc:
        print("meshproxy iptables: invalid interception settings:", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return EXIT_USAGE
    except iptables.IptablesError as exc:
        print(f"meshproxy iptables {args.command}: {exc}", file=err)
        return EXIT_FAILED


def _report_change(change: iptables.FamilyChange, out: TextIO) -> None:
    if change.skipped:
        print(f"{change.family}: skipped ({change.skipped})", file=out)
    elif change.transaction is None:
        print(f"{change.family}: nothing to change", file=out)
    else:
        lines = change.transaction.splitlines()
        added = sum(1 for line in lines if line.startswith("-A "))
        deleted = sum(1 for line in lines if line.startswith("-D "))
        chains = [line[3:] for line in lines if line.startswith("-X ")]
        done = [f"{added} rules written"] if added else []
        done += [f"{deleted} jumps deleted"] if deleted else []
        done += [f"chain {c} deleted" for c in chains]
        print(f"{change.family}: {', '.join(done) or 'chains reset'}", file=out)


def main(argv: list[str]) -> int:
    """Entry point for `meshproxy iptables ...` (registered in meshproxy/cli.py)."""
    return run(argv, os.environ, sys.stdout, sys.stderr)
