"""Telemetry through real proxies (issue 4): a request crosses two meshproxy hops (front's egress, then
blue's ingress) and yields one X-Ray trace; DogStatsD datagrams and the access log arrive at real receivers;
a real Prometheus server scrapes the proxy's /stats/prometheus."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, free_ports, wait_for
from .resources import mesh, node_arn, route, service_via_router, virtual_node, virtual_router

COLOR = "color.demo.local"
BLUE_ADDRESS = "127.0.0.2"  # blue's proxy listens here: front's egress reaches blue through blue's ingress
PROMETHEUS = shutil.which("prometheus")


@dataclass
class UdpReceiver:
    """A UDP socket on loopback collecting datagrams in a thread (bounded by the test's lifetime)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    datagrams: list[bytes] = field(default_factory=list)
    stopped: bool = False

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self.stopped:
            try:
                self.datagrams.append(self.sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@dataclass
class TwoHops:
    front: MeshProxy
    blue_proxy: MeshProxy
    blue: ColourApp
    xray: UdpReceiver
    statsd: UdpReceiver
    access_log: Path


@pytest.fixture(scope="module")
def two_hops(app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHops]:
    blue = app_loop.colour_app("blue-t")
    xray, statsd = UdpReceiver(), UdpReceiver()
    workdir = tmp_path_factory.mktemp("telemetry")
    access_log = workdir / "blue-access.log"
    blue_node = virtual_node("blue", blue.port, hostname=BLUE_ADDRESS)
    blue_node["virtualNode"]["spec"]["logging"] = {"accessLog": {"file": {"path": str(access_log)}}}
    resources = [
        mesh(),
        virtual_node("front", 18998, backends=[COLOR]),
        blue_node,
        virtual_router("color-router"),
        route("color-router", "all", targets=[("blue", 100)]),
        service_via_router(COLOR, "color-router"),
    ]
    telemetry_env = {
        "ENABLE_ENVOY_XRAY_TRACING": "1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{xray.port}",
        "XRAY_SAMPLING_RATE": "1.00",
        "ENABLE_ENVOY_DOG_STATSD": "1",
        "STATSD_PORT": str(statsd.port),
        "ENVOY_STATS_FLUSH_INTERVAL": "200ms",
        "ENABLE_ENVOY_STATS_TAGS": "1",
        "APPMESH_METRIC_EXTENSION_VERSION": "1",
    }
    blue_proxy = MeshProxy(
        resources,
        node_arn("blue"),
        workdir / "blue",
        env={
            **telemetry_env,
            "MESHPROXY_LISTEN_ADDRESS": BLUE_ADDRESS,
            "APPMESH_ENVOY_INGRESS_PORT": str(blue.port),
        },
    )
    front = MeshProxy(resources, node_arn("front"), workdir / "front", env=telemetry_env)
    try:
        blue_proxy.start()
        front.start()
        yield TwoHops(front, blue_proxy, blue, xray, statsd, access_log)
    finally:
        front.stop()
        blue_proxy.stop()
        xray.close()
        statsd.close()


def _segments(receiver: UdpReceiver) -> list[dict[str, Any]]:
    out = []
    for datagram in list(receiver.datagrams):
        header, _, body = datagram.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        out.append(json.loads(body))
    return out


def test_a_request_through_two_proxies_is_one_xray_trace(
    two_hops: TwoHops, segment_rules: Callable[[dict[str, Any]], None]
) -> None:
    reply = two_hops.front.egress(COLOR, "/trace-me")
    assert reply.status == 200, reply
    seen = two_hops.blue.last
    assert seen.path == "/trace-me"
    root = re.search(r"Root=(1-[0-9a-f]{8}-[0-9a-f]{24})", seen.headers["x-amzn-trace-id"])
    assert root is not None, seen.headers
    trace_id = root.group(1)

    def both_segments() -> bool:
        return {s["name"] for s in _segments(two_hops.xray) if s["trace_id"] == trace_id} >= {
            "demo/front",
            "demo/blue",
        }

    assert wait_for(both_segments, 10.0), _segments(two_hops.xray)
    segments = {s["name"]: s for s in _segments(two_hops.xray) if s["trace_id"] == trace_id}
    front, blue = segments["demo/front"], segments["demo/blue"]
    assert blue["parent_id"] == front["id"]  # joined to the caller's trace
    assert "parent_id" not in front  # the first hop started the trace
    for segment in (front, blue):
        segment_rules(segment)  # the X-Ray segment document rules
        assert segment["origin"] == "AWS::AppMesh::Proxy"
        assert segment["http"]["response"]["status"] == 200
    assert front["aws"]["app_mesh"] == {"mesh_name": "demo", "virtual_node_name": "front"}
    assert blue["annotations"]["direction"] == "ingress" and front["annotations"]["direction"] == "egress"


def test_dogstatsd_and_access_log_reach_their_receivers(two_hops: TwoHops) -> None:
    for _ in range(3):
        assert two_hops.front.egress(COLOR, "/counted").status == 200

    def counted() -> bool:
        lines = b"\n".join(two_hops.statsd.datagrams).decode().splitlines()
        return any(
            line.startswith("envoy.cluster.upstream_rq_total:")
            and "cluster_name:cds_egress_demo_blue_http" in line
            for line in lines
        )

    assert wait_for(counted, 10.0), two_hops.statsd.datagrams[-3:]
    lines = b"\n".join(two_hops.statsd.datagrams).decode().splitlines()
    tagged = [line for line in lines if line.startswith("envoy.cluster.upstream_rq_total:")]
    assert any("envoy.cluster_name:cds_egress_demo_blue_http" in line for line in tagged), tagged
    assert any("appmesh.mesh:demo" in line for line in tagged), tagged
    assert all(len(d) <= 1432 for d in two_hops.statsd.datagrams)

    assert wait_for(
        lambda: two_hops.access_log.exists() and "/counted" in two_hops.access_log.read_text(), 10.0
    )
    line = next(ln for ln in two_hops.access_log.read_text().splitlines() if "/counted" in ln)
    fields = re.match(
        r'\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
        r"(?P<code>\d+) (?P<flags>\S+) "
        r'(?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<upstream_time>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" '
        r'"(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)"',
        line,
    )
    assert fields is not None, line  # Envoy's default format (spec §5.5)
    assert fields["method"] == "GET" and fields["code"] == "200" and fields["flags"] == "-"
    assert fields["upstream_host"] == f"127.0.0.1:{two_hops.blue.port}"


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus binary is not installed (scripts/setup)")
def test_prometheus_scrapes_the_proxy(two_hops: TwoHops, tmp_path: Path) -> None:
    assert two_hops.front.egress(COLOR, "/scraped").status == 200
    (web,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: meshproxy\n"
        "    metrics_path: /stats/prometheus\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{two_hops.front.admin_port}']\n"
    )
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = urllib.parse.urlencode(
            {"query": 'envoy_cluster_upstream_rq_total{appmesh_virtual_node="front"}'}
        )
        result: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not result:
            assert process.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?{query}", timeout=2) as r:
                    result = json.load(r)["data"]["result"]
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.25)
        assert result, "Prometheus never stored envoy_cluster_upstream_rq_total from the proxy"
        blue = [
            r for r in result if r["metric"]["envoy_cluster_name"].startswith("cds_egress_demo_blue_http")
        ]
        assert blue and int(blue[0]["value"][1]) >= 1
        assert blue[0]["metric"]["appmesh_mesh"] == "demo"
    finally:
        process.terminate()
        process.wait(10)
