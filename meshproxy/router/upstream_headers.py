"""The request head as it goes upstream: Envoy's router and connection-manager header rules, as two pure
functions over the downstream head and the route decision.

Hop-by-hop fields are dropped (RFC 9110 §7.6.1), including those the client names in `Connection`; the codec
that sends the message writes its own framing. Added or rewritten: `x-request-id` (kept, or generated),
`x-forwarded-proto` (the client's kept, else `https` on a TLS connection, `http` otherwise),
`x-envoy-expected-rq-timeout-ms`, the trace headers, `x-envoy-original-path` after a gateway rewrite, a
gateway's host rewrite (and the Host it replaced in `x-envoy-original-host`, as Envoy >= 1.35). At a gateway
the client is outside the mesh, so its `x-envoy-*` control headers are stripped; elsewhere the router's
control headers (`x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`...) are consumed: noted for
router/overrides.py, never forwarded. The caller is never appended to `x-forwarded-for`: App Mesh's Envoy did
not on any listener (use_remote_address off; checked against Envoy 1.40 rendered as App Mesh did; roadmap
#349, #413 ask for it at gateways), so a client's own header goes out as it came.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshproxy.codec.headers import (
    ENVOY_CONTROL_PREFIX,
    HOP_BY_HOP,
    ROUTER_CONTROL,
    connection_tokens,
    new_request_id,
    nominates_framing_or_host,
)
from meshproxy.config.snapshot import RetryPolicy
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.events import BodyKind, Headers, RequestHead
from meshproxy.router.decide import RouteDecision


def expected_timeout(timeout: float | None, retry: RetryPolicy | None) -> float | None:
    """What `x-envoy-expected-rq-timeout-ms` announces: the per-try timeout if it is the shorter one."""
    if retry is not None and retry.per_try_timeout is not None:
        return retry.per_try_timeout if timeout is None else min(timeout, retry.per_try_timeout)
    return timeout


# What `client_fields` found, a plain tuple (a NamedTuple costs a Python frame to build; compiled, this one is
# not even allocated): (fields to forward, x-request-id, x-forwarded-for, Connection seen, x-forwarded-proto
# seen, the router control headers the client sent or None: router/overrides.py applies them).
ClientFields = tuple[Headers, bytes | None, bytes | None, bool, bool, Headers | None]

_EXPECTED_TIMEOUT = b"x-envoy-expected-rq-timeout-ms"
_NOT_FORWARDED = ROUTER_CONTROL | {_EXPECTED_TIMEOUT}  # consumed, or ours to set


def client_fields(
    head: RequestHead,
    decision: RouteDecision,
    authority: str,
    absolute_form: bool,
    direction: ListenerDirection,
) -> ClientFields:
    """The client's fields that go on, in order; hop-by-hop and proxy-owned ones are noted, not copied.
    Runs once per request, before the router applies any control header (hence apart from `upstream_head`,
    which then gets the result)."""
    # RFC 9112 §3.2.2: an absolute-form target names the authority; Host is replaced by it (as Envoy does),
    # unless a gateway route rewrites the host itself.
    host_rewrite = decision.host_rewrite
    if host_rewrite is None and absolute_form:
        host_rewrite = authority
    untrusted = direction is ListenerDirection.GATEWAY
    headers: Headers = []
    request_id = forwarded_for = control = None
    has_connection = has_forwarded_proto = False
    for name, value in head.headers:
        if name in HOP_BY_HOP:
            has_connection = has_connection or name == b"connection"
            continue
        if untrusted and name.startswith(ENVOY_CONTROL_PREFIX):
            continue  # a client outside the mesh may not steer retries or timeouts
        if name == b"host":
            if host_rewrite is not None:
                value = host_rewrite.encode()
        elif name == b"x-forwarded-for":
            forwarded_for = value
            continue
        elif name == b"x-request-id":
            request_id = value
        elif name == b"x-forwarded-proto":
            has_forwarded_proto = True
        elif name in _NOT_FORWARDED:
            if name != _EXPECTED_TIMEOUT:
                if control is None:
                    control = []
                control.append((name, value))
            continue
        headers.append((name, value))
    return headers, request_id, forwarded_for, has_connection, has_forwarded_proto, control


def upstream_head(
    head: RequestHead,
    fields: ClientFields,
    decision: RouteDecision,
    timeout: float | None,
    *,
    authority: str,
    host_present: bool,
    secure: bool,
    trace_headers: Sequence[tuple[bytes, bytes]] = (),
) -> RequestHead | None:
    """None when the request cannot go on as received: its `Connection` names Content-Length,
    Transfer-Encoding or Host (the client gets 400, as Envoy answers `Connection: host`). `decision` and
    `timeout` are the ones in effect (after the client's control headers); `secure`: the client's connection
    is TLS (terminated by this listener)."""
    headers, request_id, forwarded_for, has_connection, has_forwarded_proto, _ = fields
    if trace_headers:
        replaced = {name for name, _ in trace_headers}
        headers = [(n, v) for n, v in headers if n not in replaced]
        headers.extend(trace_headers)
    if has_connection:
        drop = connection_tokens(head.headers)  # names listed in Connection are hop-by-hop too
        if drop:
            if nominates_framing_or_host(drop):
                return None
            headers = [(n, v) for n, v in headers if n not in drop]
    if not host_present:  # HTTP/1.0 without Host, or an absolute-form target without one
        headers.append((b"host", (decision.host_rewrite or authority).encode("latin-1")))
    if request_id is None:
        headers.append((b"x-request-id", new_request_id()))
    if decision.original_path is not None:
        headers.append((b"x-envoy-original-path", decision.original_path.encode("latin-1")))
    if decision.original_host is not None:
        headers.append((b"x-envoy-original-host", decision.original_host.encode("latin-1")))
    if forwarded_for is not None:
        headers.append((b"x-forwarded-for", forwarded_for))
    if not has_forwarded_proto:
        # Envoy's ConnectionManagerUtility::mutateRequestHeaders: without use_remote_address a client's own
        # value is kept; else the scheme of the downstream connection (both constant tuples: no allocation)
        headers.append((b"x-forwarded-proto", b"https") if secure else (b"x-forwarded-proto", b"http"))
    expected = expected_timeout(timeout, decision.retry)
    if expected is not None:
        headers.append((b"x-envoy-expected-rq-timeout-ms", b"%d" % int(expected * 1000)))
    body = head.body
    if body is BodyKind.CHUNKED:
        headers.append((b"transfer-encoding", b"chunked"))
    if head.upgrade:
        for name, value in head.headers:
            if name == b"upgrade":
                headers.append((b"upgrade", value))
        headers.append((b"connection", b"upgrade"))
    return RequestHead(
        head.method, decision.path, headers, "1.1", True, body, head.content_length, head.upgrade
    )
