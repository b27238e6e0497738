"""Configuration problems: one `Issue` per finding, one `ConfigError` carrying all of them.

Reading, validating and compiling never stop at the first problem: they collect every issue so a user fixes a
file in one pass. An issue prints as `<kind> <name>: <path>: <message>`, e.g.
`route color-router/split: spec.httpRoute.action.weightedTargets[0].weight: 150 is not in 0..100`, where
`<kind>` is the App Mesh resource type as the API spells it (mesh, virtualNode, virtualService, virtualRouter,
route, virtualGateway, gatewayRoute) and `<path>` uses the API's member names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"  # the configuration is rejected
    WARNING = "warning"  # accepted; something is ignored or assumed


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding about the configuration.

    `kind`/`name` are empty for problems found before a resource is recognised (unreadable file, unknown
    item); `source` is the file (or other origin) the resource came from, empty if unknown.
    """

    kind: str
    name: str
    path: str
    message: str
    severity: Severity = Severity.ERROR
    source: str = ""

    def __str__(self) -> str:
        parts = [f"{self.kind} {self.name}" if self.kind else "", self.path, self.message]
        return ": ".join(part for part in parts if part)

    def located(self) -> str:
        """`<source>: <severity>: <issue>`, the form the `validate` command prints."""
        prefix = f"{self.source}: " if self.source else ""
        return f"{prefix}{self.severity}: {self}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class ConfigError(Exception):
    """The configuration cannot be used. `issues` holds every error found, and the warnings seen with them."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.errors) or "invalid configuration")

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(issue for issue in self.issues if issue.is_error)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(issue for issue in self.issues if not issue.is_error)
