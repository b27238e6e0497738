"""A real Prometheus server (Debian's `prometheus`) scrapes `render_prometheus` output from a local server.

Bounded: scrape_interval 1s, storage in a temp dir, the whole test gives up after 30 s (it normally takes a
few seconds, most of it Prometheus starting).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshproxy.settings import Settings
from meshproxy.telemetry.hub import PROMETHEUS_CONTENT_TYPE, Telemetry
from meshproxy.telemetry.stats import StatsStore

PROMETHEUS = shutil.which("prometheus")
CLUSTER = "cds_egress_apps_serviceB_http_9080"

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus binary is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stats_server(make_settings: Callable[..., Settings]) -> Iterator[tuple[int, StatsStore]]:
    """An HTTP server answering GET /stats/prometheus with a fresh render of a live store."""
    store = StatsStore()
    telemetry = Telemetry(make_settings(stats_tags=True), store)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/stats/prometheus":
                self.send_error(404)
                return
            body = telemetry.render_prometheus()
            self.send_response(200)
            self.send_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def query(api: str, promql: str) -> list[dict[str, Any]]:
    url = api + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=2) as response:
        doc = json.load(response)
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def test_prometheus_scrapes_and_queries_our_counters(
    stats_server: tuple[int, StatsStore], tmp_path: Path
) -> None:
    port, store = stats_server
    cluster = store.cluster(CLUSTER)
    cluster.upstream_rq_total = 3
    for status in (200, 200, 503):
        cluster.count_response(status)
    for ms in (3, 12, 40):
        cluster.upstream_rq_time.record(ms)

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: meshproxy\n"
        "    metrics_path: /stats/prometheus\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    web = free_port()
    api = f"http://127.0.0.1:{web}"
    assert PROMETHEUS is not None
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        selector = f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{CLUSTER}"}}'
        deadline = time.monotonic() + 30
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                result = query(api, selector)
            except (urllib.error.URLError, ConnectionError):
                result = []
            if result:
                break
            time.sleep(0.25)
        assert result, "Prometheus never stored the counter"
        assert result[0]["value"][1] == "3"
        assert result[0]["metric"]["appmesh_mesh"] == "apps"
        assert result[0]["metric"]["appmesh_virtual_node"] == "serviceA"

        with urllib.request.urlopen(api + "/api/v1/targets", timeout=2) as response:
            targets = json.load(response)["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        assert targets[0]["lastError"] == ""

        by_code = query(api, f'envoy_cluster_upstream_rq{{envoy_cluster_name="{CLUSTER}"}}')
        assert {r["metric"]["envoy_response_code"]: r["value"][1] for r in by_code} == {
            "200": "2",
            "503": "1",
        }
        classes = query(api, "envoy_cluster_upstream_rq_xx")
        assert {r["metric"]["envoy_response_code_class"]: r["value"][1] for r in classes} == {
            "2": "2",
            "5": "1",
        }
        median = query(api, "histogram_quantile(0.5, envoy_cluster_upstream_rq_time_bucket)")
        assert 10 <= float(median[0]["value"][1]) <= 25

        # Prometheus read the TYPE lines: the per-code counter is a counter, not untyped.
        url = api + "/api/v1/metadata?" + urllib.parse.urlencode({"metric": "envoy_cluster_upstream_rq"})
        with urllib.request.urlopen(url, timeout=2) as response:
            metadata = json.load(response)["data"]
        assert metadata["envoy_cluster_upstream_rq"][0]["type"] == "counter"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
