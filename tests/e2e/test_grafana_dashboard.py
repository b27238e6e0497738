"""deploy/grafana/meshproxy-dashboard.json (issue 16): every panel's PromQL, run against a real Prometheus
(Debian's `prometheus`) scraping a real proxy under traffic, must return data.

Bounded: the traffic is at most TRAFFIC_ROUNDS rounds of four requests; Prometheus scrapes every second; the
whole wait for data gives up after DATA_TIMEOUT_S.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apps import AppLoop, ColourApp
from .harness import REPO_ROOT, MeshProxy, free_ports
from .resources import mesh, node_arn, service_via_node, virtual_node

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "meshproxy-dashboard.json"
BLUE, DEAD = "blue.demo.local", "dead.demo.local"
TRAFFIC_ROUNDS = 40
DATA_TIMEOUT_S = 60.0

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus binary is not installed")


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with Grafana's variables as a dashboard would fill them."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
            assert "$" not in expr, expr  # no variable the test does not know about
            queries.append((panel["title"], expr))
    return queries


def query(api: str, promql: str) -> list[dict[str, Any]]:
    url = api + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        document = json.load(response)
    assert document["status"] == "success", document
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus whose scrape config the test writes to the returned path (reloaded on start)."""
    assert PROMETHEUS is not None
    (web,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n")
    yield f"http://127.0.0.1:{web}", config


def start_prometheus(config: Path, api: str, data: Path) -> subprocess.Popen[bytes]:
    assert PROMETHEUS is not None
    return subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address={api.removeprefix('http://')}", "--log.level=warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_every_panel_query_returns_data_for_a_proxy_under_traffic(
    app_loop: AppLoop, prometheus: tuple[str, Path], tmp_path: Path
) -> None:
    api, config = prometheus
    blue: ColourApp = app_loop.colour_app("blue")
    (dead_port,) = free_ports(1)  # nothing listens: 503 UF
    resources = [
        mesh(),
        virtual_node("blue", blue.port),
        virtual_node("dead", dead_port),
        virtual_node("front", 18080, backends=[BLUE, DEAD]),
        service_via_node(BLUE, "blue"),
        service_via_node(DEAD, "dead"),
    ]
    proxy = MeshProxy(resources, node_arn("front"), tmp_path / "proxy", env={"ENABLE_ENVOY_STATS_TAGS": "1"})
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: meshproxy\n    metrics_path: /stats/prometheus\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{proxy.admin_port}']\n"
    )
    server = start_prometheus(config, api, tmp_path / "data")
    try:
        proxy.start()
        deadline = time.monotonic() + DATA_TIMEOUT_S
        # traffic after Prometheus's first sample of the proxy, so that the rates see counters grow
        while not _answers(api, "envoy_server_live"):
            assert time.monotonic() < deadline and server.poll() is None, "prometheus never scraped the proxy"
            time.sleep(0.2)
        for round_ in range(TRAFFIC_ROUNDS):  # spread over a few scrapes, so rates have samples
            assert proxy.egress(BLUE, f"/ok/{round_}").status == 200
            assert proxy.egress(BLUE, "/status/503").status == 503  # retried twice (App Mesh's default)
            assert proxy.egress(DEAD, "/").status == 503  # connect failure: UF
            assert proxy.egress("nobody.demo.local", "/").status == 404  # NR
            time.sleep(0.05)
        missing: list[str] = []
        while time.monotonic() < deadline:
            assert server.poll() is None, "prometheus exited"
            try:
                if len(query(api, "count_over_time(envoy_server_live[1m])")) and _scrapes(api) >= 4:
                    missing = [f"{title}: {expr}" for title, expr in panel_queries() if not query(api, expr)]
                    if not missing:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        assert not missing, "panels without data:\n" + "\n".join(missing)
        rate = query(api, panel_queries()[0][1])
        assert any(float(r["value"][1]) > 0 for r in rate), rate
        causes = {
            r["metric"].get("envoy_cluster_name")
            for r in query(api, "envoy_cluster_upstream_cx_connect_fail > 0")
        }
        assert causes == {"cds_egress_demo_dead_http_" + str(dead_port)}
        retries = query(api, 'envoy_cluster_upstream_rq_retry{envoy_cluster_name=~"cds_egress_demo_blue.*"}')
        assert retries and float(retries[0]["value"][1]) > 0  # the last scrape may predate the last rounds
        assert query(api, "envoy_server_state")[0]["metric"]["appmesh_virtual_node"] == "front"
    finally:
        proxy.stop()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def _answers(api: str, promql: str) -> bool:
    try:
        return bool(query(api, promql))
    except (urllib.error.URLError, ConnectionError):
        return False


def _scrapes(api: str) -> int:
    result = query(api, "count_over_time(envoy_server_live[1m])")
    return int(float(result[0]["value"][1])) if result else 0


def test_the_dashboard_is_grafana_json_on_envoy_stat_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    names = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            names |= set(re.findall(r"\benvoy_[a-z_]+", target["expr"]))
    wanted = {"envoy_http_downstream_rq_total", "envoy_cluster_upstream_rq_retry", "envoy_server_state",
              "envoy_cluster_upstream_rq_time_bucket", "envoy_cluster_membership_healthy",
              "envoy_cluster_upstream_cx_connect_fail"}  # fmt: skip
    assert wanted <= names
