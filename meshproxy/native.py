"""Which form of meshproxy runs: the request path compiled with mypyc, or every module from its source.

A build with `MESHPROXY_MYPYC=1` (setup.py; the Dockerfile's default) compiles the request-path modules with
mypyc into C extensions that sit beside their `.py` sources; Python then imports the extension. The sources
stay the reference: `MESHPROXY_PURE=1` (or a compiled library that fails to load) makes every meshproxy
module import from its `.py` file, so both forms run from one install and the tests and the bench can run
either (README "Compiled or pure Python").
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "meshproxy"
PURE_ENV = "MESHPROXY_PURE"  # set (to anything but "" or "0"): run every module from its source
NATIVE_LIBRARY = "meshproxy._native__mypyc"  # the shared library of the compiled group (setup.py)
MANIFEST_NAME = "_native_sources.json"  # what the compiled build was made from (setup.py)


class SourceFirst:
    """Finds meshproxy's modules as `.py` files even where a compiled extension sits beside them.

    A meta path finder by protocol (`find_spec`), not a subclass of `importlib.abc.MetaPathFinder`: importing
    `importlib.abc` pulls in importlib.resources, tempfile, shutil, bz2 and lzma, ~0.7 MiB resident in
    every worker for a base class that adds nothing here."""

    def __repr__(self) -> str:
        return "<SourceFirst meshproxy>"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not fullname.startswith(PACKAGE + "."):
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            source = Path(entry) / f"{name}.py"
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None  # a package, or not ours: the usual finders


def pure_requested(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return environ.get(PURE_ENV, "") not in ("", "0")


def prefer_sources() -> None:
    """From now on, meshproxy modules not yet imported come from their sources (idempotent)."""
    if not any(isinstance(finder, SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst())


def native_library_loads() -> bool:
    """Is there a compiled library, and does it load? False without one (a pure install)."""
    if importlib.util.find_spec(NATIVE_LIBRARY) is None:
        return False
    try:
        importlib.import_module(NATIVE_LIBRARY)
    except ImportError as exc:  # built for another interpreter, or damaged: the sources still work
        print(
            f"meshproxy: compiled modules unusable ({exc}); running the pure-Python sources", file=sys.stderr
        )
        return False
    return True


def choose_form() -> None:
    """Called once, by the package's `__init__`: sources if asked for, or if the compiled library is
    missing or broken (then extension modules left from an old build must not be picked up either)."""
    if pure_requested() or not native_library_loads():
        prefer_sources()


def compiled_modules() -> list[str]:
    """The meshproxy modules imported so far that run compiled."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith(PACKAGE + ".")
        and name != NATIVE_LIBRARY
        and (getattr(module, "__file__", None) or "").endswith(suffixes)
    )


def form() -> str:
    """`compiled` or `pure`: the form this process runs (`meshproxy --version` says it)."""
    sources = any(isinstance(finder, SourceFirst) for finder in sys.meta_path)
    return "compiled" if NATIVE_LIBRARY in sys.modules and not sources else "pure"


# The packages a request passes through (tests/unit/test_architecture.py REQUEST_PATH) and the stats it counts
# in (compiled, `stats.upstream_rq_total += 1` is a native field update instead of a generic setattr): what a
# compiled build (setup.py) compiles, every module but those in NOT_COMPILED.
COMPILED = (
    "meshproxy/core",
    "meshproxy/codec",
    "meshproxy/net",
    "meshproxy/upstream",
    "meshproxy/router",
    "meshproxy/downstream",
    "meshproxy/listeners",
    "meshproxy/tcp",
    "meshproxy/telemetry/stats.py",
    # the snapshot's route table, clusters and policies: read on every request (match, decide, retry)
    "meshproxy/config/snapshot.py",
    # the per-request work of telemetry: access-log lines, X-Ray segments, the drain (not tracing.py: its
    # NamedTuple's string annotations are looked up in the compiled module's globals, without builtins)
    "meshproxy/telemetry/accesslog.py",
    "meshproxy/telemetry/xray.py",
    "meshproxy/telemetry/hub.py",
    "meshproxy/telemetry/datagram.py",
)
NOT_COMPILED = frozenset(
    {
        "meshproxy/native.py",  # chooses the form: must run before any extension is loaded
        "meshproxy/codec/h2_hpack.py",  # runs a private copy of hpack's module: a job for the interpreter
        # service discovery: a loop per cluster, far off the request path (and mypyc mis-compiles its
        # `except DiscoveryError` / `except Exception` pair in a coroutine)
        "meshproxy/upstream/discovery.py",
        # the descriptor reserve: consulted once per accept burst, and its AcceptPaused subclasses OSError,
        # a builtin mypyc cannot derive a native class from
        "meshproxy/net/descriptors.py",
        # secrets and certificates: loaded when a snapshot or an SDS push arrives, never per request
        "meshproxy/net/sds.py",
        "meshproxy/net/secrets.py",
        "meshproxy/net/certificates.py",
        "meshproxy/codec/sds.py",
        "meshproxy/codec/protobuf.py",
    }
)


def compiled_sources(root: Path) -> list[str]:
    """The sources a compiled build compiles, relative to the checkout `root`."""
    sources: list[str] = []
    for entry in COMPILED:
        path = root / entry
        files = [path] if path.suffix == ".py" else sorted(path.glob("*.py"))
        for file in files:
            relative = file.relative_to(root).as_posix()
            if file.name != "__init__.py" and relative not in NOT_COMPILED:
                sources.append(relative)
    return sources


def source_digests(root: Path, sources: Sequence[str]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in sources}


def recorded_digests(package_dir: Path) -> dict[str, str]:
    """What the last compiled build was made from (empty without one)."""
    try:
        digests: dict[str, str] = json.loads((package_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return digests


def record_build(package_dir: Path | None = None) -> None:
    """After a successful compiled build (scripts/build): remember what it was made from."""
    base = package_dir or Path(__file__).resolve().parent
    digests = source_digests(base.parent, compiled_sources(base.parent))
    (base / MANIFEST_NAME).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def build_is_current(package_dir: Path | None = None) -> bool:
    """Is there a compiled build of exactly today's sources?"""
    base = package_dir or Path(__file__).resolve().parent
    root = base.parent
    libraries = list(base.glob("_native__mypyc*.so"))
    sources = compiled_sources(root)
    return bool(libraries) and recorded_digests(base) == source_digests(root, sources)


def stale_extensions(package_dir: Path | None = None) -> list[str]:
    """Compiled modules whose source changed since the build (scripts/build rebuilds them): the extension,
    not the edited source, would be imported."""
    base = package_dir or Path(__file__).resolve().parent
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    built = sorted(
        path.relative_to(base.parent).as_posix().split(".", 1)[0] + ".py"
        for path in base.rglob("*.so")
        if path.name.endswith(suffixes) and not path.name.startswith("_native__mypyc")
    )
    recorded = recorded_digests(base)
    root = base.parent
    return [
        name
        for name in built
        if not (root / name).is_file()
        or hashlib.sha256((root / name).read_bytes()).hexdigest() != recorded.get(name)
    ]


def main(argv: Sequence[str]) -> int:
    """`python -m meshproxy.native [--current | --record]`: the form this install runs; `--current` exits 1
    unless a compiled build of today's sources is in place, `--record` notes a build just made (both for
    scripts/build)."""
    if "--current" in argv:
        return 0 if build_is_current() else 1
    if "--record" in argv:
        record_build()
        return 0
    for name in compiled_sources(Path(__file__).resolve().parents[1]):
        importlib.import_module(name.removesuffix(".py").replace("/", "."))
    stale = stale_extensions()
    print(f"{form()}: {len(compiled_modules())} compiled modules" + (f"; stale: {stale}" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
