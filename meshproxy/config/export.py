"""`meshproxy export`: pull a whole mesh out of the App Mesh API into a file `meshproxy run` accepts.

meshproxy export --mesh NAME [--mesh-owner ACCOUNT] [--region R] [--endpoint-url URL] [--page-size N]
                 --output FILE
    Calls DescribeMesh, then for every kind List* (every page) and Describe* for each item: virtual nodes,
    virtual services, virtual routers and their routes, virtual gateways and their gateway routes. Writes a
    JSON list of the describe-* outputs (`[{"mesh": {...}}, {"virtualNode": {...}}, ...]`, spec §0.1) to
    FILE (`-` for stdout), atomically, so a proxy polling FILE never reads half an export. Credentials and
    region come from the usual AWS chain (environment, profile, instance role) and AWS_REGION, App Mesh's
    own variable (spec §1.5); `--region` and `--endpoint-url` override them.

An endpoint that does not implement an operation (an older or partial App Mesh API, an emulator) answers it
with an HTTP 404/501 that is not an App Mesh error; that kind is skipped with a warning and the export goes
on. Any other API error (no such mesh, access denied, throttled beyond retries) stops the export: exit 1.
The result is checked with the same validator `meshproxy validate` runs; problems are reported, not fatal.

boto3 is needed at run time only for this command: `pip install 'meshproxy[export]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# Errors an emulator or a partial endpoint answers for an operation it lacks. Real App Mesh errors carry
# their own codes (NotFoundException is also HTTP 404, so the status alone does not decide).
_NOT_IMPLEMENTED_CODES = frozenset(
    {"404", "501", "NotImplemented", "NotImplementedException", "UnknownOperationException", "InvalidAction"}
)
MAX_PAGE_SIZE = 100  # App Mesh's List* `limit` range is 1..100


class ExportError(Exception):
    """The mesh could not be exported (API error, no credentials, unreachable endpoint, unwritable output)."""


@dataclass(frozen=True, slots=True)
class ChildKind:
    """Resources listed per parent: routes per virtual router, gateway routes per virtual gateway."""

    label: str  # plural, for messages
    list_op: str  # botocore operation name
    list_key: str
    describe_op: str
    describe_key: str
    name_member: str


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """One App Mesh resource kind as the API lists and describes it, and its children, if any."""

    label: str
    list_op: str
    list_key: str
    describe_op: str
    describe_key: str
    name_member: str
    child: ChildKind | None = None


# The order of the output file: a reader sees a resource's references before it (not required, but kind).
KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        "virtual nodes", "ListVirtualNodes", "virtualNodes", "DescribeVirtualNode", "virtualNode",
        "virtualNodeName",
    ),
    ResourceKind(
        "virtual routers", "ListVirtualRouters", "virtualRouters", "DescribeVirtualRouter", "virtualRouter",
        "virtualRouterName",
        ChildKind("routes", "ListRoutes", "routes", "DescribeRoute", "route", "routeName"),
    ),
    ResourceKind(
        "virtual services", "ListVirtualServices", "virtualServices", "DescribeVirtualService",
        "virtualService", "virtualServiceName",
    ),
    ResourceKind(
        "virtual gateways", "ListVirtualGateways", "virtualGateways", "DescribeVirtualGateway",
        "virtualGateway", "virtualGatewayName",
        ChildKind(
            "gateway routes", "ListGatewayRoutes", "gatewayRoutes", "DescribeGatewayRoute", "gatewayRoute",
            "gatewayRouteName",
        ),
    ),
)  # fmt: skip


@dataclass
class MeshExport:
    """The describe-* outputs gathered so far, what was skipped and why, and counts per kind."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, key: str, item: dict[str, Any]) -> None:
        self.resources.append({key: item})
        self.counts[label] = self.counts.get(label, 0) + 1


class _NotImplemented(Exception):
    def __init__(self, operation: str) -> None:
        super().__init__(operation)
        self.operation = operation


def _botocore_errors() -> tuple[type[Exception], type[Exception]]:
    """(ClientError, BotoCoreError), imported on use: boto3 is optional (the `export` extra)."""
    exceptions = importlib.import_module("botocore.exceptions")
    return exceptions.ClientError, exceptions.BotoCoreError


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


class MeshExporter:
    """Walks one mesh through a boto3 `appmesh` client (any object with the same methods and paginators).

    `page_size` sets the List* `limit` (1..100; None = the service default).
    """

    def __init__(
        self, client: Any, mesh: str, *, mesh_owner: str | None = None, page_size: int | None = None
    ) -> None:
        self.client = client
        self.mesh = mesh
        self.mesh_owner = mesh_owner
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"<MeshExporter mesh={self.mesh} owner={self.mesh_owner}>"

    def export(self) -> MeshExport:
        result = MeshExport()
        try:
            described = self._call("DescribeMesh")
        except _NotImplemented:
            raise ExportError(
                "the endpoint does not implement DescribeMesh: is it an App Mesh API?"
            ) from None
        result.add("mesh", "mesh", described["mesh"])
        for kind in KINDS:
            self._export_kind(kind, result)
        return result

    def _export_kind(self, kind: ResourceKind, result: MeshExport) -> None:
        try:
            names = list(self._names(kind.list_op, kind.list_key, kind.name_member))
        except _NotImplemented as exc:
            result.warnings.append(f"the endpoint does not implement {exc.operation}; {kind.label} skipped")
            return
        children_skipped = False
        for name in names:
            try:
                item = self._call(kind.describe_op, **{kind.name_member: name})[kind.describe_key]
            except _NotImplemented as exc:
                result.warnings.append(
                    f"the endpoint does not implement {exc.operation}; {kind.label} skipped"
                )
                return
            result.add(kind.label, kind.describe_key, item)
            child = kind.child
            if child is None or children_skipped:
                continue
            try:
                child_names = list(
                    self._names(child.list_op, child.list_key, child.name_member, **{kind.name_member: name})
                )
                for child_name in child_names:
                    described = self._call(
                        child.describe_op, **{kind.name_member: name, child.name_member: child_name}
                    )
                    result.add(child.label, child.describe_key, described[child.describe_key])
            except _NotImplemented as exc:
                result.warnings.append(
                    f"the endpoint does not implement {exc.operation}; {child.label} skipped"
                )
                children_skipped = True

    def _names(self, operation: str, key: str, member: str, **parents: str) -> Iterator[str]:
        """Every name a List* operation returns, over all its pages."""
        client_error, botocore_error = _botocore_errors()
        kwargs = self._scope(parents)
        pagination: dict[str, int] = {} if self.page_size is None else {"PageSize": self.page_size}
        try:
            paginator = self.client.get_paginator(_snake(operation))
            for page in paginator.paginate(**kwargs, PaginationConfig=pagination):
                for reference in page.get(key, []):
                    yield str(reference[member])
        except client_error as exc:
            raise self._translate(operation, exc) from None
        except botocore_error as exc:
            raise ExportError(f"{operation}: {exc}") from None

    def _call(self, operation: str, **parameters: str) -> dict[str, Any]:
        client_error, botocore_error = _botocore_errors()
        try:
            response: dict[str, Any] = getattr(self.client, _snake(operation))(**self._scope(parameters))
        except client_error as exc:
            raise self._translate(operation, exc) from None
        except botocore_error as exc:
            raise ExportError(f"{operation}: {exc}") from None
        return response

    def _scope(self, parameters: dict[str, str]) -> dict[str, str]:
        scoped = {"meshName": self.mesh, **parameters}
        if self.mesh_owner is not None:
            scoped["meshOwner"] = self.mesh_owner
        return scoped

    @staticmethod
    def _translate(operation: str, exc: Any) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_IMPLEMENTED_CODES or status == 501:
            return _NotImplemented(operation)
        message = str(error.get("Message", "")).strip() or str(exc)
        return ExportError(f"{operation}: {code or status}: {message}")


def _json_default(value: object) -> str:
    # describe-* metadata carries createdAt / lastUpdatedAt as datetimes; the AWS CLI prints ISO 8601.
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def render_export(export: MeshExport) -> str:
    """The export as the JSON text `meshproxy run` reads."""
    return json.dumps(export.resources, indent=2, default=_json_default) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Replace `path` in one rename: a reader (a polling proxy) sees the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".meshproxy-export-", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_PAGE_SIZE}, got {value}")
    return value


def _client(region: str | None, endpoint_url: str | None) -> Any:
    try:
        boto3 = importlib.import_module("boto3")
        config_module = importlib.import_module("botocore.config")
    except ImportError:
        raise ExportError(
            "meshproxy export needs boto3, which is not installed: pip install 'meshproxy[export]'"
        ) from None
    _, botocore_error = _botocore_errors()
    config = config_module.Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30
    )
    # AWS_REGION is the variable App Mesh task definitions set (spec §1.5); boto3 itself reads only
    # AWS_DEFAULT_REGION and the profile.
    region = region or os.environ.get("AWS_REGION", "").strip() or None
    try:
        session = boto3.session.Session(region_name=region)
        return session.client("appmesh", endpoint_url=endpoint_url, config=config)
    except botocore_error as exc:  # e.g. NoRegionError
        raise ExportError(f"{exc} (pass --region or set AWS_REGION)") from None
    except ValueError as exc:  # an invalid --endpoint-url
        raise ExportError(f"--endpoint-url: {exc}") from None


def _validation_summary(text: str, source: str) -> list[str]:
    """Problems `meshproxy validate` would report for the exported text, as notes (never fatal here)."""
    from meshproxy.config.dialects import read_bytes
    from meshproxy.config.load import check_resources

    read = read_bytes(text.encode(), source=source)
    _, issues = check_resources(read.resources, read.issues)
    errors = sum(1 for issue in issues if issue.is_error)
    if not errors:
        return []
    return [f"the export does not validate ({errors} error{'s' if errors != 1 else ''}): "
            f"`meshproxy validate {source}` lists them"]  # fmt: skip


def main(argv: Sequence[str]) -> int:
    """`meshproxy export --mesh NAME --output FILE`: 0 when written (warnings allowed), 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="meshproxy export",
        description="Pull a mesh from the App Mesh API into a file that `meshproxy run --config` accepts.",
    )
    parser.add_argument("--mesh", required=True, help="the mesh name")
    parser.add_argument("--mesh-owner", help="the owning AWS account id, for a mesh shared with this account")
    parser.add_argument("--region", help="AWS region (default: the AWS configuration, e.g. AWS_REGION)")
    parser.add_argument("--endpoint-url", help="App Mesh API endpoint (default: the region's)")
    parser.add_argument(
        "--page-size", type=_page_size, help=f"List* page size, 1..{MAX_PAGE_SIZE} (default: the service's)"
    )
    parser.add_argument(
        "--output", required=True, metavar="FILE", help="where to write the JSON; - for stdout"
    )
    args = parser.parse_args(list(argv))
    try:
        client = _client(args.region, args.endpoint_url)
        exporter = MeshExporter(client, args.mesh, mesh_owner=args.mesh_owner, page_size=args.page_size)
        export = exporter.export()
        text = render_export(export)
        if args.output == "-":
            sys.stdout.write(text)
        else:
            write_atomically(args.output, text)
    except ExportError as exc:
        print(f"meshproxy export: {exc}", file=sys.stderr)
        return 1
    for warning in export.warnings:
        print(f"meshproxy export: warning: {warning}", file=sys.stderr)
    for note in _validation_summary(text, args.output if args.output != "-" else "<stdout>"):
        print(f"meshproxy export: warning: {note}", file=sys.stderr)
    counts = ", ".join(f"{label} {count}" for label, count in export.counts.items())
    destination = "stdout" if args.output == "-" else args.output
    print(f"meshproxy export: mesh {args.mesh}: {counts} -> {destination}", file=sys.stderr)
    return 0
