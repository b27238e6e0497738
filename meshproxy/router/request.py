"""The router: one `RouterRequest` per downstream request, from route decision to the last response byte.

It decides synchronously (route, host, retry) and drives one attempt at a time (router/attempt.py) until one
answers or none is left: ROUTING -> WAITING (pool, DNS, back-off) -> FORWARDING -> RESPONDING -> DONE, or
TUNNEL after an accepted Upgrade. Envoy semantics: the per-request timeout starts when the request is
complete; a per-try timeout bounds each attempt; retries avoid hosts tried; bodies up to 1 MiB are replayable.
"""

from __future__ import annotations

import enum

from meshproxy.codec.grpc import grpc_status_of
from meshproxy.codec.h1 import ProtocolError
from meshproxy.core import outcomes
from meshproxy.core.clock import Timer
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.events import BodyKind, Data, EndOfMessage, Event, RequestHead, ResponseHead, Upgraded
from meshproxy.core.outcomes import FAILURE_REPLY, AttemptFailure, LocalReply, ResponseFlag
from meshproxy.router.attempt import AttemptOwner, UpstreamAttempt
from meshproxy.router.body import RequestBody
from meshproxy.router.budget import admit_retry, count_attempt, not_retried_flag
from meshproxy.router.context import Downstream, RequestContext
from meshproxy.router.decide import RouteDecision, decide, request_timeout
from meshproxy.router.match import header_value, split_target
from meshproxy.router.overrides import overridden
from meshproxy.router.retry import RetryVerdict, backoff_delay, failure_verdict, response_verdict
from meshproxy.router.summary import summarize
from meshproxy.router.tunnel import Tunnel
from meshproxy.router.upstream_headers import client_fields, upstream_head
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.telemetry.tracing import TraceStart
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.host import Host

_BUFFER_HIGH_WATER = 64 * 1024  # request bytes held while no upstream is attached before reading pauses
_NOT_ROUTED = RouteDecision("", "", None, None, "")
GIVE_UP_AFTER_START = RetryVerdict.GIVE_UP  # once response bytes went downstream nothing is retried


class RequestState(enum.Enum):
    ROUTING = "routing"
    WAITING = "waiting"
    FORWARDING = "forwarding"
    RESPONDING = "responding"
    TUNNEL = "tunnel"
    DONE = "done"


class RouterRequest(AttemptOwner):
    """Envoy's router filter for one request; the `AttemptOwner` of its attempts."""

    __slots__ = (
        "attempt", "authority", "body", "bytes_received", "bytes_sent", "cluster", "ctx",
        "decision", "down", "down_paused", "flags", "head", "last_activity",
        "request_complete", "response_started", "response_status", "retries", "service_time_ms", "start",
        "state", "switch_head", "timeout", "timer", "trace", "tried", "tunnel", "upstream_head",
    )  # fmt: skip

    def __init__(self, ctx: RequestContext, down: Downstream, head: RequestHead, start: float) -> None:
        self.ctx = ctx
        self.down = down
        self.head = head
        self.state = RequestState.ROUTING
        self.decision = _NOT_ROUTED
        self.cluster: ClusterRuntime | None = None
        self.timeout: float | None = None
        self.upstream_head: RequestHead | None = None
        self.body: RequestBody | None = None  # made when the first body bytes arrive
        self.request_complete = False
        self.attempt: UpstreamAttempt | None = None
        self.tried: tuple[Host, ...] = ()
        self.retries = 0
        self.service_time_ms = -1
        self.timer: Timer | None = None
        self.flags: list[str] = []
        self.response_status = 0
        self.response_started = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.start = self.last_activity = start  # the head's arrival (the caller has just read the clock)
        self.down_paused = False
        self.authority = ""
        self.trace: TraceStart | None = None
        self.switch_head: ResponseHead | None = None
        self.tunnel: Tunnel | None = None

    def __repr__(self) -> str:
        return (
            f"<RouterRequest {self.head.method} {self.decision.path or self.head.target} {self.state.value} "
            f"retries={self.retries} status={self.response_status}>"
        )

    @property
    def done(self) -> bool:
        return self.state is RequestState.DONE

    @property
    def replayable(self) -> bool:
        return self.body is None or self.body.replayable

    @property
    def cluster_stats(self) -> ClusterStats | None:
        return self.cluster.stats if self.cluster is not None else None

    # ---------------------------------------------------------------- routing (synchronous decisions)
    def begin(self) -> None:
        head = self.head
        ctx = self.ctx
        target_authority, path = split_target(head.target)
        host = header_value(head.headers, "host")
        authority = self.authority = target_authority or host or ""
        if ctx.direction is ListenerDirection.GATEWAY and not ctx.admit_request():
            # the listener's own connectionPool (a virtual gateway's): App Mesh applied it to the gateway's
            # self-redirect cluster, i.e. to the requests in flight through this listener
            self.local_reply(outcomes.OVERFLOW)
            return
        decision = decide(ctx.direction, ctx.snapshot, ctx.port, head, authority, path, self.down)
        if isinstance(decision, LocalReply):
            if decision is outcomes.NO_ROUTE:
                ctx.http_stats.no_route += 1
            self.local_reply(decision)
            return
        self.decision = decision
        if decision.passthrough is not None:
            # HTTP/2 clients reach unrouted destinations over HTTP/2
            self.cluster = ctx.passthrough_cluster(*decision.passthrough, http2=head.http_version == "2")
        else:
            self.cluster = ctx.cluster(decision.cluster)
        if self.cluster is None:
            ctx.http_stats.no_cluster += 1
            self.local_reply(outcomes.NO_HEALTHY_UPSTREAM)
            return
        self.timeout = decision.timeout if head.http_version != "2" else request_timeout(decision, head)
        tracer = ctx.tracer
        if tracer is not None:
            self.trace = tracer.start_trace(ctx.stat_prefix, head.headers, head.method, authority, path)
        fields = client_fields(head, decision, authority, target_authority is not None, ctx.direction)
        if fields[5] is not None:  # router control headers (x-envoy-retry-on...), honoured if internal
            decision, self.timeout = overridden(decision, self.timeout, fields[5], fields[2])
            self.decision = decision
        self.upstream_head = upstream_head(
            head,
            fields,
            decision,
            self.timeout,
            authority=authority,
            host_present=host is not None,
            secure=self.down.secure,
            trace_headers=self.trace.upstream_headers if self.trace is not None else (),
        )
        if self.upstream_head is None:
            self.local_reply(outcomes.BAD_REQUEST)
            return
        if head.expect_continue:
            self.down.send_informational(100, [])
            self.down.flush()
        self._next_attempt(self.start)  # the first attempt starts with the request

    # ---------------------------------------------------------------- attempts
    def _next_attempt(self, now: float) -> None:
        cluster = self.cluster
        assert cluster is not None
        self.state = RequestState.WAITING
        if not cluster.resolved:
            # first DNS / Cloud Map answer still pending: wait for it (or for its failure), but not for ever
            cluster.when_resolved(self._attempt_when_resolved)
            self.ctx.clock.call_later(cluster.config.connect_timeout + 5.0, self._attempt_when_resolved)
            return
        host = cluster.pick_host(self.tried)
        if host is None:
            self.fail(AttemptFailure.NO_HEALTHY_UPSTREAM)
            return
        self.tried += (host,)
        attempt = self.attempt = UpstreamAttempt(self, cluster, host, self.ctx.clock, now)
        attempt.begin()

    def _attempt_when_resolved(self) -> None:
        if self.state is RequestState.WAITING and self.attempt is None:
            cluster = self.cluster
            if cluster is not None and not cluster.resolved:
                self.fail(AttemptFailure.NO_HEALTHY_UPSTREAM)
                return
            self._next_attempt(self.ctx.clock.now())

    def attempt_ready(self, attempt: UpstreamAttempt) -> None:
        """The attempt has an upstream: send the head and what is buffered of the body."""
        if attempt is not self.attempt:
            attempt.end(reuse=False)
            return
        self.state = RequestState.FORWARDING
        assert self.upstream_head is not None
        body = self.body
        retry = self.decision.retry
        per_try = retry.per_try_timeout if retry is not None else None
        attempt.send_request(self.upstream_head, body.chunks if body else [], self.request_complete, per_try)
        if body is not None:
            body.taken()
        if self.down_paused and self.attempt is attempt:
            self.down_paused = False
            self.down.resume_reading()

    def attempt_failed(self, attempt: UpstreamAttempt, failure: AttemptFailure) -> None:
        if attempt is not self.attempt or self.state is RequestState.DONE:
            return
        self.attempt = None
        if self.response_started:  # a reset now: UC, or DPE for a request the upstream codec refused
            self.flags.append(FAILURE_REPLY[failure].flag.value)
            self.abort_downstream()
            return
        self.retry_or_fail(failure)

    def attempt_try_timeout(self, attempt: UpstreamAttempt) -> None:
        if attempt is not self.attempt or self.state is not RequestState.FORWARDING or self.response_started:
            return
        stats = self.cluster_stats
        if stats is not None:
            stats.upstream_rq_per_try_timeout += 1
        self._end_attempt(reuse=False)
        self.retry_or_fail(AttemptFailure.PER_TRY_TIMEOUT)

    def retry_or_fail(self, failure: AttemptFailure) -> None:
        verdict = failure_verdict(self.decision.retry, failure, self.replayable, self.retries)
        if verdict is RetryVerdict.RETRY:
            verdict = admit_retry(self.cluster, verdict, self.ctx.clock.now())
        if verdict is RetryVerdict.RETRY:
            self._schedule_retry()
            return
        if verdict is not RetryVerdict.GIVE_UP:
            self.flags.append(not_retried_flag(self.cluster, verdict))
        self.fail(failure)

    def _schedule_retry(self) -> None:
        self.retries += 1
        self.state = RequestState.WAITING
        stats = self.cluster_stats
        assert stats is not None
        stats.upstream_rq_retry += 1
        self.ctx.clock.call_later(backoff_delay(self.retries), self._retry_now)

    def _retry_now(self) -> None:
        if self.state is RequestState.WAITING and self.attempt is None:
            self._next_attempt(self.ctx.clock.now())

    def _end_attempt(self, reuse: bool) -> None:
        attempt = self.attempt
        if attempt is not None:
            self.attempt = None
            attempt.end(reuse)

    def fail(self, failure: AttemptFailure) -> None:
        """No (more) attempts."""
        stats = self.cluster_stats
        if failure is AttemptFailure.PER_TRY_TIMEOUT and stats is not None:
            stats.upstream_rq_timeout += 1
        self._give_up(FAILURE_REPLY[failure])

    def _give_up(self, reply: LocalReply) -> None:
        """No response will come: answer locally, or reset the downstream if the response already started."""
        self._end_attempt(reuse=False)
        if self.response_started:
            self.flags.append(reply.flag.value)
            self.abort_downstream()
        else:
            self.local_reply(reply)

    # ---------------------------------------------------------------- timers
    def _cancel_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.attempt is not None:
            self.attempt.cancel_try_timer()

    def _on_timeout(self) -> None:
        self.timer = None
        if self.state is RequestState.DONE or self.state is RequestState.TUNNEL:
            return
        stats = self.cluster_stats
        if stats is not None:
            stats.upstream_rq_timeout += 1
            if self.attempt is not None:
                self.attempt.host.rq_timeout += 1
        self._give_up(outcomes.UPSTREAM_TIMEOUT)

    def idle_expired(self, now: float) -> bool:
        idle = self.decision.idle_timeout
        return (
            idle is not None
            and now - self.last_activity >= idle
            and self.state is not RequestState.DONE
            and self.state is not RequestState.TUNNEL
        )

    def on_idle_timeout(self) -> None:
        """Envoy's stream idle timeout: 408 before the response started, a reset after (flag SI)."""
        self._give_up(outcomes.STREAM_IDLE_TIMEOUT)

    # ---------------------------------------------------------------- downstream -> upstream
    def on_request_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_activity = self.ctx.clock.now()
        attempt = self.attempt
        state = self.state
        # the request keeps flowing after the response started (gRPC bidirectional streams)
        forwarding = state is RequestState.FORWARDING or state is RequestState.RESPONDING
        body = self.body
        if body is None:
            body = self.body = RequestBody()
        body.add(data, forwarded=forwarding)
        if attempt is not None and forwarding:
            attempt.send_data(data)
        elif (
            state is not RequestState.DONE
            and not self.down_paused
            and (body.size > _BUFFER_HIGH_WATER or not body.replayable)
        ):
            self.down_paused = True  # no upstream yet: stop reading rather than buffer without bound
            self.down.pause_reading()

    def on_request_end(self) -> None:
        self.request_complete = True
        attempt = self.attempt
        state = self.state
        if self.state is RequestState.DONE:
            return
        if self.timeout is not None and self.timer is None:
            self.timer = self.ctx.clock.call_later(self.timeout, self._on_timeout)
        if attempt is not None and (state is RequestState.FORWARDING or state is RequestState.RESPONDING):
            retry = self.decision.retry
            attempt.send_end(retry.per_try_timeout if retry is not None else None)

    def on_downstream_write_paused(self) -> None:
        if self.attempt is not None:
            self.attempt.pause_reading()

    def on_downstream_write_resumed(self) -> None:
        if self.attempt is not None:
            self.attempt.resume_reading()

    def attempt_write_paused(self, paused: bool) -> None:
        """The upstream cannot take more now: stop (or resume) reading the client."""
        if paused is not self.down_paused:
            self.down_paused = paused
            if paused:
                self.down.pause_reading()
            else:
                self.down.resume_reading()

    def on_downstream_lost(self) -> None:
        """The client went away: stop everything; the upstream connection cannot be reused mid-exchange."""
        if self.state is RequestState.DONE:
            return
        self.flags.append(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION.value)
        self._end_attempt(reuse=False)
        self._finish()

    # ---------------------------------------------------------------- upstream -> downstream
    def attempt_events(self, attempt: UpstreamAttempt, events: list[Event]) -> None:
        if attempt is not self.attempt or self.state is RequestState.DONE:
            return
        self.last_activity = self.ctx.clock.now()  # also the response head's and end's time, below
        down = self.down
        done = False
        try:
            for index, event in enumerate(events):
                if isinstance(event, Data):
                    self.bytes_sent += len(event.data)
                    down.send_data(event.data)
                elif isinstance(event, ResponseHead):
                    if not self._on_response_head(attempt, event):
                        # Retrying this response. If it is already complete, the connection is clean and
                        # reusable (an HTTP/1.1 connection mid-response is not: it is closed).
                        complete = any(isinstance(e, EndOfMessage) for e in events[index + 1 :])
                        self._end_attempt(reuse=complete and self.request_complete)
                        self._schedule_retry()
                        return
                    if self.done:  # (a property: mypy keeps `self.state` narrowed across the call above)
                        return  # answered locally: the downstream codec refused the head
                elif isinstance(event, EndOfMessage):
                    down.send_end(event.trailers)
                    done = True
                    break
                elif isinstance(event, Upgraded):
                    self._start_tunnel(attempt, event.trailing)
                    return
        except ProtocolError:
            # The downstream codec refused the body (more bytes than the head's Content-Length): what was
            # encoded goes out, then the client is reset, as Envoy resets a response it cannot complete.
            down.flush()
            self.flags.append(ResponseFlag.UPSTREAM_PROTOCOL_ERROR.value)
            self._end_attempt(reuse=False)
            self.abort_downstream()
            return
        down.flush()
        if done:
            self._response_complete()

    def _on_response_head(self, attempt: UpstreamAttempt, head: ResponseHead) -> bool:
        status = head.status
        cluster = self.cluster
        assert cluster is not None
        stats = cluster.stats
        elapsed_ms = (self.last_activity - attempt.start) * 1000.0
        cluster.record_response(attempt.host, status)
        if status == 101:
            self.response_status = 101
            self.service_time_ms = int(elapsed_ms)
            self.switch_head = head  # sent on when the Upgraded event confirms the switch
            return True
        policy = self.decision.retry
        # grpcRetryEvents read grpc-status from the headers of a trailers-only response
        grpc_status = grpc_status_of(head.headers) if policy is not None and policy.grpc_statuses else None
        stats.count_response(status)
        verdict = GIVE_UP_AFTER_START
        if not self.response_started:
            body = self.body  # `replayable` inlined: this runs once per response
            replayable = body is None or body.replayable
            verdict = response_verdict(policy, status, grpc_status, replayable, self.retries)
        count_attempt(cluster, verdict is not RetryVerdict.GIVE_UP or status >= 500)
        if verdict is RetryVerdict.RETRY:
            verdict = admit_retry(cluster, verdict, self.last_activity)
        if verdict is RetryVerdict.RETRY:
            stats.upstream_rq_time.record(elapsed_ms)
            return False  # the caller ends this attempt and schedules the retry
        if verdict is not RetryVerdict.GIVE_UP:
            self.flags.append(not_retried_flag(cluster, verdict))
        elif self.retries:
            stats.upstream_rq_retry_success += 1
        self.service_time_ms = int(elapsed_ms)
        attempt.cancel_try_timer()
        try:
            self.down.send_head(head, self.service_time_ms)
        except ProtocolError:
            # a head the downstream codec refuses to write (CR, LF or NUL in a field): nothing was sent, so
            # the client gets Envoy's 502 for an upstream protocol error instead
            self._end_attempt(reuse=False)
            self.local_reply(outcomes.UPSTREAM_PROTOCOL_ERROR)
            return True
        self.response_status = status
        self.response_started = True
        self.state = RequestState.RESPONDING
        return True

    def _response_complete(self) -> None:
        attempt = self.attempt
        cluster = self.cluster
        if cluster is not None and attempt is not None:
            stats = cluster.stats
            stats.upstream_rq_completed += 1
            stats.upstream_rq_time.record((self.last_activity - attempt.start) * 1000.0)
        # The upstream may have answered before the request body ended (e.g. an early 413): that connection
        # cannot carry another request.
        self._end_attempt(reuse=self.request_complete)
        self._finish()

    # ---------------------------------------------------------------- tunnels (accepted Upgrade)
    def _start_tunnel(self, attempt: UpstreamAttempt, trailing: bytes) -> None:
        """The upstream accepted the Upgrade: from here on both sides are raw byte streams."""
        self._cancel_timers()
        if self.response_status != 101:
            self.abort_downstream()
            return
        self.state = RequestState.TUNNEL
        self.response_started = True
        head = self.switch_head or ResponseHead(101, b"Switching Protocols", [], "1.1", False, BodyKind.NONE)
        self.tunnel = Tunnel(self, self.down, attempt)
        self.tunnel.open(head, self.service_time_ms, trailing)

    def tunnel_ended(self) -> None:
        if self.state is not RequestState.DONE:
            self._end_attempt(reuse=False)
            self._done()
            self.down.end_tunnel()

    # ---------------------------------------------------------------- endings
    def local_reply(self, reply: LocalReply) -> None:
        self.response_status = reply.status
        self.flags.append(reply.flag.value)
        self._done()
        self.down.send_local_reply(reply)

    def abort_downstream(self) -> None:
        self._done()
        self.down.abort()

    def _finish(self) -> None:
        self._done()
        self.down.request_done()

    def _done(self) -> None:
        """The request is over for the router: timers off, and the observer told (before the downstream
        side moves on to its next request)."""
        self._cancel_timers()
        self.state = RequestState.DONE
        ctx = self.ctx
        observer = ctx.observer
        if observer is not None and observer.wants_summary:
            summary = summarize(self, ctx.clock.now(), ctx.stat_prefix, self.down.peer, ctx.local_address)
            observer.request_done(summary)
