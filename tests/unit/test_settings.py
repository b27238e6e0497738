"""Environment-variable parsing (spec §1.1-1.7): every rule, and that errors name the variable."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from meshproxy.config.snapshot import ENVOY_DEFAULT_LIMITS, ConnectionPoolLimits, ResourceKind, RetryBudget
from meshproxy.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_go_duration,
    parse_identity,
)

ARN = "arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/serviceB"
BASE = {"APPMESH_RESOURCE_ARN": ARN}


def settings(**extra: str) -> Settings:
    return load_settings({**BASE, **extra})


def fatal(**extra: str) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, **extra})
    return info.value


# --- identity (spec §1.2) ---------------------------------------------------------------------------------


def test_identity_from_full_arn() -> None:
    identity = parse_identity({"APPMESH_RESOURCE_ARN": ARN})
    assert identity.node_id == ARN
    assert (identity.mesh, identity.kind, identity.name) == ("apps", ResourceKind.VIRTUAL_NODE, "serviceB")
    assert identity.node_cluster == ARN


def test_identity_from_short_form_and_gateway() -> None:
    identity = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/apps/virtualGateway/ingress-gw"})
    assert (identity.mesh, identity.kind, identity.name) == (
        "apps",
        ResourceKind.VIRTUAL_GATEWAY,
        "ingress-gw",
    )


def test_identity_value_is_trimmed_and_kept_verbatim() -> None:
    identity = parse_identity({"APPMESH_RESOURCE_ARN": f"  {ARN}\n"})
    assert identity.node_id == ARN


def test_identity_fallback_order() -> None:
    legacy = {"APPMESH_VIRTUAL_NODE_NAME": "mesh/m3/virtualNode/n3"}
    assert parse_identity(legacy).mesh == "m3"
    both = {**legacy, "APPMESH_RESOURCE_NAME": "mesh/m2/virtualNode/n2"}
    assert parse_identity(both).mesh == "m2"
    # an empty value counts as unset, so the fallback is used
    assert parse_identity({**both, "APPMESH_RESOURCE_ARN": "   "}).mesh == "m2"
    assert parse_identity({**both, "APPMESH_RESOURCE_ARN": ARN}).mesh == "apps"


def test_identity_missing() -> None:
    with pytest.raises(SettingsError) as info:
        parse_identity({"APPMESH_RESOURCE_ARN": ""})
    assert info.value.variable == "APPMESH_RESOURCE_ARN"
    assert info.value.message == "APPMESH_RESOURCE_ARN environment variable must be set."


@pytest.mark.parametrize(
    "value", ["mesh/apps/virtualNode", "serviceB", "arn:aws:appmesh:us-west-2:1:mesh/apps"]
)
def test_identity_too_few_parts(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_identity({"APPMESH_RESOURCE_ARN": value})
    assert info.value.variable == "APPMESH_RESOURCE_ARN"
    assert value in str(info.value)


def test_identity_unknown_type_names_the_variable_used() -> None:
    with pytest.raises(SettingsError) as info:
        parse_identity({"APPMESH_VIRTUAL_NODE_NAME": "mesh/apps/virtualRouter/r"})
    assert info.value.variable == "APPMESH_VIRTUAL_NODE_NAME"
    assert "virtualRouter" in info.value.message
    assert "virtualNode or virtualGateway" in info.value.message


def test_identity_node_cluster_overrides() -> None:
    env = {"APPMESH_RESOURCE_ARN": ARN, "APPMESH_VIRTUAL_NODE_CLUSTER": "legacy"}
    assert parse_identity(env).node_cluster == "legacy"
    assert parse_identity({**env, "APPMESH_RESOURCE_CLUSTER": "new"}).node_cluster == "new"


def test_identity_shared_mesh_owner_suffix() -> None:
    identity = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/apps@111122223333/virtualNode/b"})
    assert identity.mesh == "apps@111122223333"
    assert identity.mesh_name == "apps"
    assert load_settings({"APPMESH_RESOURCE_ARN": identity.node_id}).xray_segment_name == "apps/b"


# --- defaults ---------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert s.config_source is None
    assert (s.ingress_port, s.egress_port, s.admin_port) == (15000, 15001, 9901)
    assert s.listen_address == "0.0.0.0"
    # per user and admin port: proxies sharing /tmp write their own, a root-owned file never blocks UID 1337
    assert s.admin_access_log == f"/tmp/envoy_admin_access_{os.getuid()}_9901.log"
    assert settings(ENVOY_ADMIN_ACCESS_PORT="9902").admin_access_log.endswith("_9902.log")
    assert settings(ENVOY_ADMIN_ACCESS_LOG_FILE="/tmp/envoy_admin_access.log").admin_access_log == (
        "/tmp/envoy_admin_access.log"
    )
    assert (s.log_level, s.concurrency, s.drain_wait_s, s.http1_parser) == ("info", 1, 20, "httptools")
    assert (s.stats_tags, s.dogstatsd, s.xray) == (False, False, False)
    assert s.stats_flush_interval_s == 5.0
    assert (s.statsd_address, s.statsd_port, s.statsd_socket_path) == ("127.0.0.1", 8125, None)
    assert (s.xray_daemon_address, s.xray_daemon_port, s.xray_sampling_rate) == ("127.0.0.1", 2000, 0.05)
    assert s.xray_segment_name == "apps/serviceB"
    assert s.otel_endpoint is None
    assert s.ignored_uid == 1337


def test_config_source_flag_wins_over_env() -> None:
    assert settings(MESHPROXY_CONFIG="/etc/mesh.yaml").config_source == "/etc/mesh.yaml"
    s = load_settings({**BASE, "MESHPROXY_CONFIG": "/etc/mesh.yaml"}, config_source="/tmp/other.json")
    assert s.config_source == "/tmp/other.json"


# --- booleans (Go strconv.ParseBool) ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "t", "T", "true", "TRUE", "True", " true "])
def test_bool_true(value: str) -> None:
    assert settings(ENABLE_ENVOY_STATS_TAGS=value).stats_tags is True


@pytest.mark.parametrize("value", ["0", "f", "F", "false", "FALSE", "False", ""])
def test_bool_false(value: str) -> None:
    assert settings(ENABLE_ENVOY_DOG_STATSD=value).dogstatsd is False


@pytest.mark.parametrize("value", ["yes", "on", "tRuE", "2", "enabled"])
def test_bool_invalid_is_fatal(value: str) -> None:
    error = fatal(ENABLE_ENVOY_STATS_TAGS=value)
    assert error.variable == "ENABLE_ENVOY_STATS_TAGS"
    assert "must be a boolean value" in error.message
    assert str(error).startswith("ENABLE_ENVOY_STATS_TAGS: ")


def test_admin_ipv6_bool() -> None:
    assert settings(ENVOY_ADMIN_ACCESS_ENABLE_IPV6="1").admin_ipv6 is True
    assert fatal(ENVOY_ADMIN_ACCESS_ENABLE_IPV6="maybe").variable == "ENVOY_ADMIN_ACCESS_ENABLE_IPV6"


# --- integers and ports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "1.5", "1_000", "0x10", "12 34"])
def test_int_invalid_is_fatal(value: str) -> None:
    error = fatal(STATSD_PORT=value)
    assert error.variable == "STATSD_PORT"
    assert "integer" in error.message


@pytest.mark.parametrize(
    "variable",
    [
        "APPMESH_ENVOY_INGRESS_PORT",
        "APPMESH_ENVOY_EGRESS_PORT",
        "ENVOY_ADMIN_ACCESS_PORT",
        "STATSD_PORT",
        "XRAY_DAEMON_PORT",
    ],
)
@pytest.mark.parametrize("value", ["0", "65536", "-1"])
def test_port_out_of_range(variable: str, value: str) -> None:
    error = fatal(**{variable: value})
    assert error.variable == variable
    assert "1..65535" in error.message


def test_ports_parsed() -> None:
    s = settings(
        APPMESH_ENVOY_INGRESS_PORT=" 16000 ",
        APPMESH_ENVOY_EGRESS_PORT="+16001",
        ENVOY_ADMIN_ACCESS_PORT="65535",
        STATSD_PORT="1",
    )
    assert (s.ingress_port, s.egress_port, s.admin_port, s.statsd_port) == (16000, 16001, 65535, 1)


@pytest.mark.parametrize(("value", "expected"), [("", 1), ("0", 1), ("-1", 1), ("-7", 1), ("1", 1), ("4", 4)])
def test_concurrency(value: str, expected: int) -> None:
    assert settings(ENVOY_CONCURRENCY=value).concurrency == expected


def test_concurrency_non_integer() -> None:
    assert fatal(ENVOY_CONCURRENCY="two").variable == "ENVOY_CONCURRENCY"


def test_ignored_uid() -> None:
    assert settings(APPMESH_IGNORE_UID="1338").ignored_uid == 1338
    assert fatal(APPMESH_IGNORE_UID="-5").variable == "APPMESH_IGNORE_UID"


def test_initial_fetch_timeout_and_refresh() -> None:
    s = settings(ENVOY_INITIAL_FETCH_TIMEOUT="30", MESHPROXY_CONFIG_REFRESH_S="0.5")
    assert (s.initial_fetch_timeout_s, s.config_refresh_s) == (30.0, 0.5)
    assert fatal(ENVOY_INITIAL_FETCH_TIMEOUT="-1").variable == "ENVOY_INITIAL_FETCH_TIMEOUT"
    assert fatal(ENVOY_INITIAL_FETCH_TIMEOUT="5s").variable == "ENVOY_INITIAL_FETCH_TIMEOUT"
    assert fatal(MESHPROXY_CONFIG_REFRESH_S="soon").variable == "MESHPROXY_CONFIG_REFRESH_S"
    assert fatal(MESHPROXY_CONFIG_REFRESH_S="-2").variable == "MESHPROXY_CONFIG_REFRESH_S"


def test_metric_extension_version() -> None:
    assert settings(APPMESH_METRIC_EXTENSION_VERSION="1").metric_extension_version == 1
    assert fatal(APPMESH_METRIC_EXTENSION_VERSION="v1").variable == "APPMESH_METRIC_EXTENSION_VERSION"


def test_listen_address_must_be_ip() -> None:
    assert settings(MESHPROXY_LISTEN_ADDRESS="::").listen_address == "::"
    error = fatal(MESHPROXY_LISTEN_ADDRESS="localhost")
    assert error.variable == "MESHPROXY_LISTEN_ADDRESS"


# --- drain wait (clamped with a warning, as the agent does) -------------------------------------------------


@pytest.mark.parametrize("value", ["5", "20", "110"])
def test_drain_wait_in_range(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshproxy.settings"):
        assert settings(LISTENER_DRAIN_WAIT_TIME_S=value).drain_wait_s == int(value)
    assert not caplog.records


@pytest.mark.parametrize("value", ["4", "111", "0", "-3"])
def test_drain_wait_out_of_range_warns_and_uses_default(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshproxy.settings"):
        assert settings(LISTENER_DRAIN_WAIT_TIME_S=value).drain_wait_s == 20
    assert any("LISTENER_DRAIN_WAIT_TIME_S" in r.getMessage() for r in caplog.records)


def test_drain_wait_non_integer_is_fatal() -> None:
    assert fatal(LISTENER_DRAIN_WAIT_TIME_S="20s").variable == "LISTENER_DRAIN_WAIT_TIME_S"


# --- log level --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("trace", "trace"),
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warn"),
        ("warning", "warn"),
        ("error", "error"),
        ("critical", "critical"),
        ("off", "off"),
        ("DEBUG", "debug"),
    ],
)
def test_log_level_accepted(value: str, expected: str) -> None:
    assert settings(ENVOY_LOG_LEVEL=value).log_level == expected


def test_log_level_unknown_warns_and_uses_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshproxy.settings"):
        assert settings(ENVOY_LOG_LEVEL="verbose").log_level == "info"
    assert any("ENVOY_LOG_LEVEL" in r.getMessage() and "verbose" in r.getMessage() for r in caplog.records)


# --- Go durations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5000ms", 5.0),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("0", 0.0),
        ("-1s", -1.0),
        (".5s", 0.5),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "10 s", "s", "1d", "1.s.", "ms", "1s5"])
def test_parse_go_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_stats_flush_interval() -> None:
    assert settings(ENVOY_STATS_FLUSH_INTERVAL="10s").stats_flush_interval_s == 10.0
    assert settings(ENVOY_STATS_FLUSH_INTERVAL="5000ms").stats_flush_interval_s == 5.0
    assert settings(ENVOY_STATS_FLUSH_INTERVAL="1m30s").stats_flush_interval_s == 90.0


@pytest.mark.parametrize("value", ["5", "ten seconds", "0", "-5s", "300s", "1h"])
def test_stats_flush_interval_bad_is_fatal(value: str) -> None:
    error = fatal(ENVOY_STATS_FLUSH_INTERVAL=value)
    assert error.variable == "ENVOY_STATS_FLUSH_INTERVAL"


# --- X-Ray ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("1", 1.0), ("1.00", 1.0), ("0.5", 0.5), ("0.125", 0.13), ("0.014", 0.01), ("0.105", 0.11)],
)
def test_sampling_rate_rounded(value: str, expected: float) -> None:
    assert settings(XRAY_SAMPLING_RATE=value).xray_sampling_rate == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "lots", "nan", "inf", "5%"])
def test_sampling_rate_invalid_is_fatal(value: str) -> None:
    assert fatal(XRAY_SAMPLING_RATE=value).variable == "XRAY_SAMPLING_RATE"


def test_xray_daemon_address_forms() -> None:
    s = settings(AWS_XRAY_DAEMON_ADDRESS="10.0.0.5", XRAY_DAEMON_PORT="3000")
    assert (s.xray_daemon_address, s.xray_daemon_port) == ("10.0.0.5", 3000)
    s = settings(AWS_XRAY_DAEMON_ADDRESS="10.0.0.5:2500", XRAY_DAEMON_PORT="3000")
    assert (s.xray_daemon_address, s.xray_daemon_port) == ("10.0.0.5", 2500)
    s = settings(AWS_XRAY_DAEMON_ADDRESS="::1")
    assert (s.xray_daemon_address, s.xray_daemon_port) == ("::1", 2000)
    s = settings(AWS_XRAY_DAEMON_ADDRESS="[fd00::2]:2001")
    assert (s.xray_daemon_address, s.xray_daemon_port) == ("fd00::2", 2001)


@pytest.mark.parametrize(
    "value", ["xray.local", "xray.local:2000", "10.0.0.5:99999", "10.0.0.5:abc", "1.2.3:4"]
)
def test_xray_daemon_address_invalid(value: str) -> None:
    error = fatal(AWS_XRAY_DAEMON_ADDRESS=value)
    assert error.variable == "AWS_XRAY_DAEMON_ADDRESS"


def test_xray_enabled_and_segment_name() -> None:
    s = settings(ENABLE_ENVOY_XRAY_TRACING="1")
    assert s.xray is True
    assert s.xray_segment_name == "apps/serviceB"
    assert settings(XRAY_SEGMENT_NAME="front-door").xray_segment_name == "front-door"


def test_sampling_rule_manifest(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"version": 2, "default": {"fixed_target": 1, "rate": 0.1}, "rules": []}))
    assert settings(XRAY_SAMPLING_RULE_MANIFEST=str(good)).xray_sampling_rule_manifest == str(good)
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"version": 1, "default": {"fixed_target": 1, "rate": 0.1}, "rules": []}))
    assert "version" in fatal(XRAY_SAMPLING_RULE_MANIFEST=str(v1)).message
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    assert fatal(XRAY_SAMPLING_RULE_MANIFEST=str(broken)).variable == "XRAY_SAMPLING_RULE_MANIFEST"
    missing = fatal(XRAY_SAMPLING_RULE_MANIFEST=str(tmp_path / "absent.json"))
    assert missing.variable == "XRAY_SAMPLING_RULE_MANIFEST"
    assert "cannot read" in missing.message


# --- tracing drivers --------------------------------------------------------------------------------------


def test_two_tracers_is_fatal() -> None:
    error = fatal(ENABLE_ENVOY_XRAY_TRACING="1", ENABLE_ENVOY_JAEGER_TRACING="true")
    assert error.variable == "ENABLE_ENVOY_JAEGER_TRACING"
    assert "ENABLE_ENVOY_XRAY_TRACING" in error.message
    assert "only one tracing driver" in error.message


@pytest.mark.parametrize("variable", ["ENABLE_ENVOY_DATADOG_TRACING", "ENABLE_ENVOY_JAEGER_TRACING"])
def test_unsupported_tracer_is_fatal(variable: str) -> None:
    error = fatal(**{variable: "1"})
    assert error.variable == variable
    assert error.message == "not supported by meshproxy; use X-Ray or OTEL_EXPORTER_OTLP_ENDPOINT"


def test_disabled_tracers_are_fine() -> None:
    s = settings(ENABLE_ENVOY_DATADOG_TRACING="0", ENABLE_ENVOY_JAEGER_TRACING="false")
    assert s.xray is False


def test_otel_endpoint() -> None:
    assert (
        settings(OTEL_EXPORTER_OTLP_ENDPOINT=" http://127.0.0.1:4318 ").otel_endpoint
        == "http://127.0.0.1:4318"
    )


# --- statsd, parser choice --------------------------------------------------------------------------------


def test_statsd_settings() -> None:
    s = settings(
        ENABLE_ENVOY_DOG_STATSD="1",
        STATSD_ADDRESS="10.1.2.3",
        STATSD_PORT="9125",
        STATSD_SOCKET_PATH="/var/run/dsd.sock",
    )
    assert (s.dogstatsd, s.statsd_address, s.statsd_port) == (True, "10.1.2.3", 9125)
    assert s.statsd_socket_path == "/var/run/dsd.sock"


@pytest.mark.parametrize("value", ["httptools", "h11"])
def test_http1_parser(value: str) -> None:
    assert settings(MESHPROXY_HTTP1_PARSER=value).http1_parser == value


def test_http1_parser_invalid() -> None:
    error = fatal(MESHPROXY_HTTP1_PARSER="llhttp")
    assert error.variable == "MESHPROXY_HTTP1_PARSER"
    assert "httptools, h11" in error.message


def test_http2_codec_is_a_named_choice() -> None:
    from meshproxy.settings import SettingsError, load_settings

    env = {"APPMESH_RESOURCE_ARN": "mesh/m/virtualNode/n"}
    assert load_settings(env).http2_codec == "lean"
    assert load_settings({**env, "MESHPROXY_HTTP2_CODEC": "h2"}).http2_codec == "h2"
    with pytest.raises(SettingsError) as raised:
        load_settings({**env, "MESHPROXY_HTTP2_CODEC": "nghttp2"})
    assert raised.value.variable == "MESHPROXY_HTTP2_CODEC"


def test_request_head_limits_default_to_envoys_and_are_validated() -> None:
    env = {"APPMESH_RESOURCE_ARN": "mesh/m/virtualNode/n"}
    settings = load_settings(env)
    assert (settings.max_request_headers_kb, settings.max_request_headers_count) == (60, 100)
    tuned = load_settings(
        {**env, "MESHPROXY_MAX_REQUEST_HEADERS_KB": " 96 ", "MESHPROXY_MAX_REQUEST_HEADERS_COUNT": "200"}
    )
    assert (tuned.max_request_headers_kb, tuned.max_request_headers_count) == (96, 200)
    for variable, value in (
        ("MESHPROXY_MAX_REQUEST_HEADERS_KB", "0"),
        ("MESHPROXY_MAX_REQUEST_HEADERS_KB", "8193"),
        ("MESHPROXY_MAX_REQUEST_HEADERS_KB", "60k"),
        ("MESHPROXY_MAX_REQUEST_HEADERS_COUNT", "0"),
        ("MESHPROXY_MAX_REQUEST_HEADERS_COUNT", "-5"),
        ("MESHPROXY_MAX_REQUEST_HEADERS_COUNT", "ten"),
    ):
        with pytest.raises(SettingsError) as raised:
            load_settings({**env, variable: value})
        assert raised.value.variable == variable, value


# --- resilience (issue 14) ---------------------------------------------------------------------------------


def test_resilience_defaults() -> None:
    loaded = settings()
    assert loaded.request_headers_timeout_s == 60.0
    assert loaded.retry_budget == RetryBudget(max_tokens=100.0, token_ratio=1.0, min_retries_per_second=5.0)
    assert loaded.egress_limits == ENVOY_DEFAULT_LIMITS == ConnectionPoolLimits(1024, 1024, 1024)


def test_resilience_settings_are_read_and_zero_turns_a_timeout_or_the_budget_off() -> None:
    loaded = settings(
        MESHPROXY_REQUEST_HEADERS_TIMEOUT_S="12.5",
        MESHPROXY_RETRY_BUDGET_TOKENS="20",
        MESHPROXY_RETRY_BUDGET_TOKEN_RATIO="0.5",
        MESHPROXY_RETRY_BUDGET_MIN_PER_S="10",
        MESHPROXY_EGRESS_MAX_CONNECTIONS="2147483647",
        MESHPROXY_EGRESS_MAX_PENDING_REQUESTS="10",
        MESHPROXY_EGRESS_MAX_REQUESTS="20",
    )
    assert loaded.request_headers_timeout_s == 12.5
    assert loaded.retry_budget == RetryBudget(20.0, 0.5, 10.0)
    assert loaded.egress_limits == ConnectionPoolLimits(2147483647, 10, 20)
    off = settings(MESHPROXY_REQUEST_HEADERS_TIMEOUT_S="0", MESHPROXY_RETRY_BUDGET_TOKENS="0")
    assert (off.request_headers_timeout_s, off.retry_budget) == (None, None)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESHPROXY_REQUEST_HEADERS_TIMEOUT_S", "-1"),
        ("MESHPROXY_REQUEST_HEADERS_TIMEOUT_S", "soon"),
        ("MESHPROXY_RETRY_BUDGET_TOKENS", "-5"),
        ("MESHPROXY_RETRY_BUDGET_TOKEN_RATIO", "nan"),
        ("MESHPROXY_RETRY_BUDGET_MIN_PER_S", "-0.5"),
        ("MESHPROXY_EGRESS_MAX_CONNECTIONS", "0"),
        ("MESHPROXY_EGRESS_MAX_REQUESTS", "2147483648"),
    ],
)
def test_bad_resilience_settings_are_fatal_and_named(variable: str, value: str) -> None:
    assert fatal(**{variable: value}).variable == variable


# --- config source access (issue 16) -----------------------------------------------------------------------


def test_config_headers_and_ca_bundle() -> None:
    loaded = settings(
        MESHPROXY_CONFIG_HEADERS="Authorization: Bearer SECRET-1\nX-Api-Key: SECRET-2\n",
        MESHPROXY_CONFIG_CA_BUNDLE="/etc/ssl/private-ca.pem",
    )
    assert loaded.config_headers == (("Authorization", "Bearer SECRET-1"), ("X-Api-Key", "SECRET-2"))
    assert loaded.source_options.headers == loaded.config_headers
    assert loaded.source_options.ca_bundle == "/etc/ssl/private-ca.pem"
    assert "SECRET" not in repr(loaded) and "SECRET" not in repr(loaded.source_options)
    assert settings().config_headers == () and settings().config_ca_bundle is None


def test_a_malformed_header_line_is_fatal_without_echoing_it() -> None:
    error = fatal(MESHPROXY_CONFIG_HEADERS="Authorization: Bearer ok\nBearer SECRET")
    assert error.variable == "MESHPROXY_CONFIG_HEADERS"
    assert "line 2" in error.message and "SECRET" not in str(error)


def test_sds_socket_path() -> None:
    """APPMESH_SDS_SOCKET_PATH: where `sds` secrets are fetched (spec §1.8); unset, there is none."""
    assert settings().sds_socket_path is None
    assert settings(APPMESH_SDS_SOCKET_PATH="/run/spire/sockets/agent.sock").sds_socket_path == (
        "/run/spire/sockets/agent.sock"
    )
