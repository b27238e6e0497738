"""The router: one `UpstreamRequest` per downstream request, from route decision to the last response byte.

It decides synchronously (route, target, host, retry) and drives the I/O through callbacks from the pool, the
upstream connection and the downstream connection. States: ROUTING -> WAITING (pool / DNS / back-off) ->
FORWARDING (upstream attached) -> RESPONDING (response head sent downstream) -> DONE, or TUNNEL after an
accepted Upgrade. Envoy semantics: the per-request timeout starts when the downstream request is complete;
a per-try timeout bounds each attempt; retries avoid hosts already tried; bodies up to 1 MiB are replayable.
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import TYPE_CHECKING

from meshproxy.config.snapshot import (
    EgressFilter,
    GatewayListener,
    ListenerProtocol,
    RetryPolicy,
    RouteEntry,
    RouteTable,
)
from meshproxy.http import local_reply
from meshproxy.http.codec import (
    BodyKind,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgraded,
)
from meshproxy.http.grpc import grpc_status_of, grpc_timeout_of
from meshproxy.http.headers import (
    ENVOY_CONTROL_PREFIX,
    HOP_BY_HOP,
    connection_tokens,
    new_request_id,
    nominates_framing_or_host,
)
from meshproxy.http.local_reply import LocalReply, ResponseFlag
from meshproxy.listeners.direction import ListenerDirection
from meshproxy.router.match import find_virtual_host, header_value, pick_weighted, select_route, split_target
from meshproxy.router.retry import (
    RETRY_BUFFER_LIMIT,
    AttemptFailure,
    backoff_delay,
    should_retry_failure,
    should_retry_status,
)
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.host import Host
from meshproxy.upstream.pool import Acquire

if TYPE_CHECKING:
    from meshproxy.router.stream import ConnectionPool, Downstream, Upstream
    from meshproxy.telemetry.stats import ClusterStats
    from meshproxy.telemetry.tracing import TraceStart

_FAILURE_REPLY: dict[AttemptFailure, LocalReply] = {
    AttemptFailure.CONNECT_FAILURE: local_reply.CONNECT_FAILURE,
    AttemptFailure.RESET: local_reply.CONNECTION_TERMINATION,
    AttemptFailure.REFUSED_STREAM: local_reply.CONNECTION_TERMINATION,
    AttemptFailure.PER_TRY_TIMEOUT: local_reply.UPSTREAM_TIMEOUT,
    AttemptFailure.OVERFLOW: local_reply.OVERFLOW,
    AttemptFailure.NO_HEALTHY_UPSTREAM: local_reply.NO_HEALTHY_UPSTREAM,
}
_PASSTHROUGH_TIMEOUT_S = 15.0
_BUFFER_HIGH_WATER = 64 * 1024  # request bytes held while no upstream is attached before reading pauses


class StreamState(enum.Enum):
    ROUTING = "routing"
    WAITING = "waiting"
    FORWARDING = "forwarding"
    RESPONDING = "responding"
    TUNNEL = "tunnel"
    DONE = "done"


class UpstreamRequest:
    """The router filter for one request. Implements the pool's `PoolWaiter` and the connection's
    `UpstreamStream` callbacks."""

    __slots__ = (
        "attempt_start",
        "authority",
        "body",
        "body_size",
        "bytes_received",
        "bytes_sent",
        "cluster",
        "cluster_stats",
        "connection",
        "down",
        "down_paused",
        "flags",
        "head",
        "host",
        "host_missing",
        "host_rewrite",
        "idle_timeout",
        "last_activity",
        "original_host",
        "original_path",
        "path",
        "pool",
        "replayable",
        "request_complete",
        "response_started",
        "response_status",
        "retries",
        "retry",
        "route_name",
        "service_time_ms",
        "start",
        "state",
        "switch_head",
        "target_node",
        "timeout",
        "timer",
        "trace",
        "tried",
        "try_timer",
        "tunnel_eofs",
        "upstream_head",
        "virtual_service",
    )  # fmt: skip

    def __init__(self, down: Downstream, head: RequestHead) -> None:
        self.down = down
        self.head = head
        self.state = StreamState.ROUTING
        self.cluster: ClusterRuntime | None = None
        self.cluster_stats: ClusterStats | None = None
        self.retry: RetryPolicy | None = None
        self.timeout: float | None = None
        self.route_name = ""
        self.upstream_head: RequestHead | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.replayable = True
        self.request_complete = False
        self.connection: Upstream | None = None
        self.pool: ConnectionPool | None = None
        self.host: Host | None = None
        self.tried: tuple[Host, ...] = ()
        self.retries = 0
        self.attempt_start = 0.0
        self.service_time_ms = -1
        self.timer: asyncio.TimerHandle | None = None
        self.try_timer: asyncio.TimerHandle | None = None
        self.flags: list[str] = []
        self.response_status = 0
        self.response_started = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.start = time.monotonic()
        self.down_paused = False
        self.virtual_service = ""
        self.target_node = ""
        self.authority = ""
        self.path = ""
        self.trace: TraceStart | None = None
        self.switch_head: ResponseHead | None = None
        self.tunnel_eofs = 0
        self.original_path: str | None = None  # before a gateway rewrite (x-envoy-original-path)
        self.original_host: str | None = None  # before a gateway route's Host rewrite (x-envoy-original-host)
        self.idle_timeout: float | None = None  # the route's (or ingress listener's) `idle`; None = disabled
        self.last_activity = self.start
        self.host_rewrite: str | None = None
        self.host_missing = False  # no Host line to rewrite: HTTP/1.0 without one, absolute-form without one

    def __repr__(self) -> str:
        return (
            f"<UpstreamRequest {self.head.method} {self.path or self.head.target} {self.state.value} "
            f"retries={self.retries} status={self.response_status}>"
        )

    # ---------------------------------------------------------------- routing (synchronous decisions)
    def begin(self) -> None:
        head = self.head
        down = self.down
        listener = down.listener
        snapshot = down.snapshot
        authority, path = split_target(head.target)
        if authority is None:
            host = header_value(head.headers, "host")
            self.host_missing = host is None
            authority = host or ""
        else:
            # RFC 9112 §3.2.2: absolute-form names the target; Host is replaced by its authority (as Envoy)
            self.host_rewrite = authority
            self.host_missing = header_value(head.headers, "host") is None
        self.authority = authority
        self.path = path
        if listener.ingress:
            port = (
                down.original_port if len(snapshot.ingress) > 1 else None
            )  # one listener: no need to read it
            ingress = listener.ingress_listener(snapshot, port)
            if ingress is None:
                self.local_reply(local_reply.NO_ROUTE)
                return
            self.cluster = listener.clusters.get(ingress.cluster)
            self.timeout = ingress.timeout
            self.idle_timeout = ingress.idle_timeout
            self.route_name = ingress.cluster
        else:
            if listener.direction is ListenerDirection.GATEWAY:
                gateway = listener.gateway_listener(snapshot)
                if gateway is not None and listener.requests_active > _gateway_capacity(gateway):
                    # The listener's connectionPool: App Mesh applied it to the gateway's self-redirect
                    # cluster, i.e. to the requests in flight through this listener.
                    listener.stats.downstream_cx_overflow += 1
                    self.local_reply(local_reply.OVERFLOW)
                    return
                # Gateway route first; its target virtual service is then routed in-process by that service's
                # own routes (App Mesh did this through a self-redirect to the egress listener).
                gateway_route = self._gateway_route(gateway.routes if gateway else None, authority, path)
                if gateway_route is None:
                    listener.http_stats.no_route += 1
                    self.local_reply(local_reply.NO_ROUTE)
                    return
                path = self.path
                vhost = find_virtual_host(snapshot.egress_routes, gateway_route.virtual_service)
                if vhost is None:  # validation guarantees the target exists; be safe anyway
                    listener.http_stats.no_route += 1
                    self.local_reply(local_reply.NO_ROUTE)
                    return
            else:
                vhost = find_virtual_host(snapshot.egress_routes, authority)
            if vhost is None:
                if snapshot.egress_filter is EgressFilter.ALLOW_ALL:
                    destination = down.original_destination or _authority_address(authority)
                    if destination is None:
                        self.local_reply(local_reply.NO_ROUTE)
                        return
                    # HTTP/2 hook: HTTP/2 clients reach unrouted destinations over HTTP/2
                    http2 = head.http_version == "2"
                    self.cluster = listener.clusters.passthrough(*destination, http2=http2)
                    self.timeout = _PASSTHROUGH_TIMEOUT_S
                    self.route_name = "passthrough"
                else:
                    listener.http_stats.no_route += 1
                    self.local_reply(local_reply.NO_ROUTE)
                    return
            else:
                port = self._request_port(authority) if vhost.matches_port else None
                route = select_route(vhost, head.method, path, head.headers, port)
                if route is None:
                    listener.http_stats.no_route += 1
                    self.local_reply(local_reply.NO_ROUTE)
                    return
                target = pick_weighted(route)
                if target is None:
                    self.local_reply(local_reply.NO_HEALTHY_UPSTREAM)
                    return
                self.cluster = listener.clusters.get(target.cluster)
                self.retry = route.retry
                self.timeout = route.timeout
                self.idle_timeout = route.idle_timeout
                self.route_name = route.name
                self.virtual_service = vhost.name
                self.target_node = target.virtual_node
        if head.http_version == "2":  # HTTP/2 hook: a gRPC deadline shorter than the route's timeout wins
            deadline = grpc_timeout_of(head.headers)
            if deadline is not None and (self.timeout is None or deadline < self.timeout):
                self.timeout = deadline
        if self.cluster is None:
            listener.http_stats.no_cluster += 1
            self.local_reply(local_reply.NO_HEALTHY_UPSTREAM)
            return
        self.cluster_stats = self.cluster.stats
        telemetry = listener.dataplane.telemetry
        if telemetry is not None:
            self.trace = telemetry.start_trace(
                listener.stat_prefix, head.headers, head.method, authority, path
            )
        self.upstream_head = self._upstream_head(path)
        if self.upstream_head is None:
            self.local_reply(local_reply.BAD_REQUEST)
            return
        if head.expect_continue:
            down.write(down.codec.encode_informational(100, []))
        self.attempt()

    def _request_port(self, authority: str) -> int | None:
        """The port a route's `match.port` is compared with: the original destination, else Host's port."""
        port = self.down.original_port
        if port is not None:
            return port
        address = _authority_address(authority) if ":" in authority else None
        return address[1] if address is not None else None

    def _gateway_route(self, table: RouteTable | None, authority: str, path: str) -> RouteEntry | None:
        """Match a gateway route and apply its rewrites (spec §4.7) to `self.path` / `self.host_rewrite`."""
        if table is None or not table.virtual_hosts:
            return None
        head = self.head
        host = authority.rsplit(":", 1)[0] if authority and not authority.endswith("]") else authority
        route = select_route(table.virtual_hosts[0], head.method, path, head.headers, None, host.lower())
        if route is None:
            return None
        rewrite = route.rewrite
        if rewrite is not None:
            path_only, mark, query = path.partition("?")
            if rewrite.exact is not None:
                path_only = rewrite.exact
            elif rewrite.prefix is not None and route.match.prefix is not None:
                rest = path_only[len(route.match.prefix) :]
                # One slash at the junction: App Mesh renders merge_slashes, and `/api/x` with the default
                # rewrite "/" means `/x`, not `//x`.
                if rewrite.prefix.endswith("/") and rest.startswith("/"):
                    rest = rest[1:]
                path_only = rewrite.prefix + rest
            new_path = path_only + mark + query
            if new_path != path:
                self.original_path = path
                self.path = new_path
            if rewrite.hostname is not None:
                self.original_host = self.authority
                self.host_rewrite = rewrite.hostname
        return route

    def _upstream_head(self, path: str) -> RequestHead | None:
        """The request as it goes upstream; None if it cannot go (Connection nominates framing or Host)."""
        head = self.head
        down = self.down
        headers: Headers = []
        request_id = forwarded_for = None
        has_connection = False
        direction = down.listener.direction
        untrusted = direction is ListenerDirection.GATEWAY
        host_rewrite = self.host_rewrite
        for name, value in head.headers:
            if name in HOP_BY_HOP:
                has_connection = has_connection or name == b"connection"
                continue
            if untrusted and name.startswith(ENVOY_CONTROL_PREFIX):
                continue  # a client outside the mesh may not steer retries or timeouts
            if host_rewrite is not None and name == b"host":
                value = host_rewrite.encode()
            if name == b"x-forwarded-for":
                forwarded_for = value
                continue
            if name == b"x-request-id":
                request_id = value
            elif name == b"x-envoy-expected-rq-timeout-ms":
                continue
            headers.append((name, value))
        trace = self.trace
        if trace is not None:
            replaced = {name for name, _ in trace.upstream_headers}
            headers = [(n, v) for n, v in headers if n not in replaced]
            headers.extend(trace.upstream_headers)
        if has_connection:
            drop = connection_tokens(head.headers)  # names listed in Connection are hop-by-hop too
            if drop:
                if nominates_framing_or_host(drop):
                    return None
                headers = [(n, v) for n, v in headers if n not in drop]
        if self.host_missing:
            headers.append((b"host", (host_rewrite or self.authority).encode("latin-1")))
        if request_id is None:
            headers.append((b"x-request-id", new_request_id()))
        if self.original_path is not None:
            headers.append((b"x-envoy-original-path", self.original_path.encode("latin-1")))
        if self.original_host is not None:
            # Envoy (>= 1.35) keeps the Host a route rewrote (a gateway's default target hostname) in
            # x-envoy-original-host; checked against Envoy 1.40.
            headers.append((b"x-envoy-original-host", self.original_host.encode("latin-1")))
        if direction is ListenerDirection.EGRESS:
            # App Mesh's Envoy never appended the caller to XFF (use_remote_address off, roadmap #349,
            # #413): the app's own header, if any, goes out as it came.
            if forwarded_for is not None:
                headers.append((b"x-forwarded-for", forwarded_for))
        else:
            peer = down.peer_ip
            headers.append((b"x-forwarded-for", forwarded_for + b", " + peer if forwarded_for else peer))
        if header_value(head.headers, "x-forwarded-proto") is None:
            headers.append((b"x-forwarded-proto", b"http"))
        expected = self.timeout
        retry = self.retry
        if retry is not None and retry.per_try_timeout is not None:
            expected = retry.per_try_timeout if expected is None else min(expected, retry.per_try_timeout)
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
        return RequestHead(head.method, path, headers, "1.1", True, body, head.content_length, head.upgrade)

    # ---------------------------------------------------------------- attempts
    def attempt(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        if not cluster.resolved:
            self.state = StreamState.WAITING
            asyncio.get_running_loop().create_task(self._attempt_when_resolved(cluster))
            return
        host = cluster.pick_host(self.tried)
        if host is None:
            self.fail(AttemptFailure.NO_HEALTHY_UPSTREAM)
            return
        self.host = host
        self.tried += (host,)
        pool = cluster.pool_for(host)
        self.attempt_start = time.monotonic()
        result, connection = pool.acquire(self)
        if result is Acquire.READY:
            assert connection is not None
            self.on_pool_ready(connection)
        elif result is Acquire.OVERFLOW:
            self.fail(AttemptFailure.OVERFLOW)
        else:
            self.state = StreamState.WAITING
            self.pool = pool

    async def _attempt_when_resolved(self, cluster: ClusterRuntime) -> None:
        try:
            async with asyncio.timeout(cluster.config.connect_timeout + 5.0):
                await cluster.wait_resolved()
        except TimeoutError:
            pass
        if self.state is StreamState.WAITING:
            self.attempt()

    def on_pool_ready(self, connection: Upstream) -> None:
        self.pool = None
        if self.state is StreamState.DONE:
            connection.release()
            return
        self.state = StreamState.FORWARDING
        self.connection = connection
        connection.attach(self)
        cluster = self.cluster
        stats = self.cluster_stats
        assert cluster is not None and stats is not None and self.upstream_head is not None
        stats.upstream_rq_total += 1
        stats.upstream_rq_active += 1
        cluster.requests_active += 1
        host = self.host
        if host is not None:
            host.rq_total += 1
            host.rq_active += 1
        codec = connection.codec
        try:
            out = [codec.encode_request_head(self.upstream_head)]
            for chunk in self.body:
                out.append(codec.encode_data(chunk))
            if self.request_complete:
                out.append(codec.encode_end())
        except ProtocolError:
            self._request_not_encodable()
            return
        if not self.replayable:
            self.body = []
        if self.request_complete:
            self._start_try_timer()
        connection.write(b"".join(out))
        if self.down_paused:
            self.down_paused = False
            self.down.resume_reading()

    def _request_not_encodable(self) -> None:
        """The upstream codec refused the request (a field holding CR, LF or NUL, a body longer than its
        Content-Length): it cannot be forwarded as received. The upstream connection, possibly mid-request,
        is closed; the client gets 400 (or a reset once its response started)."""
        self._end_attempt(reuse=False)
        if self.response_started:
            self.flags.append(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR.value)
            self.abort_downstream()
        else:
            self.local_reply(local_reply.BAD_REQUEST)

    def on_pool_failure(self, failure: AttemptFailure) -> None:
        self.pool = None
        if self.state is StreamState.DONE:
            return
        self.retry_or_fail(failure)

    def retry_or_fail(self, failure: AttemptFailure) -> None:
        policy = self.retry
        if (
            policy is not None
            and self.replayable
            and self.retries < policy.max_retries
            and should_retry_failure(policy, failure)
        ):
            self.schedule_retry()
            return
        if policy is not None and self.retries and should_retry_failure(policy, failure):
            self.flags.append(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED.value)
        self.fail(failure)

    def schedule_retry(self) -> None:
        self.retries += 1
        self.state = StreamState.WAITING
        stats = self.cluster_stats
        assert stats is not None
        stats.upstream_rq_retry += 1
        asyncio.get_running_loop().call_later(backoff_delay(self.retries), self._retry_now)

    def _retry_now(self) -> None:
        if self.state is StreamState.WAITING:
            self.attempt()

    def _end_attempt(self, reuse: bool) -> None:
        """Detach from the current upstream connection; reuse it only after a complete exchange."""
        self._cancel_try_timer()
        connection = self.connection
        if connection is None:
            return
        self.connection = None
        cluster = self.cluster
        stats = self.cluster_stats
        assert cluster is not None and stats is not None
        stats.upstream_rq_active -= 1
        cluster.requests_active -= 1
        if self.host is not None:
            self.host.rq_active -= 1
        if reuse:
            connection.release()
        else:
            connection.close()

    def fail(self, failure: AttemptFailure) -> None:
        """No (more) attempts: answer locally, or reset the downstream if the response already started."""
        self._end_attempt(reuse=False)
        stats = self.cluster_stats
        if failure is AttemptFailure.PER_TRY_TIMEOUT and stats is not None:
            stats.upstream_rq_timeout += 1
        if self.response_started:
            self.flags.append(_FAILURE_REPLY[failure].flag.value)
            self.abort_downstream()
            return
        self.local_reply(_FAILURE_REPLY[failure])

    # ---------------------------------------------------------------- timers
    def _start_timers(self) -> None:
        if self.timeout is not None and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._on_timeout)
        if self.connection is not None:
            self._start_try_timer()

    def _start_try_timer(self) -> None:
        retry = self.retry
        if retry is not None and retry.per_try_timeout is not None and self.try_timer is None:
            self.try_timer = asyncio.get_running_loop().call_later(
                retry.per_try_timeout, self._on_try_timeout
            )

    def _cancel_try_timer(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_try_timer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timeout(self) -> None:
        self.timer = None
        if self.state is StreamState.DONE or self.state is StreamState.TUNNEL:
            return
        stats = self.cluster_stats
        if stats is not None:
            stats.upstream_rq_timeout += 1
            if self.host is not None:
                self.host.rq_timeout += 1
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        self._end_attempt(reuse=False)
        if self.response_started:
            self.flags.append(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT.value)
            self.abort_downstream()
        else:
            self.local_reply(local_reply.UPSTREAM_TIMEOUT)

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        if self.state is not StreamState.FORWARDING or self.response_started:
            return
        stats = self.cluster_stats
        if stats is not None:
            stats.upstream_rq_per_try_timeout += 1
        self._end_attempt(reuse=False)
        self.retry_or_fail(AttemptFailure.PER_TRY_TIMEOUT)

    # ---------------------------------------------------------------- downstream -> upstream
    def on_request_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_activity = time.monotonic()
        if self.replayable:
            self.body.append(data)
            self.body_size += len(data)
            if self.body_size > RETRY_BUFFER_LIMIT:
                self.replayable = False
                if self.connection is not None:
                    self.body = []
        connection = self.connection
        state = self.state
        # HTTP/2 hook: the request keeps flowing after the response started (gRPC bidirectional streams)
        if connection is not None and (state is StreamState.FORWARDING or state is StreamState.RESPONDING):
            try:
                connection.write(connection.codec.encode_data(data))
            except ProtocolError:
                self._request_not_encodable()
        elif (
            self.state is not StreamState.DONE
            and not self.down_paused
            and (self.body_size > _BUFFER_HIGH_WATER or not self.replayable)
        ):
            self.down_paused = True  # no upstream yet: stop reading rather than buffer without bound
            self.down.pause_reading()

    def on_request_end(self) -> None:
        self.request_complete = True
        connection = self.connection
        state = self.state
        if connection is not None and (state is StreamState.FORWARDING or state is StreamState.RESPONDING):
            # Always call write: an HTTP/2 upstream's codec queues frames and write() is what flushes them
            # (an HTTP/1.1 connection ignores the empty end marker of a Content-Length body).
            try:
                connection.write(connection.codec.encode_end())
            except ProtocolError:
                self._request_not_encodable()
                return
        if self.state is not StreamState.DONE:
            self._start_timers()

    def on_downstream_write_paused(self) -> None:
        if self.connection is not None:
            self.connection.pause_reading()

    def on_downstream_write_resumed(self) -> None:
        if self.connection is not None:
            self.connection.resume_reading()

    def on_upstream_write_paused(self) -> None:
        if not self.down_paused:
            self.down_paused = True
            self.down.pause_reading()

    def on_upstream_write_resumed(self) -> None:
        if self.down_paused:
            self.down_paused = False
            self.down.resume_reading()

    def on_downstream_lost(self) -> None:
        """The client went away: stop everything; the upstream connection cannot be reused mid-exchange."""
        if self.state is StreamState.DONE:
            return
        self.flags.append(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION.value)
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        if self.state is StreamState.TUNNEL and self.connection is not None:
            self.connection.close()
            self.connection = None
        self._end_attempt(reuse=False)
        self._finish()

    # ---------------------------------------------------------------- upstream -> downstream
    def idle_expired(self, now: float) -> bool:
        idle = self.idle_timeout
        return (
            idle is not None
            and now - self.last_activity >= idle
            and self.state is not StreamState.DONE
            and self.state is not StreamState.TUNNEL
        )

    def on_idle_timeout(self) -> None:
        """Envoy's stream idle timeout: 408 before the response started, a reset after (flag SI)."""
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        self._end_attempt(reuse=False)
        if self.response_started:
            self.flags.append(ResponseFlag.STREAM_IDLE_TIMEOUT.value)
            self.abort_downstream()
        else:
            self.local_reply(local_reply.STREAM_IDLE_TIMEOUT)

    def on_response_events(self, events: list[Event]) -> None:
        self.last_activity = time.monotonic()
        down = self.down
        codec = down.codec
        out: list[bytes] = []
        done = False
        try:
            for index, event in enumerate(events):
                if isinstance(event, Data):
                    self.bytes_sent += len(event.data)
                    out.append(codec.encode_data(event.data))
                elif isinstance(event, ResponseHead):
                    if not self._on_response_head(event, out):
                        # Retrying this response. If it is already complete, the connection is clean and
                        # reusable (an HTTP/1.1 connection mid-response is not: it is closed).
                        complete = any(isinstance(e, EndOfMessage) for e in events[index + 1 :])
                        self._end_attempt(reuse=complete and self.request_complete)
                        self.schedule_retry()
                        return
                    if self.state is StreamState.DONE:
                        return  # answered locally (a head the downstream codec refused)
                elif isinstance(event, EndOfMessage):
                    # HTTP/2 hook: trailers (gRPC status) are relayed where the downstream can carry them
                    trailers = event.trailers
                    out.append(codec.encode_end() if trailers is None else down.encode_trailers(trailers))
                    done = True
                    break
                elif isinstance(event, Upgraded):
                    self._start_tunnel(event.trailing, out)
                    return
        except ProtocolError:
            # The downstream codec refused the body (e.g. more bytes than the head's Content-Length): what was
            # encoded goes out, then the client is reset, as Envoy resets a response it cannot complete.
            if out:
                down.write(b"".join(out))
            self.flags.append(ResponseFlag.UPSTREAM_PROTOCOL_ERROR.value)
            self._end_attempt(reuse=False)
            self.abort_downstream()
            return
        if out:
            down.write(b"".join(out))
        if done:
            self._response_complete()

    def _on_response_head(self, head: ResponseHead, out: list[bytes]) -> bool:
        status = head.status
        now = time.monotonic()
        host = self.host
        cluster = self.cluster
        assert cluster is not None and self.cluster_stats is not None
        if host is not None:
            cluster.record_response(host, status)
        if status == 101:
            self.response_status = 101
            self.service_time_ms = int((now - self.attempt_start) * 1000)
            self.switch_head = head  # sent on when the Upgraded event confirms the switch
            return True
        policy = self.retry
        # HTTP/2 hook: grpcRetryEvents read grpc-status from the headers of a trailers-only response
        grpc_status = grpc_status_of(head.headers) if policy is not None and policy.grpc_statuses else None
        retriable = should_retry_status(policy, status, grpc_status)
        if policy is not None and not self.response_started and retriable:
            stats = self.cluster_stats
            stats.count_response(status)
            stats.upstream_rq_time.record((now - self.attempt_start) * 1000.0)
            if self.replayable and self.retries < policy.max_retries:
                return False  # the caller ends this attempt and schedules the retry
            if self.retries:
                self.flags.append(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED.value)
        else:
            self.cluster_stats.count_response(status)
            if self.retries:
                self.cluster_stats.upstream_rq_retry_success += 1
        self.service_time_ms = int((now - self.attempt_start) * 1000)
        self._cancel_try_timer()
        try:
            encoded = self.down.encode_response_head(head, self.service_time_ms)
        except ProtocolError:
            # A response head the downstream codec refuses to write (CR, LF or NUL in a field): nothing was
            # sent, so the client gets Envoy's 502 for an upstream protocol error instead.
            self._end_attempt(reuse=False)
            self.local_reply(local_reply.UPSTREAM_PROTOCOL_ERROR)
            return True
        self.response_status = status
        self.response_started = True
        self.state = StreamState.RESPONDING
        out.append(encoded)
        return True

    def _start_tunnel(self, trailing: bytes, out: list[bytes]) -> None:
        """The upstream accepted the Upgrade: from here on both sides are raw byte streams."""
        down = self.down
        connection = self.connection
        self._cancel_timers()
        if self.response_status != 101 or connection is None:
            self.abort_downstream()
            return
        self.state = StreamState.TUNNEL
        self.response_started = True
        connection.start_tunnel()
        head = self.switch_head or ResponseHead(101, b"Switching Protocols", [], "1.1", False, BodyKind.NONE)
        out.insert(0, down.encode_response_head(head, self.service_time_ms))
        if trailing:
            out.append(trailing)
        down.write(b"".join(out))
        down.start_tunnel(self)

    def on_tunnel_data(self, data: bytes) -> None:
        """Upstream bytes in a tunnel; b"" means the upstream connection is gone."""
        if not data:
            self.connection = None
            self._end_tunnel()
            return
        self.bytes_sent += len(data)
        self.down.write(data)

    def on_tunnel_eof(self) -> None:
        """The upstream half-closed: pass the EOF on; the client may still send."""
        self.tunnel_eofs += 1
        self.down.tunnel_eof()
        if self.tunnel_eofs == 2:
            self._end_tunnel()

    def tunnel_downstream_eof(self) -> None:
        """The client half-closed: pass the EOF on; the upstream may still answer."""
        self.tunnel_eofs += 1
        if self.connection is not None:
            self.connection.write_eof()
        if self.tunnel_eofs == 2:
            self._end_tunnel()

    def _end_tunnel(self) -> None:
        if self.state is StreamState.DONE:
            return
        self.state = StreamState.DONE
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self.down.end_tunnel()

    def tunnel_send(self, data: bytes) -> None:
        """Downstream bytes in a tunnel."""
        self.bytes_received += len(data)
        if self.connection is not None:
            self.connection.write(data)

    def on_upstream_lost(self, protocol_error: bool, failure: AttemptFailure = AttemptFailure.RESET) -> None:
        """The upstream connection closed or misbehaved before the response was complete. HTTP/2 says
        REFUSED_STREAM when the server refused the stream unprocessed (App Mesh stream-error)."""
        self.connection = None
        self._cancel_try_timer()
        stats = self.cluster_stats
        cluster = self.cluster
        if stats is not None and cluster is not None:
            stats.upstream_rq_active -= 1
            stats.upstream_rq_rx_reset += 1
            cluster.requests_active -= 1
            if self.host is not None:
                self.host.rq_active -= 1
        if self.state is StreamState.DONE:
            return
        if self.response_started:
            self.flags.append(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION.value)
            self.abort_downstream()
            return
        self.retry_or_fail(failure)

    def _response_complete(self) -> None:
        stats = self.cluster_stats
        if stats is not None:
            stats.upstream_rq_completed += 1
            stats.upstream_rq_time.record((time.monotonic() - self.attempt_start) * 1000.0)
        if not self.request_complete:
            # The upstream answered before the request body ended (e.g. an early 413): this connection
            # cannot carry another request.
            self._end_attempt(reuse=False)
        else:
            self._end_attempt(reuse=True)
        self._finish()

    # ---------------------------------------------------------------- endings
    def local_reply(self, reply: LocalReply) -> None:
        self.response_status = reply.status
        self.flags.append(reply.flag.value)
        self.state = StreamState.DONE
        self._cancel_timers()
        self.down.send_local_reply(self, reply)

    def abort_downstream(self) -> None:
        self._cancel_timers()
        self.state = StreamState.DONE
        self.down.abort(self)

    def _finish(self) -> None:
        self._cancel_timers()
        self.state = StreamState.DONE
        self.down.stream_done(self)


def _gateway_capacity(gateway: GatewayListener) -> int:
    limits = gateway.limits
    if gateway.protocol is ListenerProtocol.HTTP:
        return min(limits.max_connections + limits.max_pending_requests, 2147483647)
    return limits.max_requests


def _authority_address(authority: str) -> tuple[str, int] | None:
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
