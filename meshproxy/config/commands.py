"""`meshproxy validate` and `meshproxy render`: the configuration commands.

meshproxy validate [--node ARN] FILE...
    Reads and validates every file together; prints each error and warning as `<file>: <severity>: <issue>`
    and `ok: N resources` when there is no error. With --node, also compiles for that node or gateway.
    Exit status 0 when valid, 1 on errors.

meshproxy render --config FILE [--config FILE...] [--node ARN_OR_SHORT] [--format text|json]
    Prints the compiled configuration for one node or gateway (default: APPMESH_RESOURCE_ARN), as the
    stable text listing or as the /config_dump JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from meshproxy.config.compile import compile_snapshot
from meshproxy.config.dump import render_text, snapshot_to_dict
from meshproxy.config.errors import ConfigError, Issue
from meshproxy.config.load import content_version, load_issues
from meshproxy.config.snapshot import Identity
from meshproxy.settings import SettingsError, parse_identity


def _identity(node: str | None) -> Identity:
    env = dict(os.environ) if node is None else {"APPMESH_RESOURCE_ARN": node}
    return parse_identity(env)


def _print_issues(issues: Sequence[Issue], out: TextIO) -> None:
    for issue in issues:
        print(issue.located(), file=out)


def _files_version(paths: Sequence[str]) -> str:
    data = b""
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data += handle.read() + b"\0"
        except OSError:
            continue  # already reported by load_issues
    return content_version(data)


def validate_main(argv: Sequence[str]) -> int:
    """`meshproxy validate FILE...`: 0 when every file is valid (warnings allowed), 1 on errors."""
    parser = argparse.ArgumentParser(prog="meshproxy validate", description="Check App Mesh resource files.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON or YAML App Mesh resources")
    parser.add_argument(
        "--node", help="also compile for this virtual node / gateway ARN (or mesh/M/virtualNode/N)"
    )
    args = parser.parse_args(list(argv))
    resources, issues = load_issues(args.files)
    _print_issues(issues, sys.stdout)
    if any(issue.is_error for issue in issues):
        count = sum(issue.is_error for issue in issues)
        print(f"invalid: {count} error{'s' if count != 1 else ''}", file=sys.stdout)
        return 1
    if args.node is not None:
        try:
            compile_snapshot(resources, _identity(args.node), version="validate")
        except SettingsError as exc:
            print(f"--node: {exc.message}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            _print_issues(exc.issues, sys.stdout)
            return 1
    print(f"ok: {len(resources)} resources")
    return 0


def render_main(argv: Sequence[str]) -> int:
    """`meshproxy render --config FILE --node ARN`: print the compiled configuration; 1 if it fails."""
    parser = argparse.ArgumentParser(
        prog="meshproxy render", description="Print the compiled configuration for one node or gateway."
    )
    parser.add_argument("--config", action="append", required=True, metavar="FILE", help="App Mesh resources")
    parser.add_argument("--node", help="virtual node / gateway ARN or mesh/M/virtualNode/N (default: env)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--egress-port", type=int, default=15001, help="egress listener port (default 15001)")
    args = parser.parse_args(list(argv))
    try:
        identity = _identity(args.node)
    except SettingsError as exc:
        print(f"{'--node' if args.node is not None else exc.variable}: {exc.message}", file=sys.stderr)
        return 1
    resources, issues = load_issues(args.config)
    errors = [issue for issue in issues if issue.is_error]
    if errors:
        _print_issues(issues, sys.stderr)
        return 1
    _print_issues(issues, sys.stderr)  # warnings
    try:
        snapshot = compile_snapshot(
            resources, identity, version=_files_version(args.config), egress_port=args.egress_port
        )
    except ConfigError as exc:
        _print_issues(exc.issues, sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(snapshot_to_dict(snapshot), indent=2))
    else:
        sys.stdout.write(render_text(snapshot))
    return 0
