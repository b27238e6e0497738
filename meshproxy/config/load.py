"""Files -> validated `MeshResources` -> `Snapshot`: the entry points the server and the commands use.

`load_resources` reads every file (JSON or YAML, any of the accepted item forms, see `dialects.py`), merges
them, validates the whole set and raises `ConfigError` with every error found. `load_snapshot` adds the
compile step for one identity. Both are synchronous and do no network I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from meshproxy.config.compile import compile_snapshot
from meshproxy.config.dialects import read_bytes, read_files
from meshproxy.config.errors import ConfigError, Issue
from meshproxy.config.model import MeshResources
from meshproxy.config.raw import RawResource
from meshproxy.config.snapshot import APP_MESH_LIMITS, ConnectionPoolLimits, Identity, Snapshot
from meshproxy.config.validate import validate


def check_resources(
    raw: Sequence[RawResource], read_issues: Sequence[Issue] = ()
) -> tuple[MeshResources, list[Issue]]:
    """Validate already-read resources; returns them with every issue (read problems first)."""
    resources, issues = validate(raw)
    return resources, [*read_issues, *issues]


def load_issues(paths: Sequence[str]) -> tuple[MeshResources, list[Issue]]:
    """Read and validate `paths` without raising: the resources that are valid and every issue found."""
    read = read_files(paths)
    return check_resources(read.resources, read.issues)


def load_resources(paths: Sequence[str]) -> tuple[MeshResources, list[str]]:
    """Read, merge and validate App Mesh resource files.

    Returns the resources and the warnings, each as `<file>: warning: <issue>`. Raises `ConfigError` carrying
    every issue if any is an error.
    """
    resources, issues = load_issues(paths)
    if any(issue.is_error for issue in issues):
        raise ConfigError(issues)
    return resources, [issue.located() for issue in issues]


def content_version(data: bytes) -> str:
    """The default config version: a short sha256 of the bytes the configuration was read from."""
    return hashlib.sha256(data).hexdigest()[:12]


def load_snapshot(
    path: str, identity: Identity, *, egress_port: int = 15001, version: str | None = None
) -> Snapshot:
    """Read one configuration file and compile it for `identity`.

    `version` defaults to a short sha256 of the file's bytes, so an unchanged file keeps its version. Raises
    `ConfigError` for an unreadable or invalid file, or an identity the file does not define.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            [Issue("", "", "", f"cannot read file: {exc.strerror or exc}", source=path)]
        ) from None
    return snapshot_from_bytes(data, identity, source=path, egress_port=egress_port, version=version)


def snapshot_from_bytes(
    data: bytes,
    identity: Identity,
    *,
    source: str = "<config>",
    egress_port: int = 15001,
    version: str | None = None,
    egress_limits: ConnectionPoolLimits = APP_MESH_LIMITS,
) -> Snapshot:
    """Parse, validate and compile configuration bytes (a file's or an HTTP body's) for `identity`."""
    read = read_bytes(data, source=source)
    resources, issues = check_resources(read.resources, read.issues)
    if any(issue.is_error for issue in issues):
        raise ConfigError(issues)
    return compile_snapshot(
        resources,
        identity,
        version=version if version is not None else content_version(data),
        egress_port=egress_port,
        egress_limits=egress_limits,
    )
