"""Where a request goes: a pure decision per listener direction, from the snapshot and the request head.

- ingress: the virtual-node listener of the connection's original port sends everything to the local app;
- egress: `Host` (or the absolute-form authority) picks the virtual service, its routes pick a weighted
  target (spec §4.5); unknown hosts pass through to their original destination under ALLOW_ALL;
- gateway: a gateway route (with App Mesh's default rewrites, spec §4.7) picks a virtual service, whose own
  routes are then applied in-process (App Mesh did this through a self-redirect to the egress listener).

The result is a `RouteDecision` or the local reply that answers the request instead. No I/O: the original
destination is read (SO_ORIGINAL_DST costs a syscall) only if the decision needs it.
"""

from __future__ import annotations

from typing import Final, Protocol

from meshproxy.codec.grpc import grpc_timeout_of
from meshproxy.config.snapshot import EgressFilter, RetryPolicy, RouteEntry, RouteTable, Snapshot
from meshproxy.core import outcomes
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.events import RequestHead
from meshproxy.core.outcomes import LocalReply
from meshproxy.router.match import find_virtual_host, pick_weighted, select_route

PASSTHROUGH_TIMEOUT_S = 15.0


class OriginalDestination(Protocol):
    """Where a redirected connection was going (read lazily)."""

    @property
    def original_destination(self) -> tuple[str, int] | None: ...

    @property
    def original_port(self) -> int | None: ...


class RouteDecision:
    """A routed request. One is built per request: a slotted class with `Final` fields (immutable as far as
    mypy is concerned; compiled with mypyc, at run time as well), which costs less to build than a NamedTuple
    or a frozen dataclass in either form."""

    __slots__ = (
        "cluster",
        "host_rewrite",
        "idle_timeout",
        "original_host",
        "original_path",
        "passthrough",
        "path",
        "retry",
        "route_name",
        "target_node",
        "timeout",
        "virtual_service",
    )  # fmt: skip

    def __init__(
        self,
        cluster: str,
        route_name: str,
        timeout: float | None,
        idle_timeout: float | None,
        path: str,
        retry: RetryPolicy | None = None,
        virtual_service: str = "",
        target_node: str = "",
        passthrough: tuple[str, int] | None = None,
        original_path: str | None = None,
        host_rewrite: str | None = None,
        original_host: str | None = None,
    ) -> None:
        self.cluster: Final = cluster  # "" when `passthrough` is set
        self.route_name: Final = route_name
        self.timeout: Final = timeout  # per request; None = disabled
        self.idle_timeout: Final = idle_timeout
        self.path: Final = path  # as sent upstream (after a gateway rewrite)
        self.retry: Final = retry
        self.virtual_service: Final = virtual_service
        self.target_node: Final = target_node
        self.passthrough: Final = passthrough  # ALLOW_ALL: the original destination
        self.original_path: Final = original_path  # before a gateway rewrite (x-envoy-original-path)
        self.host_rewrite: Final = host_rewrite
        self.original_host: Final = original_host  # before a gateway route's Host rewrite

    def with_policy(self, retry: RetryPolicy | None, timeout: float | None) -> RouteDecision:
        """This decision with another retry policy and timeout (a client's control headers: overrides.py)."""
        return RouteDecision(
            self.cluster,
            self.route_name,
            timeout,
            self.idle_timeout,
            self.path,
            retry,
            self.virtual_service,
            self.target_node,
            self.passthrough,
            self.original_path,
            self.host_rewrite,
            self.original_host,
        )

    def __repr__(self) -> str:
        return f"<RouteDecision {self.route_name or '-'} -> {self.cluster or self.passthrough} {self.path}>"


def request_timeout(decision: RouteDecision, head: RequestHead) -> float | None:
    """The route's per-request timeout, or a gRPC client's shorter deadline (`grpc-timeout`)."""
    timeout = decision.timeout
    if head.http_version == "2":
        deadline = grpc_timeout_of(head.headers)
        if deadline is not None and (timeout is None or deadline < timeout):
            return deadline
    return timeout


def decide(
    direction: ListenerDirection,
    snapshot: Snapshot,
    listener_port: int,
    head: RequestHead,
    authority: str,
    path: str,
    origin: OriginalDestination,
) -> RouteDecision | LocalReply:
    if direction is ListenerDirection.INGRESS:
        return decide_ingress(snapshot, listener_port, path, origin)
    if direction is ListenerDirection.GATEWAY:
        return decide_gateway(snapshot, listener_port, head, authority, path, origin)
    return decide_egress(snapshot, head, authority, path, origin)


def decide_ingress(
    snapshot: Snapshot, listener_port: int, path: str, origin: OriginalDestination
) -> RouteDecision | LocalReply:
    listeners = snapshot.ingress
    if not listeners:
        return outcomes.NO_ROUTE
    if len(listeners) == 1:
        ingress = listeners[0]  # one listener: the original port changes nothing, don't pay to read it
    else:
        port = origin.original_port
        if port is None or port == listener_port:
            ingress = listeners[0]  # a direct connection to the ingress port (tests, plain hosts)
        else:
            found = [listener for listener in listeners if listener.port == port]
            if not found:
                return outcomes.NO_ROUTE
            ingress = found[0]
    return RouteDecision(ingress.cluster, ingress.cluster, ingress.timeout, ingress.idle_timeout, path)


def decide_egress(
    snapshot: Snapshot, head: RequestHead, authority: str, path: str, origin: OriginalDestination
) -> RouteDecision | LocalReply:
    vhost = find_virtual_host(snapshot.egress_routes, authority)
    if vhost is None:
        if snapshot.egress_filter is not EgressFilter.ALLOW_ALL:
            return outcomes.NO_ROUTE
        destination = origin.original_destination or authority_address(authority)
        if destination is None:
            return outcomes.NO_ROUTE
        return RouteDecision("", "passthrough", PASSTHROUGH_TIMEOUT_S, None, path, passthrough=destination)
    port = request_port(authority, origin) if vhost.matches_port else None
    route = select_route(vhost, head.method, path, head.headers, port)
    return _routed(route, vhost.name, path)


def decide_gateway(
    snapshot: Snapshot,
    listener_port: int,
    head: RequestHead,
    authority: str,
    path: str,
    origin: OriginalDestination,
) -> RouteDecision | LocalReply:
    gateway = next((g for g in snapshot.gateway if g.port == listener_port), None)
    matched = gateway_route(gateway.routes if gateway else None, head, authority, path)
    if matched is None:
        return outcomes.NO_ROUTE
    gateway_entry, new_path = matched
    vhost = find_virtual_host(snapshot.egress_routes, gateway_entry.virtual_service)
    if vhost is None:  # validation guarantees the target exists; be safe anyway
        return outcomes.NO_ROUTE
    port = request_port(authority, origin) if vhost.matches_port else None
    route = select_route(vhost, head.method, new_path, head.headers, port)
    hostname = gateway_entry.rewrite.hostname if gateway_entry.rewrite is not None else None
    return _routed(
        route,
        vhost.name,
        new_path,
        original_path=path if new_path != path else None,
        host_rewrite=hostname,
        original_host=authority if hostname is not None else None,
    )


def _routed(
    route: RouteEntry | None,
    virtual_service: str,
    path: str,
    original_path: str | None = None,
    host_rewrite: str | None = None,
    original_host: str | None = None,
) -> RouteDecision | LocalReply:
    if route is None:
        return outcomes.NO_ROUTE
    target = pick_weighted(route)
    if target is None:
        return outcomes.NO_HEALTHY_UPSTREAM  # every target has weight 0
    return RouteDecision(
        target.cluster,
        route.name,
        route.timeout,
        route.idle_timeout,
        path,
        route.retry,
        virtual_service,
        target.virtual_node,
        None,
        original_path,
        host_rewrite,
        original_host,
    )


def gateway_route(
    table: RouteTable | None, head: RequestHead, authority: str, path: str
) -> tuple[RouteEntry, str] | None:
    """The gateway route matching the request and the path after its rewrite (spec §4.7)."""
    if table is None or not table.virtual_hosts:
        return None
    host = authority.rsplit(":", 1)[0] if authority and not authority.endswith("]") else authority
    route = select_route(table.virtual_hosts[0], head.method, path, head.headers, None, host.lower())
    if route is None:
        return None
    rewrite = route.rewrite
    if rewrite is None:
        return route, path
    path_only, mark, query = path.partition("?")
    if rewrite.exact is not None:
        path_only = rewrite.exact
    elif rewrite.prefix is not None and route.match.prefix is not None:
        rest = path_only[len(route.match.prefix) :]
        # One slash at the junction: App Mesh renders merge_slashes, and `/api/x` with the default rewrite
        # "/" means `/x`, not `//x`.
        if rewrite.prefix.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        path_only = rewrite.prefix + rest
    return route, path_only + mark + query


def request_port(authority: str, origin: OriginalDestination) -> int | None:
    """The port a route's `match.port` is compared with: the original destination, else Host's port."""
    port = origin.original_port
    if port is not None:
        return port
    address = authority_address(authority) if ":" in authority else None
    return address[1] if address is not None else None


def authority_address(authority: str) -> tuple[str, int] | None:
    """(host, port) of an authority, port 80 when absent; None if it does not parse."""
    if not authority:
        return None
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "80"
    else:
        host, _, port = authority.partition(":")
        port = port or "80"
    try:
        return host, int(port)
    except ValueError:
        return None
