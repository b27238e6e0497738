"""The build: pure Python by default; with `MESHPROXY_MYPYC=1`, the request path compiled by mypyc (issue 15).

Everything else about the package is in pyproject.toml. What is compiled is listed in meshproxy/native.py
(`COMPILED`), which also picks the form at import. The compiled modules are C extensions beside their `.py`
sources (a wheel carries both). A compiled build needs mypy and a C compiler and runs without build
isolation: scripts/build in place (which then records what it compiled, so that an extension older than its
source is noticed instead of silently running old code), or the Dockerfile's builder stage.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _native() -> types.ModuleType:
    """meshproxy/native.py alone (stdlib only), without importing the package it belongs to."""
    spec = importlib.util.spec_from_file_location("_meshproxy_native", ROOT / "meshproxy" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extensions() -> list[object]:
    if os.environ.get("MESHPROXY_MYPYC", "") in ("", "0"):
        return []
    from mypyc.build import mypycify  # only a compiled build needs mypy

    sources = _native().compiled_sources(ROOT)
    # One group, whose shared library sits inside the package (meshproxy/_native__mypyc*.so) so that an
    # editable install finds it like any other module.
    return list(
        mypycify(
            ["--config-file", str(ROOT / "pyproject.toml"), *sources],
            opt_level="3",
            group_name="meshproxy._native",
            multi_file=False,
        )
    )


setup(ext_modules=extensions())
