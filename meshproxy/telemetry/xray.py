"""AWS X-Ray as App Mesh's Envoy does it (spec §5.4): localized sampling, segment documents, daemon datagrams.

Sampling (Envoy `localized_sampling.cc`): rules are checked in order against the request's Host, method and
path with case-insensitive wildcards (`*` any run, `?` one character); the first match decides, else the
default rule. A rule traces up to `fixed_target` requests per second (its reservoir), then a `rate` fraction
of the rest. Without a manifest the default rule is `fixed_target=1, rate=XRAY_SAMPLING_RATE` (0.05).

Segments: one per sampled request, sent as one UDP datagram `{"format":"json","version":1}\\n<segment>` to the
daemon. Fields follow Envoy's X-Ray tracer with App Mesh's segment fields (`origin` AWS::AppMesh::Proxy,
`aws.app_mesh`), and the X-Ray segment-document rules: 16-hex `id`, `1-<8 hex>-<24 hex>` `trace_id`,
`start_time`/`end_time` in epoch seconds, `name` of at most 200 allowed characters, strings of at most 250
characters. Annotation keys use `_` instead of Envoy's `.`/`:` because X-Ray only indexes alphanumeric-and-
underscore keys for filter expressions.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from random import Random

from meshproxy.config.snapshot import Identity
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.errors import SamplingManifestError
from meshproxy.telemetry.tracing import TraceContext

DAEMON_HEADER = b'{"format":"json","version":1}\n'
ORIGIN = "AWS::AppMesh::Proxy"
MAX_NAME = 200
MAX_STRING = 250
_NAME_PUNCTUATION = frozenset("_.:/%&#=+\\-@")


# -- sampling ----------------------------------------------------------------------------------------------


def compile_wildcard(pattern: str) -> re.Pattern[str] | None:
    """X-Ray's wildcard (`*`, `?`, case-insensitive) as a regex; None for `*`, which matches everything."""
    if pattern == "*":
        return None
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class SamplingRule:
    fixed_target: int
    rate: float
    host: str = "*"
    http_method: str = "*"
    url_path: str = "*"
    description: str = ""


@dataclass(frozen=True, slots=True)
class SamplingManifest:
    default: SamplingRule
    rules: tuple[SamplingRule, ...] = ()


def default_manifest(rate: float = 0.05) -> SamplingManifest:
    """What App Mesh's agent writes for XRAY_SAMPLING_RATE: one request per second plus `rate` (spec §1.7)."""
    return SamplingManifest(SamplingRule(fixed_target=1, rate=rate))


def _rule(obj: object, where: str, *, custom: bool) -> SamplingRule:
    if not isinstance(obj, dict):
        raise SamplingManifestError(f"{where} must be an object")
    fixed = obj.get("fixed_target")
    if isinstance(fixed, bool) or not isinstance(fixed, int | float) or fixed < 0 or int(fixed) != fixed:
        raise SamplingManifestError(f"{where}.fixed_target must be a non-negative integer, got {fixed!r}")
    rate = obj.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise SamplingManifestError(f"{where}.rate must be a number between 0 and 1, got {rate!r}")
    fields: dict[str, str] = {}
    for key in ("host", "http_method", "url_path", "description") if custom else ("description",):
        value = obj.get(key, "*" if key != "description" else "")
        if not isinstance(value, str):
            raise SamplingManifestError(f"{where}.{key} must be a string, got {value!r}")
        fields[key] = value
    return SamplingRule(fixed_target=int(fixed), rate=float(rate), **fields)


def parse_manifest(document: object) -> SamplingManifest:
    """Validate a localized sampling-rules document (version 2 only, as App Mesh's agent requires)."""
    if not isinstance(document, dict):
        raise SamplingManifestError("the manifest must be a JSON object")
    if document.get("version") != 2:
        raise SamplingManifestError(f'"version" must be 2, got {document.get("version")!r}')
    if "default" not in document:
        raise SamplingManifestError('"default" rule is required')
    default = _rule(document["default"], "default", custom=False)
    rules_doc = document.get("rules", [])
    if not isinstance(rules_doc, list):
        raise SamplingManifestError('"rules" must be a list')
    rules = tuple(_rule(r, f"rules[{i}]", custom=True) for i, r in enumerate(rules_doc))
    return SamplingManifest(default, rules)


def load_manifest(path: str) -> SamplingManifest:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as exc:
        raise SamplingManifestError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SamplingManifestError(f"{path!r} is not valid JSON: {exc}") from None
    try:
        return parse_manifest(document)
    except SamplingManifestError as exc:
        raise SamplingManifestError(f"{path}: {exc}") from None


class _Reservoir:
    """`fixed_target` takes per whole second of the monotonic clock (Envoy's Reservoir)."""

    __slots__ = ("second", "taken")

    def __init__(self) -> None:
        self.second = -1
        self.taken = 0

    def take(self, now: float, per_second: int) -> bool:
        second = int(now)
        if second != self.second:
            self.second = second
            self.taken = 0
        if self.taken < per_second:
            self.taken += 1
            return True
        return False


class _CompiledRule:
    __slots__ = ("host", "method", "path", "reservoir", "rule")

    def __init__(self, rule: SamplingRule) -> None:
        self.rule = rule
        self.host = compile_wildcard(rule.host)
        self.method = compile_wildcard(rule.http_method)
        self.path = compile_wildcard(rule.url_path)
        self.reservoir = _Reservoir()

    def applies(self, host: str, method: str, path: str) -> bool:
        return (
            (self.host is None or self.host.fullmatch(host) is not None)
            and (self.method is None or self.method.fullmatch(method) is not None)
            and (self.path is None or self.path.fullmatch(path) is not None)
        )


class LocalizedSampler:
    """Envoy's localized sampling strategy over one manifest. Clock and random are seams for tests."""

    def __init__(
        self,
        manifest: SamplingManifest,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Random | None = None,
    ) -> None:
        self.manifest = manifest
        self._rules = [_CompiledRule(r) for r in manifest.rules]
        self._default = _CompiledRule(manifest.default)
        self._monotonic = monotonic
        self._random = (rng or Random()).random

    def should_trace(self, host: str, method: str, path: str) -> bool:
        for rule in self._rules:
            if rule.applies(host, method, path):
                return self._decide(rule)
        return self._decide(self._default)

    def _decide(self, compiled: _CompiledRule) -> bool:
        rule = compiled.rule
        if rule.fixed_target and compiled.reservoir.take(self._monotonic(), rule.fixed_target):
            return True
        return rule.rate > 0 and self._random() < rule.rate


# -- segments ----------------------------------------------------------------------------------------------


def segment_name(name: str) -> str:
    """A valid X-Ray segment name: disallowed characters become `_`, at most 200 characters."""
    out = []
    for c in name:
        cat = unicodedata.category(c)
        ok = cat[0] in "LN" or c.isspace() or c in _NAME_PUNCTUATION
        out.append(c if ok else "_")
    return "".join(out)[:MAX_NAME] or "meshproxy"


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Per-proxy values every segment carries (XRAY_SEGMENT_NAME and App Mesh's segment fields)."""

    name: str
    mesh_name: str
    resource_name: str
    node_id: str

    @classmethod
    def from_identity(cls, identity: Identity, segment: str) -> SegmentConfig:
        default = identity.mesh_name + "/" + identity.name
        return cls(segment_name(segment or default), identity.mesh_name, identity.name, identity.node_id)


def _host(address: str | None) -> str | None:
    if not address:
        return None
    if address.startswith("["):
        return address[1 : address.find("]")] or None
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host.count(":") == 0:
        return host
    return address


def _s(value: str) -> str:
    return value if len(value) <= MAX_STRING else value[:MAX_STRING]


def build_segment(record: RequestSummary, ctx: TraceContext, config: SegmentConfig) -> dict[str, object]:
    """The X-Ray segment document of one finished request."""
    headers: Mapping[str, str] = record.request_headers
    segment: dict[str, object] = {
        "name": config.name,
        "id": ctx.span_hex,
        "trace_id": ctx.xray_trace_id,
        "start_time": record.start_time,
        "end_time": record.start_time + record.duration_ms / 1000.0,
        "origin": ORIGIN,
    }
    if ctx.xray_parent is not None:
        segment["parent_id"] = ctx.xray_parent
    segment["aws"] = {"app_mesh": {"mesh_name": config.mesh_name, "virtual_node_name": config.resource_name}}
    authority = record.authority or headers.get("host") or "-"
    request: dict[str, object] = {
        "method": record.method,
        "url": _s(record.scheme + "://" + authority + (record.original_path or record.path)),
    }
    # As Envoy's X-Ray tracer writes them (tracer.cc, checked against Envoy 1.40 with App Mesh's HCM): the
    # user_agent tag is always set, "-" without a User-Agent; client_ip is the request's X-Forwarded-For
    # value as it stands (not its first address) with x_forwarded_for true, else the peer's address with
    # x_forwarded_for false.
    request["user_agent"] = _s(headers.get("user-agent") or "-")
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        request["client_ip"] = _s(forwarded)
        request["x_forwarded_for"] = True
    else:
        client = _host(record.downstream_remote_address)
        if client:
            request["client_ip"] = client
            request["x_forwarded_for"] = False
    code = record.response_code
    response: dict[str, object] = {"content_length": record.bytes_sent}
    if code:
        response["status"] = code
    segment["http"] = {"request": request, "response": response}
    if 400 <= code < 500:
        segment["error"] = True
        if code == 429:
            segment["throttle"] = True
    elif code >= 500 or code == 0:
        segment["fault"] = True
    annotations: dict[str, object] = {
        "direction": record.direction,
        "component": "proxy",
        "node_id": _s(config.node_id),
        "http_protocol": record.protocol,
        "response_flags": record.response_flags,
        "request_size": record.bytes_received,
    }
    if record.upstream_cluster:
        annotations["upstream_cluster"] = _s(record.upstream_cluster)
    if record.upstream_host:
        annotations["upstream_address"] = _s(record.upstream_host)
    request_id = headers.get("x-request-id")
    if request_id:
        annotations["guid_x_request_id"] = _s(request_id)
    segment["annotations"] = annotations
    return segment


def encode_datagram(segment: dict[str, object]) -> bytes:
    """The daemon's UDP wire form: the JSON header line, then the segment (spec §5.4, [XRAY-send])."""
    return DAEMON_HEADER + json.dumps(segment, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
