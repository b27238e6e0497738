"""Config sources, the pure parts: which source a --config value opens, and the poll schedule.

The sources' I/O (a file changing, an HTTP server answering 200/304/errors) is exercised over real loopback
sockets in tests/e2e/test_config_reload.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshproxy.config.sources import (
    MAX_BACKOFF_S,
    RETRY_BASE_S,
    FileSource,
    HttpSource,
    PollSchedule,
    S3Source,
    SourceError,
    SourceOptions,
    open_source,
    parse_header,
    parse_headers,
    redact_url,
    source_problem,
)

# ------------------------------------------------------------------------------------------- open_source


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("http://127.0.0.1:8080/mesh.json", "http://127.0.0.1:8080/mesh.json"),
        (
            "https://config.example/mesh?node=a",
            "https://config.example/mesh?node=***",
        ),  # values may be secret
        ("HTTP://HOST/x", "http://HOST/x"),
    ],
)
def test_http_urls_open_an_http_source(spec: str, name: str) -> None:
    source = open_source(spec)
    assert isinstance(source, HttpSource)
    assert source.url == spec
    assert source.name == name


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("{tmp}/mesh.json", "{tmp}/mesh.json"),
        ("mesh.yaml", "mesh.yaml"),
        ("file://{tmp}/mesh%20export.json", "{tmp}/mesh export.json"),
    ],
)
def test_paths_and_file_urls_open_a_file_source(spec: str, path: str, tmp_path: Path) -> None:
    source = open_source(spec.format(tmp=tmp_path))
    assert isinstance(source, FileSource)
    assert source.name == path.format(tmp=tmp_path)


def test_s3_urls_open_an_s3_source() -> None:
    source = open_source("s3://config-bucket/meshes/apps%20v2.json")
    assert isinstance(source, S3Source)
    assert (source.bucket, source.key, source.name) == (
        "config-bucket",
        "meshes/apps v2.json",
        "s3://config-bucket/meshes/apps v2.json",
    )


def test_an_existing_file_whose_name_looks_like_a_scheme_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh:v2.json").write_text("[]")
    assert isinstance(open_source("mesh:v2.json"), FileSource)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ftp://host/mesh.json", "unsupported scheme 'ftp'"),
        ("http:///mesh.json", "the URL has no host"),
        ("file://", "the file URL has no path"),
        ("   ", "empty configuration source"),
        ("s3://bucket-only", "expected s3://bucket/key"),
        ("s3:///key", "expected s3://bucket/key"),
        ("/nonexistent-dir-16/mesh.json", "directory /nonexistent-dir-16 does not exist"),
        ("file:///nonexistent-dir-16/mesh.json", "directory /nonexistent-dir-16 does not exist"),
        ("/etc/hostname/mesh.json", "/etc/hostname is not a directory"),
        ("/etc", "'/etc' is a directory; name the file in it"),
    ],
)
def test_unusable_specs_are_named_before_start_up(spec: str, expected: str) -> None:
    problem = source_problem(spec)
    assert problem is not None and expected in problem
    with pytest.raises(SourceError, match=expected):
        open_source(spec)


def test_usable_specs_have_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert source_problem("https://h/x") is None
    assert source_problem("s3://bucket/mesh.json") is None
    # the directory exists, the file is not there yet (a volume being filled): the server waits for it
    assert source_problem(str(tmp_path / "mesh.json")) is None
    assert source_problem("mesh.json") is None
    (tmp_path / "conf").mkdir()
    assert source_problem("conf/mesh.json") is None
    assert source_problem("later/mesh.json") is not None  # no such directory under the working directory


def test_an_unreadable_ca_bundle_is_named(tmp_path: Path) -> None:
    problem = source_problem("https://h/x", SourceOptions(ca_bundle=str(tmp_path / "none.pem")))
    assert problem is not None and "none.pem" in problem and "cannot be read" in problem


# ------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://config.example/mesh.json", "https://config.example/mesh.json"),
        ("https://bot:s3cr3t@config.example/mesh.json", "https://bot:***@config.example/mesh.json"),
        (
            "https://h/m.json?X-Amz-Signature=abc&X-Amz-Date=1",
            "https://h/m.json?X-Amz-Signature=***&X-Amz-Date=***",
        ),
        ("https://h/m.json?token", "https://h/m.json?token=***"),
        ("https://h/m.json#frag", "https://h/m.json"),
    ],
)
def test_urls_are_redacted_for_logs(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert open_source(url).name == shown
    assert "s3cr3t" not in repr(open_source(url)) and "abc" not in repr(open_source(url))


def test_headers_parse_and_their_values_never_show_in_errors_or_reprs() -> None:
    assert parse_header("Authorization: Bearer abc:def ") == ("Authorization", "Bearer abc:def")
    assert parse_headers("X-Api-Key: k1\n\n  Authorization:Bearer t ") == (
        ("X-Api-Key", "k1"),
        ("Authorization", "Bearer t"),
    )
    for bad, reason in [
        ("Bearer-token-without-colon", "expected 'Name: value'"),
        (": value", "expected 'Name: value'"),
        ("Bad Name: SECRET", "'Bad Name' is not a valid header name"),
    ]:
        with pytest.raises(ValueError, match=reason) as caught:
            parse_header(bad)
        assert "SECRET" not in str(caught.value)
    with pytest.raises(ValueError, match="line 2: ") as caught:
        parse_headers("A: 1\nno colon SECRET")
    assert "SECRET" not in str(caught.value)
    options = SourceOptions(headers=(("Authorization", "Bearer SECRET"),))
    assert "SECRET" not in repr(options) and "Authorization" in repr(options)
    assert "SECRET" not in repr(open_source("https://h/x", options))


# ------------------------------------------------------------------------------------------ PollSchedule


def _fixed(value: float) -> PollSchedule:
    return PollSchedule(5.0, uniform=lambda: value)


def test_successful_polls_wait_the_interval_with_jitter_either_side() -> None:
    assert _fixed(0.5).next_delay(False) == pytest.approx(5.0)
    assert _fixed(0.0).next_delay(False) == pytest.approx(4.5)  # -10 %
    assert _fixed(0.999999).next_delay(False) == pytest.approx(5.5, rel=1e-5)  # +10 %


def test_jitter_spreads_polls_within_the_band() -> None:
    schedule = PollSchedule(2.0)
    delays = [schedule.next_delay(False) for _ in range(200)]
    assert all(1.8 <= d <= 2.2 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # not one fixed value


def test_failures_back_off_exponentially_up_to_the_cap_and_a_success_resets() -> None:
    schedule = _fixed(0.5)
    delays = [schedule.next_delay(True) for _ in range(6)]
    assert delays == pytest.approx([5.0, 10.0, 20.0, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S])
    assert schedule.failures == 6
    assert schedule.next_delay(False) == pytest.approx(5.0)
    assert schedule.failures == 0
    assert schedule.next_delay(True) == pytest.approx(5.0)


def test_backoff_never_polls_faster_than_a_long_interval() -> None:
    schedule = PollSchedule(120.0, uniform=lambda: 0.5)
    assert [schedule.next_delay(True) for _ in range(3)] == pytest.approx([120.0, 120.0, 120.0])


def test_read_once_still_retries_a_failing_first_fetch() -> None:
    schedule = PollSchedule(0.0, uniform=lambda: 0.5)
    assert [schedule.next_delay(True) for _ in range(3)] == pytest.approx(
        [RETRY_BASE_S, 2 * RETRY_BASE_S, 4 * RETRY_BASE_S]
    )


def test_many_failures_do_not_overflow() -> None:
    schedule = _fixed(0.5)
    for _ in range(5000):
        delay = schedule.next_delay(True)
    assert delay == pytest.approx(MAX_BACKOFF_S)


def test_repr_names_interval_and_failures() -> None:
    schedule = _fixed(0.5)
    schedule.next_delay(True)
    assert repr(schedule) == "<PollSchedule every=5.0s failures=1>"
