"""`meshproxy` command line: run | demo | validate | render | iptables | export | inject | webhook."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

# command -> (module, function, one-line help). Each function takes argv and returns an exit status.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("meshproxy.server", "main", "run the proxy for APPMESH_RESOURCE_ARN from --config SOURCE"),
    "demo": ("meshproxy.demo", "main", "run the embedded colour mesh: routing, retries and metrics"),
    "validate": ("meshproxy.config.commands", "validate_main", "check App Mesh resource files"),
    "render": ("meshproxy.config.commands", "render_main", "print the compiled config for one node"),
    "iptables": ("meshproxy.interception.commands", "main", "apply | clean | status | render the rules"),
    "export": ("meshproxy.config.export", "main", "pull a mesh from the App Mesh API into a config file"),
    "inject": ("meshproxy.kubernetes.manifests", "inject_main", "add the sidecar to Kubernetes manifests"),
    "webhook": ("meshproxy.kubernetes.webhook", "main", "the same injection as an admission webhook"),
}


def usage() -> str:
    lines = ["usage: meshproxy COMMAND [ARGS]    (meshproxy --version)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("--version", "-V", "version"):
        from meshproxy import __version__

        print(f"meshproxy {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"meshproxy: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = entry
    command: Callable[[list[str]], int] = getattr(import_module(module), function)
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
