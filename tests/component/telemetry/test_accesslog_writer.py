"""Access logs written off the request path to real files and to a real stdout pipe (spec §5.5)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from meshproxy.config.snapshot import AccessLogConfig
from meshproxy.core.summary import RequestSummary
from meshproxy.settings import Settings
from meshproxy.telemetry.hub import Telemetry
from meshproxy.telemetry.stats import StatsStore

DEFAULT_LINE = re.compile(
    r"\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
    r"(?P<code>\d+) (?P<flags>\S+) (?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<upstream_time>\S+) "
    r'"(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"'
)


def record(i: int) -> RequestSummary:
    return RequestSummary(
        direction="ingress",
        start_time=1716560306.0 + i,
        method="POST" if i % 2 else "GET",
        path=f"/items/{i}",
        authority="serviceb.apps.local",
        request_headers={"user-agent": "test/1.0", "x-request-id": f"rid-{i}"},
        response_code=200 if i % 3 else 503,
        response_flags="-" if i % 3 else "UF",
        bytes_received=i,
        bytes_sent=2 * i,
        duration_ms=i % 7,
        upstream_host="127.0.0.1:9080" if i % 3 else None,
    )


def run(telemetry: Telemetry, body: Callable[[], None]) -> None:
    async def scenario() -> None:
        await telemetry.start()
        try:
            body()
            await asyncio.sleep(0.1)
        finally:
            await telemetry.stop()

    asyncio.run(scenario())


def test_default_format_lines_parse_back(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    telemetry = Telemetry(make_settings(), StatsStore())
    telemetry.set_access_log(AccessLogConfig(str(path)))

    def body() -> None:
        for i in range(300):
            telemetry.request_done(record(i))

    run(telemetry, body)
    lines = path.read_text().splitlines()
    assert len(lines) == 300
    for i, line in enumerate(lines):
        m = DEFAULT_LINE.fullmatch(line)
        assert m is not None, line
        expected = record(i)
        assert m["method"] == expected.method and m["path"] == expected.path
        assert int(m["code"]) == expected.response_code and m["flags"] == expected.response_flags
        assert (int(m["rx"]), int(m["tx"])) == (expected.bytes_received, expected.bytes_sent)
        assert m["rid"] == f"rid-{i}" and m["upstream"] == (expected.upstream_host or "-")
    assert telemetry.store.server.telemetry_dropped_total == 0


def test_json_format_and_path_change(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    telemetry = Telemetry(make_settings(), StatsStore(), drain_interval_s=0.01)
    fields = (("code", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%"), ("host", "%UPSTREAM_HOST%"))
    telemetry.set_access_log(AccessLogConfig(str(first), json_format=fields))

    async def scenario() -> None:
        await telemetry.start()
        try:
            telemetry.request_done(record(1))
            await asyncio.sleep(0.2)
            # A snapshot swap moves the log; the old writer finishes on its own.
            telemetry.set_access_log(AccessLogConfig(str(second), json_format=fields))
            telemetry.request_done(record(2))
            telemetry.request_done(record(3))
            await asyncio.sleep(0.2)
        finally:
            await telemetry.stop()

    asyncio.run(scenario())
    assert [json.loads(line) for line in first.read_text().splitlines()] == [
        {"code": "200", "path": "/items/1", "host": "127.0.0.1:9080"}
    ]
    assert [json.loads(line) for line in second.read_text().splitlines()] == [
        {"code": "200", "path": "/items/2", "host": "127.0.0.1:9080"},
        {"code": "503", "path": "/items/3", "host": "-"},
    ]


def test_unwritable_path_counts_drops(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    store = StatsStore()
    telemetry = Telemetry(make_settings(), store)
    telemetry.set_access_log(AccessLogConfig(str(tmp_path / "no" / "such" / "dir" / "access.log")))

    def body() -> None:
        for i in range(5):
            telemetry.request_done(record(i))

    run(telemetry, body)
    assert store.server.telemetry_dropped_total == 5


def test_dev_stdout_pipe(tmp_path: Path) -> None:
    """In a real process whose stdout is a pipe, /dev/stdout gets one line per request."""
    script = textwrap.dedent(
        """
        import asyncio
        from meshproxy.config.snapshot import AccessLogConfig, Identity, ResourceKind
        from meshproxy.settings import Settings
        from meshproxy.telemetry.hub import Telemetry
        from meshproxy.core.summary import RequestSummary
        from meshproxy.telemetry.stats import StatsStore

        identity = Identity("mesh/apps/virtualNode/a", "apps", ResourceKind.VIRTUAL_NODE, "a", "x")
        telemetry = Telemetry(Settings(identity=identity), StatsStore())
        config = AccessLogConfig("/dev/stdout", text_format="%REQ(:PATH)% %RESPONSE_CODE%\\n")
        telemetry.set_access_log(config)

        async def main():
            await telemetry.start()
            for i in range(50):
                telemetry.request_done(
                    RequestSummary(direction="egress", start_time=0.0, path=f"/p{i}", response_code=200)
                )
            await telemetry.stop()

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True)
    assert result.stdout.decode().splitlines() == [f"/p{i} 200" for i in range(50)]
