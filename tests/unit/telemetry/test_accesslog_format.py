"""Access-log formats (spec §5.5): Envoy's default, format.text operators, format.json; parsed back."""

from __future__ import annotations

import calendar
import json
import re
import time
from typing import Any

import pytest

from meshproxy.config.snapshot import AccessLogConfig
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.accesslog import DEFAULT_FORMAT, compile_format, compile_text
from meshproxy.telemetry.errors import AccessLogFormatError
from meshproxy.telemetry.tracing import TraceContext

# Spec §5.5, verbatim (plus the newline Envoy's `\n` stands for).
SPEC_DEFAULT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
    '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
    '"%UPSTREAM_HOST%"\n'
)
DEFAULT_LINE = re.compile(
    r'\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<code>\d+) (?P<flags>\S+) '
    r"(?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<upstream_time>\S+) \"(?P<xff>[^\"]*)\" "
    r'"(?P<ua>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"\n'
)


def record(**overrides: Any) -> RequestSummary:
    values: dict[str, Any] = {
        "direction": "egress",
        "start_time": 1716560306.123,
        "method": "GET",
        "path": "/ping?x=1",
        "authority": "serviceb.apps.local",
        "request_headers": {
            "user-agent": "curl/8.5.0",
            "x-request-id": "0b7d1c1e-5b8e-4c6f-9a53-7a3e2f7c1d2a",
        },
        "response_headers": {"x-envoy-upstream-service-time": "2", "content-type": "text/plain"},
        "response_trailers": {"grpc-status": "0"},
        "response_code": 200,
        "bytes_sent": 2,
        "duration_ms": 3,
        "upstream_host": "10.0.2.15:9080",
        "upstream_cluster": "cds_egress_apps_serviceB_http_9080",
        "downstream_remote_address": "10.0.1.23:51234",
        "downstream_local_address": "10.0.1.5:15001",
        "route_name": "serviceb/route-1",
    }
    values.update(overrides)
    return RequestSummary(**values)


def render(fmt: str, rec: RequestSummary | None = None) -> str:
    return compile_format(AccessLogConfig("/dev/null", text_format=fmt)).render(rec or record())


def test_default_format_is_envoys() -> None:
    assert DEFAULT_FORMAT == SPEC_DEFAULT


def test_default_line_matches_the_spec_example_and_parses_back() -> None:
    line = compile_format(AccessLogConfig("/dev/stdout")).render(record())
    assert line == (
        '[2024-05-24T14:18:26.123Z] "GET /ping?x=1 HTTP/1.1" 200 - 0 2 3 2 "-" "curl/8.5.0" '
        '"0b7d1c1e-5b8e-4c6f-9a53-7a3e2f7c1d2a" "serviceb.apps.local" "10.0.2.15:9080"\n'
    )
    m = DEFAULT_LINE.fullmatch(line)
    assert m is not None
    parsed = (
        calendar.timegm(time.strptime(m["start"][:19], "%Y-%m-%dT%H:%M:%S")) + int(m["start"][20:23]) / 1000
    )
    assert parsed == pytest.approx(1716560306.123)
    assert (m["method"], m["path"], m["code"], m["upstream"]) == ("GET", "/ping?x=1", "200", "10.0.2.15:9080")


def test_unset_values_print_dash() -> None:
    bare = RequestSummary(direction="ingress", start_time=1716560306.0)
    line = compile_format(AccessLogConfig("/dev/stdout")).render(bare)
    m = DEFAULT_LINE.fullmatch(line)
    assert m is not None, line
    assert m["code"] == "0" and m["flags"] == "-" and m["upstream_time"] == "-"
    assert (m["xff"], m["ua"], m["rid"], m["authority"], m["upstream"]) == ("-",) * 5


def test_original_path_wins_when_rewritten() -> None:
    line = render(
        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)%", record(path="/v2/ping", original_path="/ping")
    )
    assert line == "/ping /v2/ping\n"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%START_TIME(%s)%", "1716560306"),
        ("%START_TIME(%s.%3f)%", "1716560306.123"),
        ("%START_TIME(%s.%6f)%", "1716560306.123000"),
        ("%START_TIME(%s.%9f)%", "1716560306.123000000"),
        ("%START_TIME(%f)%", "123000000"),
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2024/05/24T14:18:26+0000"),
        ("%START_TIME(%%s literal)%", "%s literal"),
        ("%START_TIME%", "2024-05-24T14:18:26.123Z"),
    ],
)
def test_start_time_formats(fmt: str, expected: str) -> None:
    assert render(fmt) == expected + "\n"


def test_start_time_cache_follows_the_second() -> None:
    fmt = compile_format(AccessLogConfig("/dev/null", text_format="%START_TIME(%H:%M:%S.%3f)%\n"))
    assert fmt.render(record(start_time=1716560306.5)) == "14:18:26.500\n"
    assert fmt.render(record(start_time=1716560307.25)) == "14:18:27.250\n"
    assert fmt.render(record(start_time=1716560306.75)) == "14:18:26.750\n"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%REQ(USER-AGENT)%", "curl/8.5.0"),
        ("%REQ(user-agent):4%", "curl"),
        ("%REQUEST_HEADER(X-MISSING?USER-AGENT)%", "curl/8.5.0"),
        ("%REQ(X-MISSING)%", "-"),
        ("%REQ(:METHOD)% %REQ(:AUTHORITY)% %REQ(:SCHEME)%", "GET serviceb.apps.local http"),
        ("%REQ_WITHOUT_QUERY(:PATH)%", "/ping"),
        ("%RESP(CONTENT-TYPE)%", "text/plain"),
        ("%RESPONSE_HEADER(X-MISSING?CONTENT-TYPE):4%", "text"),
        ("%TRAILER(GRPC-STATUS)%", "0"),
        ("%RESPONSE_TRAILER(X-NONE)%", "-"),
        ("%RESPONSE_CODE%:%RESPONSE_FLAGS%:%BYTES_RECEIVED%:%BYTES_SENT%:%DURATION%", "200:-:0:2:3"),
        ("%UPSTREAM_HOST% %UPSTREAM_CLUSTER%", "10.0.2.15:9080 cds_egress_apps_serviceB_http_9080"),
        ("%PROTOCOL% %ROUTE_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT%", "HTTP/1.1 serviceb/route-1 1"),
        ("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.1.23:51234 10.0.1.23"),
        ("%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.1.5:15001 10.0.1.5"),
        ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
        ("%UPSTREAM_CLUSTER:4%", "cds_"),
        ("%REQUEST_DURATION% %UPSTREAM_LOCAL_ADDRESS%", "- -"),
        ("%LOCAL_REPLY_BODY%", "-"),
        ("100% sure", None),
    ],
)
def test_operators(fmt: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(AccessLogFormatError):
            render(fmt)
    else:
        assert render(fmt) == expected + "\n"


def test_app_mesh_user_guide_example() -> None:
    line = render(
        "%LOCAL_REPLY_BODY%:%RESPONSE_CODE%:path=%REQ(:path)%\n",
        record(local_reply_body="no healthy upstream", response_code=503),
    )
    assert line == "no healthy upstream:503:path=/ping?x=1\n"


def test_upstream_service_time_falls_back_to_the_record() -> None:
    rec = record(response_headers={}, upstream_service_time_ms=17)
    assert render("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", rec) == "17\n"


def test_ipv6_addresses_without_port() -> None:
    rec = record(downstream_remote_address="[2001:db8::1]:443")
    assert render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", rec) == "2001:db8::1\n"


def test_environment_and_trace_id() -> None:
    getters = compile_text("%ENVIRONMENT(STAGE)% %ENVIRONMENT(NOPE)% %TRACE_ID%", env={"STAGE": "prod"})
    ctx = TraceContext("egress", 1, 0xAB, None, 0xAB, None, True)
    assert "".join(g(record(trace=ctx)) for g in getters) == "prod - " + "0" * 30 + "ab"
    assert "".join(g(record()) for g in getters) == "prod - -"


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%NOT_AN_OPERATOR%", "unsupported access-log operator %NOT_AN_OPERATOR%"),
        ("%REQ%", "needs a header name"),
        ("%REQ()%", "needs a header name"),
        ("%RESPONSE_CODE(x)%", "takes no arguments"),
        ("%ENVIRONMENT()%", "needs a variable name"),
        ("%RESPONSE_CODE", "at character 0"),
        ("code=%response_code%", "at character 5"),
        ("x" * 1001, "1000"),
        ("", "must not be empty"),
    ],
)
def test_invalid_formats_are_clear_errors(fmt: str, message: str) -> None:
    with pytest.raises(AccessLogFormatError, match=re.escape(message)):
        compile_format(AccessLogConfig("/dev/stdout", text_format=fmt))


def test_newline_is_added_when_missing() -> None:
    assert render("%RESPONSE_CODE%") == "200\n"
    assert render("%RESPONSE_CODE%\n") == "200\n"


def test_json_format_one_object_per_line() -> None:
    config = AccessLogConfig(
        "/dev/stdout",
        json_format=(
            ("start", "%START_TIME%"),
            ("method", "%REQ(:METHOD)%"),
            ("code", "%RESPONSE_CODE%"),
            ("flags", "%RESPONSE_FLAGS%"),
            ("ua", "%REQ(USER-AGENT)%"),
            ("missing", "%REQ(X-NONE)%"),
            ("mixed", "%DURATION%ms to %UPSTREAM_HOST%"),
            ("quote", "%REQ(X-QUOTE)%"),
        ),
    )
    line = compile_format(config).render(
        record(request_headers={"user-agent": "curl/8.5.0", "x-quote": 'a"b\\c'})
    )
    assert line.endswith("\n") and line.count("\n") == 1
    obj = json.loads(line)
    assert list(obj) == ["start", "method", "code", "flags", "ua", "missing", "mixed", "quote"]
    assert obj == {
        "start": "2024-05-24T14:18:26.123Z",
        "method": "GET",
        "code": "200",
        "flags": "-",
        "ua": "curl/8.5.0",
        "missing": "-",
        "mixed": "3ms to 10.0.2.15:9080",
        "quote": 'a"b\\c',
    }


def test_json_format_errors_name_the_key() -> None:
    with pytest.raises(AccessLogFormatError, match=r"format\.json key 'bad'"):
        compile_format(AccessLogConfig("/dev/stdout", json_format=(("ok", "%DURATION%"), ("bad", "%NOPE%"))))
    with pytest.raises(AccessLogFormatError, match="at least one"):
        compile_format(AccessLogConfig("/dev/stdout", json_format=()))
    with pytest.raises(AccessLogFormatError, match="exactly one"):
        compile_format(AccessLogConfig("/dev/stdout", text_format="x", json_format=(("a", "b"),)))
