"""Which meshproxy the bench starts: the installed one, its pure-Python form, or another checkout.

`--proxies` takes, besides `envoy`:

- `meshproxy`: the installed package as it is (compiled with mypyc when the install was built that way, see
  README "Compiled or pure Python");
- `meshproxy-pure`: the same install with `MESHPROXY_PURE=1`, which imports every module from its `.py`
  source, so the two forms are measured side by side in one run;
- `meshproxy@PATH`: the meshproxy package of another checkout (say a worktree at an older commit), run with
  this venv's interpreter (`-P`, so that the working directory does not come first) and `PYTHONPATH=PATH`,
  in its pure form; labelled with that checkout's commit.
  Before/after comparisons of a change then share one run and one Envoy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MESHPROXY = "meshproxy"
PURE = "meshproxy-pure"
CHECKOUT_PREFIX = "meshproxy@"


class VariantError(ValueError):
    """A `--proxies` entry that names no meshproxy the bench can start."""


@dataclass(frozen=True, slots=True)
class MeshproxyVariant:
    label: str  # the row in the table
    argv: tuple[str, ...]  # the command before `run --config FILE`
    env: Mapping[str, str] = field(default_factory=dict)  # added to the environment


def is_meshproxy(name: str) -> bool:
    return name in (MESHPROXY, PURE) or name.startswith(CHECKOUT_PREFIX)


def _commit(path: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return path.name
    return done.stdout.strip() or path.name


def variant(name: str, installed: tuple[str, ...]) -> MeshproxyVariant:
    """The variant a `--proxies` entry names; `installed` is the command of this venv's meshproxy."""
    if name == MESHPROXY:
        return MeshproxyVariant(MESHPROXY, installed)
    if name == PURE:
        return MeshproxyVariant(PURE, installed, {"MESHPROXY_PURE": "1"})
    if name.startswith(CHECKOUT_PREFIX):
        path = Path(name.removeprefix(CHECKOUT_PREFIX)).expanduser().resolve()
        if not (path / "meshproxy" / "__init__.py").is_file():
            raise VariantError(f"{name}: no meshproxy package in {path}")
        return MeshproxyVariant(
            CHECKOUT_PREFIX + _commit(path),
            # -P: without it `-m` puts the working directory (this checkout) before PYTHONPATH
            (sys.executable, "-P", "-m", "meshproxy.cli"),
            {"PYTHONPATH": str(path), "MESHPROXY_PURE": "1"},
        )
    raise VariantError(
        f"unknown proxy {name!r}: choose from meshproxy, meshproxy-pure, meshproxy@PATH, envoy"
    )
