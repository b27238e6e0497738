"""The soak's figures (bench/soak.py): pure functions over samples, no processes."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.soak import (
    Sample,
    Tally,
    after_warm_up,
    markdown,
    parse_args,
    path_for,
    rss_slope_kib_per_min,
    summarize,
)


def test_the_rss_slope_is_a_least_squares_fit_in_kib_per_minute() -> None:
    growing = [Sample(t, 40_000 + t, 0.0, 0, 0) for t in range(0, 600, 10)]  # 1 KiB/s
    assert rss_slope_kib_per_min(growing) == pytest.approx(60.0)
    flat_with_noise = [Sample(t, 40_000 + (5 if t % 20 else -5), 0.0, 0, 0) for t in range(0, 600, 10)]
    assert abs(rss_slope_kib_per_min(flat_with_noise)) < 1.0
    assert rss_slope_kib_per_min(growing[:1]) == 0.0


def test_the_warm_up_fifth_is_left_out_and_the_summary_adds_up() -> None:
    samples = [
        Sample(float(t), 1024 * (30 + (1 if t < 20 else 2)), t / 10, 10 * t, 0) for t in range(0, 101, 10)
    ]
    assert [s.t for s in after_warm_up(samples)] == [20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    tally = Tally(ok=998)
    tally.fail("status 503")
    tally.fail("status 503")
    report = summarize("meshproxy", samples, tally)
    assert (report.requests, report.failed, report.failure_reasons) == (1000, 2, {"status 503": 2})
    assert report.cpu_percent == pytest.approx(10.0)  # 10 CPU s over 100 s
    assert report.cpu_us_per_request == pytest.approx(10_000.0)
    assert (report.rss_start_mib, report.rss_end_mib, report.rss_slope_kib_per_min) == (32.0, 32.0, 0.0)
    text = markdown([report], duration_s=600, rate=200, when="today", machine="2 x test")
    assert (
        "| meshproxy | 1,000 | 2 | 10.0 | 10000 µs | 32.0 MiB | 32.0 MiB | 32.0 MiB | +0.0 KiB/min |" in text
    )
    assert "10 min at 200 requests/s" in text


def test_the_request_mix_is_fixed() -> None:
    mix = Counter(path_for(i) for i in range(1000))
    assert mix == {("/", 200): 880, ("/files/1k.bin", 200): 100, ("/missing", 404): 20}


def test_the_run_is_bounded() -> None:
    assert parse_args([]).duration == 600.0
    for argv in (["--duration", "3601"], ["--duration", "0"], ["--rate", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
