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
    SourceError,
    open_source,
    source_problem,
)

# ------------------------------------------------------------------------------------------- open_source


@pytest.mark.parametrize(
    "spec", ["http://127.0.0.1:8080/mesh.json", "https://config.example/mesh?node=a", "HTTP://HOST/x"]
)
def test_http_urls_open_an_http_source(spec: str) -> None:
    source = open_source(spec)
    assert isinstance(source, HttpSource)
    assert source.name == spec


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("/etc/meshproxy/mesh.json", "/etc/meshproxy/mesh.json"),
        ("mesh.yaml", "mesh.yaml"),
        ("file:///srv/mesh%20export.json", "/srv/mesh export.json"),
    ],
)
def test_paths_and_file_urls_open_a_file_source(spec: str, path: str) -> None:
    source = open_source(spec)
    assert isinstance(source, FileSource)
    assert source.name == path


def test_an_existing_file_whose_name_looks_like_a_scheme_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh:v2.json").write_text("[]")
    assert isinstance(open_source("mesh:v2.json"), FileSource)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("s3://bucket/mesh.json", "unsupported scheme 's3'"),
        ("http:///mesh.json", "the URL has no host"),
        ("file://", "the file URL has no path"),
        ("   ", "empty configuration source"),
    ],
)
def test_unusable_specs_are_named_before_start_up(spec: str, expected: str) -> None:
    problem = source_problem(spec)
    assert problem is not None and expected in problem
    with pytest.raises(SourceError, match=expected):
        open_source(spec)


def test_usable_specs_have_no_problem() -> None:
    assert source_problem("https://h/x") is None
    assert source_problem("relative/mesh.json") is None  # not there yet: the server waits for it


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
