"""What a running proxy keeps imported (issue 15: idle RSS per worker <= 35 MiB).

Every module a worker imports stays resident for its whole life, in every worker. Some standard-library
modules come in through a side door and cost more than the job they do: `importlib.abc` (importlib.resources,
tempfile, shutil, bz2, lzma: ~0.7 MiB), argparse's help formatter asking shutil for the terminal width
(~0.6 MiB), pickle for the multi-worker control channel (~0.3 MiB). This pins that the modules a worker loads
to serve (the same imports and start-up calls `meshproxy run` makes) leave them out, in the form under test.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Imported by a single-process proxy only through a side door; none of them serves a request.
NOT_RESIDENT = ("importlib.abc", "importlib.resources", "tempfile", "shutil", "bz2", "lzma", "pickle")

_PROBE = """
import json, sys
from meshproxy import cli, server, dataplane, workers
from meshproxy.admin import server as admin_server
from meshproxy.config import load
from meshproxy.listeners import listener
from meshproxy.net import certificates, tls_contexts
server.parse_args(["--config", "mesh.json"])
import os
from meshproxy.interception.guard import check_not_intercepted
check_not_intercepted(os.getuid())
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_start() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(json.loads(out))


def test_a_worker_does_not_keep_side_door_imports() -> None:
    modules = _modules_after_start()
    assert "meshproxy.dataplane" in modules  # the probe imported what a worker runs
    assert not modules & set(NOT_RESIDENT), sorted(modules & set(NOT_RESIDENT))


def test_the_probe_sees_a_side_door_import() -> None:
    """The check can fail: the same probe after `import tempfile` reports it."""
    out = subprocess.run(
        [sys.executable, "-c", "import tempfile\n" + _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "tempfile" in json.loads(out)
