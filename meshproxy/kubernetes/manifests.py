"""`meshproxy inject`: App Mesh's sidecar injection applied to manifest files instead of at admission.

meshproxy inject --config MESH [--config MESH...] --image IMAGE --config-url SOURCE [FILE|-]

Reads Kubernetes manifests (JSON, or YAML with several documents; `kind: List` too), finds the pod template of
every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob, injects it as
`meshproxy.kubernetes.injector` decides, and writes the manifests to stdout (or `--output`). A document
nothing was changed in is written back byte for byte, comments included; a changed one is written as YAML
(JSON input: JSON). Each pod template gets one line on stderr saying what was done and why. Any error (a pod
the controller would have refused, a malformed annotation, an invalid mesh) is printed and nothing is
written: exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from meshproxy.kubernetes.injector import (
    InjectError,
    InjectMode,
    InjectorConfig,
    MeshIndex,
    inject_pod,
)

# kind -> path from the object to its pod template
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one pod template: `describe` names it, `action` says what was done and why."""

    describe: str
    action: str


def _templates(obj: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """(holder, workload, key) of every pod template in `obj`: holder[key] is the template."""
    if not isinstance(obj, dict):
        return
    if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
        for item in obj["items"]:
            yield from _templates(item)
        return
    path = POD_TEMPLATE_PATHS.get(str(obj.get("kind")))
    if path is None:
        return
    if not path:
        yield {"": obj}, obj, ""
        return
    holder: Any = obj
    for step in path[:-1]:
        holder = holder.get(step) if isinstance(holder, dict) else None
    if isinstance(holder, dict) and isinstance(holder.get(path[-1]), dict):
        yield holder, obj, path[-1]


def _describe(workload: dict[str, Any], namespace: str) -> str:
    name = (workload.get("metadata") or {}).get("name", "(unnamed)")
    return f"{workload.get('kind')} {namespace}/{name}"


def inject_object(
    obj: Any, index: MeshIndex, config: InjectorConfig, default_namespace: str
) -> tuple[Any, list[Outcome]]:
    """`obj` with every pod template injected (the input is not changed), and one outcome per template.

    Raises InjectError naming the workload."""
    import copy

    result = copy.deepcopy(obj)
    outcomes = []
    for holder, workload, key in _templates(result):
        namespace = (workload.get("metadata") or {}).get("namespace") or default_namespace
        template = holder[key] if key else workload
        describe = _describe(workload, namespace)
        try:
            injected, decision = inject_pod(template, namespace, index, config)
        except InjectError as exc:
            raise InjectError(f"{describe}: {exc}") from None
        if key:
            holder[key] = injected
        else:
            workload.clear()
            workload.update(injected)
        if decision.member is None:
            outcomes.append(Outcome(describe, f"not injected: {decision.reason}"))
        else:
            outcomes.append(
                Outcome(describe, f"injected as {decision.member.resource_id} ({decision.reason})")
            )
    return result, outcomes


@dataclass(frozen=True, slots=True)
class _Document:
    start: int
    end: int
    value: Any


def _yaml_documents(text: str) -> list[_Document]:
    """Each YAML document's value and the span of text it was read from (to write untouched ones back)."""
    loader = yaml.SafeLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            documents.append(
                _Document(node.start_mark.index, node.end_mark.index, loader.construct_document(node))
            )
    finally:
        loader.dispose()
    return documents


def inject_text(
    text: str, index: MeshIndex, config: InjectorConfig, default_namespace: str = "default"
) -> tuple[str, list[Outcome]]:
    """The manifests in `text` with meshproxy injected (see the module docstring)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            injected, found = inject_object(value, index, config, default_namespace)
            return (text if injected == value else json.dumps(injected, indent=2) + "\n"), found
    out: list[str] = []
    outcomes: list[Outcome] = []
    position = 0
    for document in _yaml_documents(text):
        injected, found = inject_object(document.value, index, config, default_namespace)
        outcomes.extend(found)
        if injected == document.value:
            continue
        span = text[document.start : document.end]
        rendered = yaml.safe_dump(injected, sort_keys=False, default_flow_style=False)
        if not span.endswith("\n"):
            rendered = rendered.rstrip("\n")
        out.append(text[position : document.start])
        out.append(rendered)
        position = document.end
    out.append(text[position:])
    return "".join(out), outcomes


# ------------------------------------------------------------------------------------------------ commands


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name, value


def add_injector_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `inject` and `webhook` share (App Mesh's controller had them as Helm values)."""
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="MESH",
        help="the mesh: App Mesh resources in any dialect (VirtualNode objects with podSelector, "
        "or exported resources named by the appmesh.k8s.aws/virtualNode annotation)",
    )
    parser.add_argument(
        "--image", required=True, help="the meshproxy sidecar image, e.g. REPO/meshproxy:0.1.0"
    )
    parser.add_argument(
        "--init-image", default="", help="the init container image (default: IMAGE's tag + -init)"
    )
    parser.add_argument(
        "--config-url",
        required=True,
        metavar="SOURCE",
        help="where the sidecars read the mesh (their MESHPROXY_CONFIG): https://, s3:// or a path",
    )
    parser.add_argument("--region", help="AWS_REGION for the sidecar (s3:// sources, Cloud Map)")
    parser.add_argument("--log-level", default="info", help="ENVOY_LOG_LEVEL (default info)")
    parser.add_argument("--admin-port", type=int, default=9901, help="ENVOY_ADMIN_ACCESS_PORT (default 9901)")
    parser.add_argument("--prestop-delay", type=int, default=20, help="preStop sleep, seconds (default 20)")
    parser.add_argument("--cpu-request", default="10m")
    parser.add_argument("--memory-request", default="32Mi")
    parser.add_argument("--cpu-limit", default="")
    parser.add_argument("--memory-limit", default="")
    parser.add_argument(
        "--egress-ignored-ips",
        default="169.254.169.254",
        help="APPMESH_EGRESS_IGNORED_IP unless a pod's egressIgnoredIPs annotation says otherwise",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_env_pair,
        metavar="NAME=VALUE",
        help="a variable every sidecar gets (e.g. ENABLE_ENVOY_XRAY_TRACING=1); repeatable",
    )


def injector_config(args: argparse.Namespace, mode: InjectMode) -> InjectorConfig:
    return InjectorConfig(
        image=args.image,
        init_image=args.init_image,
        config_url=args.config_url,
        region=args.region,
        log_level=args.log_level,
        admin_port=args.admin_port,
        prestop_delay_s=args.prestop_delay,
        cpu_request=args.cpu_request,
        memory_request=args.memory_request,
        cpu_limit=args.cpu_limit,
        memory_limit=args.memory_limit,
        egress_ignored_ips=args.egress_ignored_ips,
        env=tuple(args.env),
        namespace_mode=mode,
    )


def load_index(paths: Sequence[str]) -> MeshIndex | None:
    """The mesh to inject for, or None after printing why it cannot be used."""
    index, issues = MeshIndex.load(paths)
    errors = [issue for issue in issues if issue.is_error]
    for issue in errors:
        print(issue.located(), file=sys.stderr)
    return None if errors else index


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".meshproxy-inject-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def inject_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="meshproxy inject",
        description="Add meshproxy's init container and sidecar to Kubernetes manifests, as App Mesh's "
        "controller did at admission.",
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="manifests (default: stdin)")
    parser.add_argument("-o", "--output", help="write here (may be FILE itself) instead of stdout")
    parser.add_argument("--namespace", default="default", help="for objects without metadata.namespace")
    add_injector_arguments(parser)
    args = parser.parse_args(list(argv))
    config = injector_config(args, InjectMode.UNSPECIFIED)
    index = load_index(args.config)
    if index is None:
        return 1
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        print(f"meshproxy inject: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        result, outcomes = inject_text(text, index, config, args.namespace)
    except InjectError as exc:
        print(f"meshproxy inject: {exc}", file=sys.stderr)
        return 1
    except yaml.YAMLError as exc:
        print(f"meshproxy inject: {args.file}: not YAML or JSON: {exc}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(f"{outcome.describe}: {outcome.action}", file=sys.stderr)
    if args.output:
        _write(args.output, result)
    else:
        sys.stdout.write(result)
    return 0
