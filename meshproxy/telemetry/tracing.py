"""Trace context: X-Amzn-Trace-Id and W3C traceparent in, one span id out, both headers kept consistent.

One request through the proxy is one span. `Tracer.start` reads the downstream headers, decides sampling,
draws this proxy's span id and returns the headers to set on the upstream request:

- `x-amzn-trace-id: Root=<trace>;Parent=<span id>;Sampled=<0|1>` when X-Ray tracing is on (spec §5.4): a
  `Sampled=0` decision propagates too; unknown keys such as `Lineage` are carried over, ALB's `Self` is not;
- `traceparent: 00-<trace id>-<span id>-<flags>` whenever the request carried a valid traceparent (always,
  even with no tracer: W3C propagation) or OTLP export is on; `tracestate` is carried over unchanged.

The X-Ray and W3C trace ids are the same 128 bits (X-Ray `1-<8 hex>-<24 hex>` <-> W3C 32 hex): when only one
header arrives the other is derived from it, and both name this proxy's span as parent, so X-Ray and
OpenTelemetry backends see one trace. When both arrive with different trace ids each keeps its own.

Sampling: X-Ray on -> the header's `Sampled=0|1`, else the traceparent's sampled flag, else the localized
rules (`xray.LocalizedSampler`). OTLP only -> the parent's flag, else sampled (OpenTelemetry's default
parent-based always-on sampler). Propagation only -> the incoming flags unchanged.

Per-request cost: one pass over the header list, at most two small parses, two `getrandbits` calls and one or
two `bytes % tuple` formats. No uuid, no regex compile, no I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from random import Random
from typing import NamedTuple, Protocol

_MASK96 = (1 << 96) - 1
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_HEX = frozenset("0123456789abcdef")


class Sampler(Protocol):
    def should_trace(self, host: str, method: str, path: str) -> bool: ...


class TraceStart(NamedTuple):
    """What `Telemetry.start_trace` gives the data plane.

    `context` goes into `RequestSummary.trace`; `upstream_headers` (lower-case names) are set on the upstream
    request, replacing any header of the same name. A NamedTuple rather than a frozen dataclass because one
    is built per request and it is ~4x cheaper to construct; it is just as immutable.
    """

    context: object
    upstream_headers: tuple[tuple[bytes, bytes], ...]


class TraceContext:
    """This proxy's span of one request. Ids are ints; the `*_id` properties give their wire forms."""

    __slots__ = ("direction", "sampled", "span_id", "w3c_parent", "w3c_trace", "xray_parent", "xray_trace")

    def __init__(
        self,
        direction: str,
        span_id: int,
        xray_trace: int,
        xray_parent: str | None,
        w3c_trace: int,
        w3c_parent: int | None,
        sampled: bool,
    ) -> None:
        self.direction = direction
        self.span_id = span_id
        self.xray_trace = xray_trace
        self.xray_parent = xray_parent
        self.w3c_trace = w3c_trace
        self.w3c_parent = w3c_parent
        self.sampled = sampled

    def __repr__(self) -> str:
        return f"<TraceContext {self.xray_trace_id} span={self.span_hex} sampled={self.sampled}>"

    @property
    def xray_trace_id(self) -> str:
        return f"1-{self.xray_trace >> 96:08x}-{self.xray_trace & _MASK96:024x}"

    @property
    def w3c_trace_id(self) -> str:
        return format(self.w3c_trace, "032x")

    @property
    def span_hex(self) -> str:
        return format(self.span_id, "016x")


class XRayHeader(NamedTuple):
    """A parsed X-Amzn-Trace-Id: `root` None when absent or malformed; `extra` (`;k=v...`) to carry over."""

    root: int | None
    parent: str | None
    sampled: int | None  # 1, 0, or None for absent / "?"
    extra: bytes


def parse_xray_root(text: str) -> int | None:
    """`1-<8 hex>-<24 hex>` -> the 128-bit trace id, or None."""
    if len(text) != 35 or text[0:2] != "1-" or text[10] != "-":
        return None
    text = text.lower()
    hi, lo = text[2:10], text[11:]
    if not (_HEX.issuperset(hi) and _HEX.issuperset(lo)):
        return None
    return int(hi, 16) << 96 | int(lo, 16)


def parse_xray_header(value: bytes) -> XRayHeader:
    """Parse X-Amzn-Trace-Id as Envoy does: keys case-insensitive, `;`-separated `key=value` tokens."""
    root: int | None = None
    parent: str | None = None
    sampled: int | None = None
    extra: list[str] | None = None
    for part in value.decode("latin-1").split(";"):
        key, _, val = part.partition("=")
        key = key.strip().lower()
        if key == "root":
            root = parse_xray_root(val.strip())
        elif key == "parent":
            low = val.strip().lower()
            parent = low if len(low) == 16 and _HEX.issuperset(low) else None
        elif key == "sampled":
            val = val.strip()
            sampled = 1 if val == "1" else 0 if val == "0" else None
        elif key and key != "self":
            if extra is None:
                extra = []
            extra.append(";" + part.strip())
    return XRayHeader(root, parent, sampled, "".join(extra).encode("latin-1") if extra else b"")


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """W3C traceparent -> (trace id, parent id, flags), or None when invalid (spec: all-zero ids, version ff,
    extra fields on version 00)."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version = m.group(1)
    if version == b"ff" or (version == b"00" and m.group(5) is not None):
        return None
    trace, parent = int(m.group(2), 16), int(m.group(3), 16)
    if not trace or not parent:
        return None
    return trace, parent, int(m.group(4), 16)


class Tracer:
    """Decides and propagates trace context for each request (see the module docstring)."""

    def __init__(
        self,
        *,
        xray: bool,
        otlp: bool,
        sampler: Sampler | None,
        clock: Callable[[], float] = time.time,
        rng: Random | None = None,
    ) -> None:
        self.xray = xray
        self.otlp = otlp
        self.sampler = sampler
        self._clock = clock
        self._getrandbits = (rng or Random()).getrandbits

    def start(
        self, direction: str, headers: Sequence[tuple[bytes, bytes]], method: str, authority: str, path: str
    ) -> TraceStart | None:
        xray_value = tp_value = ts_value = None
        for name, value in headers:
            if name == b"x-amzn-trace-id":
                xray_value = value
            elif name == b"traceparent":
                tp_value = value
            elif name == b"tracestate":
                ts_value = value
        tracing = self.xray or self.otlp
        if tp_value is None and not tracing:
            return None
        tp = parse_traceparent(tp_value) if tp_value is not None else None
        if tp is None and not tracing:
            return None
        xh = parse_xray_header(xray_value) if xray_value is not None and tracing else None

        span = self._getrandbits(64) or 1
        if xh is not None and xh.root is not None:
            xray_trace: int = xh.root
            xray_parent = xh.parent
        elif tp is not None:
            xray_trace, xray_parent = tp[0], format(tp[1], "016x")
        else:
            xray_trace = (int(self._clock()) & 0xFFFFFFFF) << 96 | self._getrandbits(96)
            xray_parent = None
        w3c_parent: int | None
        if tp is not None:
            w3c_trace, w3c_parent, flags = tp
        else:
            w3c_trace = xray_trace
            w3c_parent = int(xray_parent, 16) if xray_parent is not None else None
            flags = 0

        if self.xray:
            if xh is not None and xh.sampled is not None:
                sampled = xh.sampled == 1
            elif tp is not None:
                sampled = bool(flags & 1)
            else:
                assert self.sampler is not None
                sampled = self.sampler.should_trace(authority, method, path)
        elif self.otlp:
            if tp is not None:
                sampled = bool(flags & 1)
            elif xh is not None and xh.root is not None and xh.sampled is not None:
                sampled = xh.sampled == 1
            else:
                sampled = True
        else:
            sampled = bool(flags & 1)

        upstream: list[tuple[bytes, bytes]] = []
        if self.xray:
            upstream.append(
                (
                    b"x-amzn-trace-id",
                    b"Root=1-%08x-%024x;Parent=%016x;Sampled=%d%s"
                    % (
                        xray_trace >> 96,
                        xray_trace & _MASK96,
                        span,
                        sampled,
                        xh.extra if xh is not None else b"",
                    ),
                )
            )
        if tp is not None or self.otlp:
            if tracing:
                flags = (flags & 0xFE) | sampled
            upstream.append((b"traceparent", b"00-%032x-%016x-%02x" % (w3c_trace, span, flags)))
            if ts_value is not None:
                upstream.append((b"tracestate", ts_value))
        context = TraceContext(direction, span, xray_trace, xray_parent, w3c_trace, w3c_parent, sampled)
        return TraceStart(context, tuple(upstream))
