"""OpenTelemetry HTTP semantic-convention attributes (pure part of the OTLP sink)."""

from __future__ import annotations

from typing import Any

from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.otel import span_attributes, traces_endpoint


def record(**overrides: Any) -> RequestSummary:
    values: dict[str, Any] = {
        "direction": "ingress",
        "start_time": 1716560306.0,
        "method": "GET",
        "path": "/orders?id=7",
        "authority": "serviceb.apps.local:9080",
        "request_headers": {"user-agent": "curl/8.5.0"},
        "response_code": 200,
        "downstream_remote_address": "10.0.1.23:51234",
        "upstream_cluster": "cds_ingress_apps_serviceB_http_9080",
    }
    values.update(overrides)
    return RequestSummary(**values)


def test_server_span_attributes() -> None:
    assert span_attributes(record()) == {
        "http.request.method": "GET",
        "url.path": "/orders",
        "url.query": "id=7",
        "url.scheme": "http",
        "server.address": "serviceb.apps.local",
        "server.port": 9080,
        "client.address": "10.0.1.23",
        "network.protocol.version": "1.1",
        "user_agent.original": "curl/8.5.0",
        "http.response.status_code": 200,
        "meshproxy.upstream_cluster": "cds_ingress_apps_serviceB_http_9080",
    }


def test_client_span_attributes_and_errors() -> None:
    attrs = span_attributes(
        record(direction="egress", response_code=404, attempts=3, authority="b.apps.local", protocol="HTTP/2")
    )
    assert attrs["url.full"] == "http://b.apps.local/orders?id=7"
    assert attrs["server.port"] == 80
    assert attrs["http.request.resend_count"] == 2
    assert attrs["error.type"] == "404"  # 4xx is an error on CLIENT spans
    assert attrs["network.protocol.version"] == "2"
    server = span_attributes(record(response_code=404))
    assert "error.type" not in server  # ... but not on SERVER spans
    assert span_attributes(record(response_code=503))["error.type"] == "503"


def test_no_response_and_unknown_method() -> None:
    attrs = span_attributes(record(response_code=0, response_flags="UF", method="PURGE"))
    assert attrs["error.type"] == "UF"
    assert attrs["meshproxy.response_flags"] == "UF"
    assert attrs["http.request.method"] == "_OTHER"
    assert attrs["http.request.method_original"] == "PURGE"
    assert "http.response.status_code" not in attrs


def test_ipv6_authority_and_peer() -> None:
    attrs = span_attributes(
        record(authority="[2001:db8::1]:8443", downstream_remote_address="[2001:db8::2]:5")
    )
    assert attrs["server.address"] == "2001:db8::1" and attrs["server.port"] == 8443
    assert attrs["client.address"] == "2001:db8::2"


def test_traces_endpoint() -> None:
    assert traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
