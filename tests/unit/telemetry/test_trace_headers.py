"""X-Amzn-Trace-Id and W3C traceparent: parsing, sampling decisions, propagation and id consistency."""

from __future__ import annotations

import re
import types
from random import Random

import pytest

from meshproxy.telemetry.tracing import (
    TraceContext,
    Tracer,
    TraceStart,
    parse_traceparent,
    parse_xray_header,
    parse_xray_root,
)

ROOT = "1-5759e988-bd862e3fe1be46a994272793"
TRACE_INT = 0x5759E988BD862E3FE1BE46A994272793
PARENT = "53995c3f42cd8ad8"
TRACEPARENT = b"00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
XRAY_HEADER = re.compile(rb"Root=(1-[0-9a-f]{8}-[0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])(;.*)?")
W3C_HEADER = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class FixedSampler:
    def __init__(self, decision: bool) -> None:
        self.decision = decision
        self.calls: list[tuple[str, str, str]] = []

    def should_trace(self, host: str, method: str, path: str) -> bool:
        self.calls.append((host, method, path))
        return self.decision


def tracer(*, xray: bool = False, otlp: bool = False, sample: bool = True) -> tuple[Tracer, FixedSampler]:
    sampler = FixedSampler(sample)
    return Tracer(xray=xray, otlp=otlp, sampler=sampler, clock=lambda: 0x6650A1B2, rng=Random(7)), sampler


def start(t: Tracer, *headers: tuple[bytes, bytes]) -> TraceStart:
    result = t.start("ingress", list(headers), "GET", "serviceb.apps.local", "/ping")
    assert result is not None
    return result


def ctx_of(ts: TraceStart) -> TraceContext:
    assert isinstance(ts.context, TraceContext)
    return ts.context


def header(ts: TraceStart, name: bytes) -> bytes:
    values = [v for n, v in ts.upstream_headers if n == name]
    assert len(values) == 1, ts.upstream_headers
    return values[0]


# -- parsing -----------------------------------------------------------------------------------------------


def test_parse_xray_header_as_envoy_case_insensitive() -> None:
    h = parse_xray_header(f"root={ROOT.upper()}; PARENT={PARENT};sampled=1;Self=1-aaa;Lineage=abc:1".encode())
    assert h.root == TRACE_INT
    assert h.parent == PARENT
    assert h.sampled == 1
    assert h.extra == b";Lineage=abc:1"


@pytest.mark.parametrize(
    ("value", "root", "parent", "sampled"),
    [
        (b"Root=1-5759e988-bd862e3fe1be46a99427279;Sampled=1", None, None, 1),  # short root
        (b"Root=2-5759e988-bd862e3fe1be46a994272793", None, None, None),  # unknown version
        (b"Root=1-5759e98g-bd862e3fe1be46a994272793", None, None, None),  # not hex
        (f"Root={ROOT};Parent=xyz;Sampled=?".encode(), TRACE_INT, None, None),
        (f"Root={ROOT};Sampled=0".encode(), TRACE_INT, None, 0),
        (b"", None, None, None),
        (b";;==;", None, None, None),
    ],
)
def test_parse_xray_header_rejects_malformed_parts(
    value: bytes, root: int | None, parent: str | None, sampled: int | None
) -> None:
    h = parse_xray_header(value)
    assert (h.root, h.parent, h.sampled) == (root, parent, sampled)


def test_parse_agrees_with_aws_xray_sdk(xray_sdk: types.SimpleNamespace) -> None:
    text = f"Root={ROOT};Parent={PARENT};Sampled=1"
    ours, theirs = parse_xray_header(text.encode()), xray_sdk.TraceHeader.from_header_str(text)
    assert parse_xray_root(theirs.root) == ours.root
    assert (theirs.parent, theirs.sampled) == (ours.parent, ours.sampled)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, (TRACE_INT, 0x53995C3F42CD8AD8, 1)),
        (b" " + TRACEPARENT + b" ", (TRACE_INT, 0x53995C3F42CD8AD8, 1)),
        (
            b"01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00-future",
            (TRACE_INT, 0x53995C3F42CD8AD8, 0),
        ),
        (TRACEPARENT + b"-extra", None),  # version 00 has exactly four fields
        (b"ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01", None),
        (b"00-00000000000000000000000000000000-53995c3f42cd8ad8-01", None),
        (b"00-5759e988bd862e3fe1be46a994272793-0000000000000000-01", None),
        (TRACEPARENT.upper(), None),
        (b"00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8", None),
    ],
)
def test_parse_traceparent(value: bytes, expected: tuple[int, int, int] | None) -> None:
    assert parse_traceparent(value) == expected


# -- propagation -------------------------------------------------------------------------------------------


def test_nothing_to_do_without_tracers_or_traceparent() -> None:
    t, _ = tracer()
    assert t.start("egress", [(b"x-amzn-trace-id", f"Root={ROOT}".encode())], "GET", "a", "/") is None
    assert t.start("egress", [(b"traceparent", b"garbage")], "GET", "a", "/") is None


def test_w3c_propagation_always_keeps_trace_id_and_replaces_parent() -> None:
    t, _ = tracer()
    ts = start(t, (b"traceparent", TRACEPARENT), (b"tracestate", b"vendor=opaque"))
    m = W3C_HEADER.fullmatch(header(ts, b"traceparent"))
    assert m is not None
    assert m.group(1) == b"5759e988bd862e3fe1be46a994272793"
    assert m.group(2) == ctx_of(ts).span_hex.encode() != PARENT.encode()
    assert m.group(3) == b"01"
    assert header(ts, b"tracestate") == b"vendor=opaque"
    assert not [n for n, _ in ts.upstream_headers if n == b"x-amzn-trace-id"]


def test_xray_new_trace_uses_epoch_and_sampler() -> None:
    t, sampler = tracer(xray=True, sample=True)
    ts = start(t)
    m = XRAY_HEADER.fullmatch(header(ts, b"x-amzn-trace-id"))
    assert m is not None
    assert m.group(1).startswith(b"1-6650a1b2-")
    assert m.group(2) == ctx_of(ts).span_hex.encode()
    assert m.group(3) == b"1"
    assert sampler.calls == [("serviceb.apps.local", "GET", "/ping")]
    assert ctx_of(ts).xray_parent is None
    assert not [n for n, _ in ts.upstream_headers if n == b"traceparent"]


def test_xray_not_sampled_still_propagates_the_decision() -> None:
    t, _ = tracer(xray=True, sample=False)
    ts = start(t)
    assert header(ts, b"x-amzn-trace-id").endswith(b";Sampled=0")
    assert ctx_of(ts).sampled is False


def test_xray_incoming_decision_wins_over_local_sampling() -> None:
    t, sampler = tracer(xray=True, sample=True)
    ts = start(t, (b"x-amzn-trace-id", f"Root={ROOT};Parent={PARENT};Sampled=0;Lineage=x:2".encode()))
    value = header(ts, b"x-amzn-trace-id")
    assert value == f"Root={ROOT};Parent={ctx_of(ts).span_hex};Sampled=0;Lineage=x:2".encode()
    assert ctx_of(ts).xray_parent == PARENT
    assert sampler.calls == []


def test_xray_sampled_question_mark_means_decide_locally() -> None:
    t, sampler = tracer(xray=True, sample=True)
    ts = start(t, (b"x-amzn-trace-id", f"Root={ROOT};Sampled=?".encode()))
    assert ctx_of(ts).sampled is True and len(sampler.calls) == 1
    assert header(ts, b"x-amzn-trace-id").startswith(f"Root={ROOT};".encode())


def test_both_headers_share_one_span_id_and_one_trace() -> None:
    t, _ = tracer(xray=True, otlp=True)
    ts = start(
        t,
        (b"x-amzn-trace-id", f"Root={ROOT};Parent={PARENT};Sampled=1".encode()),
        (b"traceparent", TRACEPARENT),
    )
    xm = XRAY_HEADER.fullmatch(header(ts, b"x-amzn-trace-id"))
    wm = W3C_HEADER.fullmatch(header(ts, b"traceparent"))
    assert xm is not None and wm is not None
    assert xm.group(2) == wm.group(2)  # same span id in both
    assert xm.group(1).replace(b"-", b"")[1:] == wm.group(1)  # 1-<8>-<24> <-> 32 hex
    ctx = ctx_of(ts)
    assert ctx.xray_trace == ctx.w3c_trace == TRACE_INT


def test_traceparent_only_joins_xray_to_the_w3c_trace() -> None:
    t, sampler = tracer(xray=True, sample=False)
    ts = start(t, (b"traceparent", TRACEPARENT))
    ctx = ctx_of(ts)
    assert ctx.xray_trace_id == ROOT
    assert ctx.xray_parent == PARENT
    assert ctx.sampled is True and sampler.calls == []  # the W3C sampled flag decides
    assert header(ts, b"x-amzn-trace-id").startswith(f"Root={ROOT};Parent={ctx.span_hex};Sampled=1".encode())


def test_xray_only_with_otlp_derives_the_w3c_trace() -> None:
    t, _ = tracer(otlp=True)
    ts = start(t, (b"x-amzn-trace-id", f"Root={ROOT};Parent={PARENT};Sampled=1".encode()))
    ctx = ctx_of(ts)
    assert ctx.w3c_trace == TRACE_INT and ctx.w3c_parent == int(PARENT, 16)
    assert header(ts, b"traceparent") == f"00-{ROOT[2:10]}{ROOT[11:]}-{ctx.span_hex}-01".encode()
    # X-Ray is not this proxy's tracer here: its header passes through untouched (not replaced).
    assert not [n for n, _ in ts.upstream_headers if n == b"x-amzn-trace-id"]


def test_otlp_root_is_sampled_and_unsampled_parent_is_respected() -> None:
    t, _ = tracer(otlp=True)
    root = start(t)
    assert ctx_of(root).sampled is True and ctx_of(root).w3c_parent is None
    assert header(root, b"traceparent").endswith(b"-01")
    child = start(t, (b"traceparent", TRACEPARENT[:-2] + b"00"))
    assert ctx_of(child).sampled is False
    assert header(child, b"traceparent").endswith(b"-00")


def test_disagreeing_headers_each_keep_their_trace() -> None:
    t, _ = tracer(xray=True)
    other = b"00-0000000100000000000000000000abcd-1111111111111111-01"
    ts = start(
        t, (b"x-amzn-trace-id", f"Root={ROOT};Parent={PARENT};Sampled=1".encode()), (b"traceparent", other)
    )
    assert header(ts, b"x-amzn-trace-id").startswith(f"Root={ROOT};".encode())
    assert header(ts, b"traceparent").startswith(b"00-0000000100000000000000000000abcd-")


def test_outgoing_header_parses_with_aws_xray_sdk(xray_sdk: types.SimpleNamespace) -> None:
    t, _ = tracer(xray=True)
    ts = start(t, (b"x-amzn-trace-id", f"Root={ROOT};Parent={PARENT};Sampled=1".encode()))
    parsed = xray_sdk.TraceHeader.from_header_str(header(ts, b"x-amzn-trace-id").decode())
    assert (parsed.root, parsed.parent, parsed.sampled) == (ROOT, ctx_of(ts).span_hex, 1)


def test_ids_are_well_formed_and_distinct() -> None:
    t = Tracer(xray=True, otlp=False, sampler=FixedSampler(True))
    contexts = [ctx_of(start(t)) for _ in range(200)]
    assert len({c.span_id for c in contexts}) == 200
    assert len({c.xray_trace for c in contexts}) == 200
    for c in contexts:
        assert re.fullmatch(r"[0-9a-f]{16}", c.span_hex) and c.span_id != 0
        assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", c.xray_trace_id)
