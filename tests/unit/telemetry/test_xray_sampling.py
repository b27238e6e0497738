"""X-Ray localized sampling: wildcard rules, reservoir per second, rate, manifest validation (spec §5.4)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from random import Random

import pytest

from meshproxy.telemetry.errors import SamplingManifestError
from meshproxy.telemetry.xray import (
    LocalizedSampler,
    SamplingManifest,
    SamplingRule,
    compile_wildcard,
    default_manifest,
    load_manifest,
    parse_manifest,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("*", "anything"),
        ("*.apps.local", "serviceb.apps.local"),
        ("*.apps.local", "SERVICEB.APPS.LOCAL"),
        ("*.apps.local", "apps.local"),
        ("/p?ng", "/ping"),
        ("/p?ng", "/pong"),
        ("/p?ng", "/pg"),
        ("/api/*/items", "/api/v1/items"),
        ("/api/*/items", "/api/v1/items/2"),
        ("GET", "get"),
        ("", ""),
        ("a.b", "axb"),
        ("[x]", "[x]"),
    ],
)
def test_wildcards_match_like_the_xray_sdk(pattern: str, text: str, xray_sdk: types.SimpleNamespace) -> None:
    compiled = compile_wildcard(pattern)
    ours = compiled is None or compiled.fullmatch(text) is not None
    assert ours == xray_sdk.wildcard_match(pattern, text)


def test_reservoir_takes_fixed_target_per_second_then_rate() -> None:
    clock = Clock()
    sampler = LocalizedSampler(default_manifest(rate=0.0), monotonic=clock, rng=Random(1))
    decisions = [sampler.should_trace("a", "GET", "/") for _ in range(5)]
    assert decisions == [True, False, False, False, False]
    clock.now += 0.5  # same second
    assert sampler.should_trace("a", "GET", "/") is False
    clock.now += 0.6  # next second
    assert sampler.should_trace("a", "GET", "/") is True


def test_rate_beyond_the_reservoir() -> None:
    manifest = SamplingManifest(SamplingRule(fixed_target=0, rate=0.05))
    sampler = LocalizedSampler(manifest, monotonic=Clock(), rng=Random(42))
    sampled = sum(sampler.should_trace("a", "GET", "/") for _ in range(4000))
    assert 120 <= sampled <= 280  # 5 % of 4000 = 200


def test_rate_one_and_rate_zero() -> None:
    always = LocalizedSampler(SamplingManifest(SamplingRule(0, 1.0)), monotonic=Clock(), rng=Random(3))
    never = LocalizedSampler(SamplingManifest(SamplingRule(0, 0.0)), monotonic=Clock(), rng=Random(3))
    assert all(always.should_trace("a", "GET", "/") for _ in range(100))
    assert not any(never.should_trace("a", "GET", "/") for _ in range(100))


def test_first_matching_rule_wins() -> None:
    manifest = parse_manifest(
        {
            "version": 2,
            "rules": [
                {
                    "description": "skip health",
                    "host": "*",
                    "http_method": "*",
                    "url_path": "/ping",
                    "fixed_target": 0,
                    "rate": 0,
                },
                {
                    "host": "*.apps.local",
                    "http_method": "POST",
                    "url_path": "*",
                    "fixed_target": 0,
                    "rate": 1,
                },
                {"host": "*", "http_method": "*", "url_path": "*", "fixed_target": 0, "rate": 0},
            ],
            "default": {"fixed_target": 1, "rate": 1},
        }
    )
    sampler = LocalizedSampler(manifest, monotonic=Clock(), rng=Random(5))
    assert sampler.should_trace("b.apps.local", "POST", "/ping") is False  # rule 1 before rule 2
    assert sampler.should_trace("b.apps.local", "post", "/orders") is True  # rule 2, method case-insensitive
    assert sampler.should_trace("example.com", "POST", "/orders") is False  # rule 3, never the default


def test_default_rule_when_nothing_matches() -> None:
    manifest = parse_manifest(
        {
            "version": 2,
            "rules": [{"host": "x", "http_method": "*", "url_path": "*", "fixed_target": 0, "rate": 0}],
            "default": {"fixed_target": 0, "rate": 1},
        }
    )
    assert LocalizedSampler(manifest, monotonic=Clock()).should_trace("y", "GET", "/") is True


def test_rule_fields_default_to_wildcards() -> None:
    manifest = parse_manifest(
        {
            "version": 2,
            "rules": [{"fixed_target": 3, "rate": 0.5}],
            "default": {"fixed_target": 1, "rate": 0.1},
        }
    )
    assert manifest.rules == (SamplingRule(fixed_target=3, rate=0.5),)
    assert manifest.default == SamplingRule(fixed_target=1, rate=0.1)


def test_default_manifest_is_app_mesh_agent_default() -> None:
    assert default_manifest() == SamplingManifest(SamplingRule(fixed_target=1, rate=0.05))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"version": 1, "default": {"fixed_target": 1, "rate": 0.1}}, '"version" must be 2'),
        ({"version": 2}, '"default" rule is required'),
        ({"version": 2, "default": {"rate": 0.1}}, "fixed_target"),
        ({"version": 2, "default": {"fixed_target": -1, "rate": 0.1}}, "fixed_target"),
        ({"version": 2, "default": {"fixed_target": 1.5, "rate": 0.1}}, "fixed_target"),
        ({"version": 2, "default": {"fixed_target": True, "rate": 0.1}}, "fixed_target"),
        ({"version": 2, "default": {"fixed_target": 1, "rate": 1.5}}, "rate"),
        ({"version": 2, "default": {"fixed_target": 1, "rate": "0.1"}}, "rate"),
        ({"version": 2, "default": {"fixed_target": 1, "rate": 0.1}, "rules": {}}, '"rules" must be a list'),
        (
            {
                "version": 2,
                "default": {"fixed_target": 1, "rate": 0.1},
                "rules": [{"fixed_target": 1, "rate": 0, "host": 3}],
            },
            r"rules\[0\].host",
        ),
        ({"version": 2, "default": {"fixed_target": 1, "rate": 0.1}, "rules": ["x"]}, r"rules\[0\] must be"),
    ],
)
def test_manifest_errors_name_the_problem(document: object, message: str) -> None:
    with pytest.raises(SamplingManifestError, match=message):
        parse_manifest(document)


def test_load_manifest_from_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": 2, "default": {"fixed_target": 2, "rate": 0.25}}))
    assert load_manifest(str(path)).default == SamplingRule(fixed_target=2, rate=0.25)
    path.write_text("{not json")
    with pytest.raises(SamplingManifestError, match="not valid JSON"):
        load_manifest(str(path))
    with pytest.raises(SamplingManifestError, match="cannot read"):
        load_manifest(str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(SamplingManifestError, match=str(path)):
        load_manifest(str(path))
