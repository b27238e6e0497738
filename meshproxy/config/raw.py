"""Resources as read from a file, before validation: the common output of every dialect reader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshproxy.config.errors import Issue
from meshproxy.config.model import ResourceType


@dataclass(frozen=True, slots=True)
class RawResource:
    """One resource as the App Mesh API shapes it (`meshName`, `<type>Name`, `spec`, ...), not yet checked."""

    kind: ResourceType
    body: Mapping[str, Any]
    source: str = ""  # file name, for messages
    location: str = ""  # where in the file, e.g. "document 2, item [3]"


@dataclass(slots=True)
class ReadResult:
    """What reading produced: resources, problems, and Kubernetes objects not resolved yet.

    Kubernetes objects refer to each other across files, so `dialects.read_files` resolves them once
    everything is read.
    """

    resources: list[RawResource] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    kubernetes: list[Any] = field(default_factory=list)  # kubernetes.KubernetesObject

    def extend(self, other: ReadResult) -> None:
        self.resources.extend(other.resources)
        self.issues.extend(other.issues)
        self.kubernetes.extend(other.kubernetes)
