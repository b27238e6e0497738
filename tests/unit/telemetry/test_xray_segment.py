"""X-Ray segment documents and the daemon datagram (spec §5.4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from meshproxy.config.snapshot import Identity
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.tracing import TraceContext
from meshproxy.telemetry.xray import (
    DAEMON_HEADER,
    SegmentConfig,
    build_segment,
    encode_datagram,
    segment_name,
)

TRACE = 0x6650A1B25F1C2A3B4D5E6F708192A3B4


def context(parent: str | None = "53995c3f42cd8ad8") -> TraceContext:
    return TraceContext("ingress", 0x8A3C60F7D188F8FA, TRACE, parent, TRACE, None, True)


def record(**overrides: Any) -> RequestSummary:
    values: dict[str, Any] = {
        "direction": "ingress",
        "start_time": 1716560306.123,
        "method": "GET",
        "path": "/ping",
        "authority": "serviceb.apps.local",
        "request_headers": {"user-agent": "curl/8.5.0", "x-request-id": "0b7d1c1e"},
        "response_code": 200,
        "bytes_sent": 2,
        "bytes_received": 0,
        "duration_ms": 64,
        "upstream_cluster": "cds_ingress_apps_serviceB_http_9080",
        "upstream_host": "127.0.0.1:9080",
        "downstream_remote_address": "10.0.1.23:51234",
    }
    values.update(overrides)
    return RequestSummary(**values)


def test_segment_fields(node: Identity, segment_rules: Callable[[dict[str, Any]], None]) -> None:
    config = SegmentConfig.from_identity(node, "")
    seg = build_segment(record(), context(), config)
    segment_rules(seg)
    assert seg["name"] == "apps/serviceA"
    assert seg["id"] == "8a3c60f7d188f8fa"
    assert seg["trace_id"] == "1-6650a1b2-5f1c2a3b4d5e6f708192a3b4"
    assert seg["parent_id"] == "53995c3f42cd8ad8"
    assert seg["start_time"] == 1716560306.123
    assert seg["end_time"] == pytest.approx(1716560306.187)
    assert seg["origin"] == "AWS::AppMesh::Proxy"
    assert seg["aws"] == {"app_mesh": {"mesh_name": "apps", "virtual_node_name": "serviceA"}}
    assert seg["http"] == {
        "request": {
            "method": "GET",
            "url": "http://serviceb.apps.local/ping",
            "user_agent": "curl/8.5.0",
            "client_ip": "10.0.1.23",
            "x_forwarded_for": False,
        },
        "response": {"status": 200, "content_length": 2},
    }
    annotations = seg["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["direction"] == "ingress"
    assert annotations["upstream_cluster"] == "cds_ingress_apps_serviceB_http_9080"
    assert annotations["guid_x_request_id"] == "0b7d1c1e"
    assert not {"error", "fault", "throttle"} & set(seg)


def test_root_segment_has_no_parent(node: Identity, segment_rules: Callable[[dict[str, Any]], None]) -> None:
    seg = build_segment(record(), context(parent=None), SegmentConfig.from_identity(node, ""))
    segment_rules(seg)
    assert "parent_id" not in seg


@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (200, set()),
        (404, {"error"}),
        (429, {"error", "throttle"}),
        (503, {"fault"}),
        (0, {"fault"}),  # no response at all (e.g. downstream reset)
    ],
)
def test_error_fault_throttle(
    code: int, flags: set[str], node: Identity, segment_rules: Callable[[dict[str, Any]], None]
) -> None:
    seg = build_segment(record(response_code=code), context(), SegmentConfig.from_identity(node, ""))
    segment_rules(seg)
    assert {"error", "fault", "throttle"} & set(seg) == flags
    response = seg["http"]["response"]  # type: ignore[index]
    assert ("status" in response) is (code != 0)


def test_forwarded_client_and_original_path(
    node: Identity, segment_rules: Callable[[dict[str, Any]], None]
) -> None:
    rec = record(
        request_headers={"x-forwarded-for": "203.0.113.9, 10.0.0.1"},
        path="/v2/ping",
        original_path="/ping",
        downstream_remote_address="[2001:db8::5]:4000",
    )
    seg = build_segment(rec, context(), SegmentConfig.from_identity(node, ""))
    segment_rules(seg)
    request = seg["http"]["request"]  # type: ignore[index]
    # Envoy writes the header as it stands, every address of it (checked against Envoy 1.40)
    assert request["client_ip"] == "203.0.113.9, 10.0.0.1" and request["x_forwarded_for"] is True
    assert request["url"] == "http://serviceb.apps.local/ping"
    rec = record(request_headers={}, downstream_remote_address="[2001:db8::5]:4000")
    request = build_segment(rec, context(), SegmentConfig.from_identity(node, ""))["http"]["request"]  # type: ignore[index]
    assert request["client_ip"] == "2001:db8::5" and request["x_forwarded_for"] is False
    assert request["user_agent"] == "-"  # Envoy's tag value when the request has no User-Agent


def test_long_values_are_truncated_to_the_document_limits(
    node: Identity, segment_rules: Callable[[dict[str, Any]], None]
) -> None:
    rec = record(path="/" + "a" * 1000, request_headers={"user-agent": "u" * 600})
    seg = build_segment(rec, context(), SegmentConfig.from_identity(node, "n" * 300))
    segment_rules(seg)
    assert len(seg["name"]) == 200  # type: ignore[arg-type]


def test_segment_name_rules() -> None:
    assert segment_name("apps/serviceB") == "apps/serviceB"
    assert segment_name("mesh:node @ prod #1 = a+b\\c %&") == "mesh:node @ prod #1 = a+b\\c %&"
    assert segment_name("bad<name>!") == "bad_name__"
    assert segment_name("") == "meshproxy"
    assert segment_name("ünïcode_名前") == "ünïcode_名前"


def test_custom_segment_name(node: Identity) -> None:
    assert SegmentConfig.from_identity(node, "checkout-edge").name == "checkout-edge"


def test_daemon_datagram(node: Identity) -> None:
    seg = build_segment(record(), context(), SegmentConfig.from_identity(node, ""))
    data = encode_datagram(seg)
    assert DAEMON_HEADER == b'{"format":"json","version":1}\n'
    header, body = data.split(b"\n", 1)
    assert json.loads(header) == {"format": "json", "version": 1}
    assert json.loads(body) == seg
    assert b"\n" not in body
