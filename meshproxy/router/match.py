"""Route selection: pure functions over the compiled route table (spec §4.5). No I/O, no allocation beyond
what a match needs; regexes were compiled when the snapshot was built."""

from __future__ import annotations

import random
from urllib.parse import unquote_plus

from meshproxy.config.snapshot import (
    RouteEntry,
    RouteMatch,
    RouteTable,
    StringMatchKind,
    ValueMatch,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.core.events import Headers


def find_virtual_host(table: RouteTable, authority: str) -> VirtualHost | None:
    """Exact `name` / `name:port` first (Envoy's domains), then the bare host name."""
    authority = authority.lower()
    vhost = table.by_domain.get(authority)
    if vhost is None and ":" in authority and not authority.endswith("]"):
        vhost = table.by_domain.get(authority.rsplit(":", 1)[0])
    return vhost


def split_target(target: str) -> tuple[str | None, str]:
    """(authority, path) of a request-target; absolute-form carries the authority (HTTP_PROXY use)."""
    if target.startswith("/"):
        return None, target
    scheme_end = target.find("://")
    if scheme_end < 0:
        return None, target  # asterisk-form or authority-form: routed by Host
    rest = target[scheme_end + 3 :]
    end = len(rest)
    for delimiter in "/?#":  # RFC 3986 §3.2: the authority ends at the first of these
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    path = rest[end:].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    return rest[:end], path


def value_matches(match: ValueMatch, value: str | None) -> bool:
    kind = match.kind
    if value is None:
        result = False
    elif kind is StringMatchKind.EXACT:
        result = value == match.value
    elif kind is StringMatchKind.PREFIX:
        result = value.startswith(match.value)
    elif kind is StringMatchKind.SUFFIX:
        result = value.endswith(match.value)
    elif kind is StringMatchKind.REGEX:
        assert match.pattern is not None
        result = match.pattern.fullmatch(value) is not None
    elif kind is StringMatchKind.RANGE:
        text = value.strip()
        digits = text[1:] if text[:1] in ("-", "+") else text
        if (
            digits.isascii() and digits.isdigit()
        ):  # as Envoy's SimpleAtoi: sign and digits (int() takes "1_0")
            result = match.range_start <= int(text) < match.range_end
        else:
            result = False
    else:  # PRESENT
        result = True
    return result != match.invert


def header_value(headers: Headers, name: str) -> str | None:
    """All values of a header joined with ',' (as Envoy matches multi-valued headers), or None."""
    key = name.encode()
    found: bytes | None = None
    for n, v in headers:
        if n == key:
            found = v if found is None else found + b"," + v
    return None if found is None else found.decode("latin-1")


def _query_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params.setdefault(unquote_plus(name), unquote_plus(value))
    return params


def route_matches(
    match: RouteMatch, method: str, path: str, headers: Headers, port: int | None, host: str | None = None
) -> bool:
    """`host` is the request's host name without port, lower-cased (gateway routes match on it)."""
    if match.method is not None and match.method != method:
        return False
    if match.hostname_exact is not None and host != match.hostname_exact:
        return False
    if match.hostname_suffix is not None and (host is None or not host.endswith(match.hostname_suffix)):
        return False
    if match.port is not None and port is not None and match.port != port:
        return False
    path_only, _, query = path.partition("?")
    if match.prefix is not None and not path_only.startswith(match.prefix):
        return False
    if match.path_exact is not None and path_only != match.path_exact:
        return False
    if match.path_regex is not None and match.path_regex.fullmatch(path_only) is None:
        return False
    if match.grpc_service is not None:
        service, _, grpc_method = path_only[1:].partition("/")
        if service != match.grpc_service:
            return False
        if match.grpc_method is not None and grpc_method != match.grpc_method:
            return False
    for header in match.headers:
        if not value_matches(header, header_value(headers, header.name)):
            return False
    if match.query:
        params = _query_params(query)
        for param in match.query:
            if not value_matches(param, params.get(param.name)):
                return False
    return True


def select_route(
    vhost: VirtualHost,
    method: str,
    path: str,
    headers: Headers,
    port: int | None = None,
    host: str | None = None,
) -> RouteEntry | None:
    """First route, in compiled order, whose match accepts the request."""
    for route in vhost.routes:
        if route_matches(route.match, method, path, headers, port, host):
            return route
    return None


def pick_weighted(route: RouteEntry, rng: random.Random | None = None) -> WeightedCluster | None:
    """A target in proportion to its weight; weight-0 targets never get traffic. None if all weights are 0."""
    total = route.total_weight
    targets = route.targets
    if len(targets) == 1:
        return targets[0] if total > 0 else None
    if total <= 0:
        return None
    point = (rng or random).random() * total
    for target in targets:
        point -= target.weight
        if point < 0:
            return target
    for target in reversed(targets):  # float rounding at the very top of the range
        if target.weight > 0:
            return target
    return None
