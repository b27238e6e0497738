"""One try of a request against one upstream host: Envoy's `UpstreamRequest`.

An `UpstreamAttempt` waits for its host's pool (a `PoolWaiter`), then owns one `Upstream` (an HTTP/1.1
connection or an HTTP/2 stream) as its `UpstreamStream` until the exchange ends. It keeps the per-attempt
counters (`upstream_rq_active`, the host's counts, the cluster's request circuit breaker) and the per-try
timeout, and hands everything else (response events, failures, back-pressure) to its `RouterRequest`, which
decides what they mean: relay, retry, or answer locally. A failure without a response is the host's: the
attempt tells the cluster (outlier detection, the retry budget) before its request hears of it.

States: CONNECTING (waiting for the pool) -> SENDING (attached) -> TUNNEL (after an accepted Upgrade) -> DONE.
"""

from __future__ import annotations

import enum
from typing import Protocol

from mypy_extensions import trait

from meshproxy.codec.h1 import ProtocolError
from meshproxy.core.clock import Clock, Timer
from meshproxy.core.events import Event, RequestHead
from meshproxy.core.outcomes import AttemptFailure
from meshproxy.router.budget import HOST_FAILURES, host_failed
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.host import Host
from meshproxy.upstream.pool import Acquire, HostPool
from meshproxy.upstream.ports import Upstream


@trait
class AttemptOwner:
    """What an attempt reports to (the `RouterRequest`)."""

    __slots__ = ()

    def attempt_ready(self, attempt: UpstreamAttempt) -> None:
        raise NotImplementedError

    def attempt_failed(self, attempt: UpstreamAttempt, failure: AttemptFailure) -> None:
        """The attempt ended without a response (its counters are already settled)."""
        raise NotImplementedError

    def attempt_events(self, attempt: UpstreamAttempt, events: list[Event]) -> None:
        raise NotImplementedError

    def attempt_try_timeout(self, attempt: UpstreamAttempt) -> None:
        raise NotImplementedError

    def attempt_write_paused(self, paused: bool) -> None:
        raise NotImplementedError


class TunnelSink(Protocol):
    """Where the upstream's bytes go after an accepted Upgrade (router/tunnel.py `Tunnel`)."""

    def from_upstream(self, data: bytes) -> None:
        """b"": the upstream connection is gone."""
        ...

    def upstream_eof(self) -> None: ...


class AttemptState(enum.Enum):
    CONNECTING = "connecting"
    SENDING = "sending"
    TUNNEL = "tunnel"
    DONE = "done"


class UpstreamAttempt:
    """Implements the pool's `PoolWaiter` and the connection's `UpstreamStream`."""

    __slots__ = (
        "clock",
        "cluster",
        "host",
        "owner",
        "pool",
        "start",
        "state",
        "try_timer",
        "tunnel",
        "upstream",
    )

    def __init__(
        self, owner: AttemptOwner, cluster: ClusterRuntime, host: Host, clock: Clock, start: float
    ) -> None:
        self.owner = owner
        self.cluster = cluster
        self.host = host
        self.clock = clock
        self.state = AttemptState.CONNECTING
        self.pool: HostPool | None = None
        self.upstream: Upstream | None = None
        self.try_timer: Timer | None = None
        self.tunnel: TunnelSink | None = None
        self.start = start  # the clock's time now (the caller has it)

    def __repr__(self) -> str:
        return f"<UpstreamAttempt {self.host.label} {self.state.value}>"

    # ---------------------------------------------------------------- starting
    def begin(self) -> None:
        pool = self.cluster.pool_for(self.host)
        result, upstream = pool.acquire(self)
        if result is Acquire.READY:
            assert upstream is not None
            self.on_pool_ready(upstream)
        elif result is Acquire.OVERFLOW:
            self.state = AttemptState.DONE
            self.owner.attempt_failed(self, AttemptFailure.OVERFLOW)
        else:
            self.pool = pool

    def on_pool_ready(self, upstream: Upstream) -> None:
        self.pool = None
        if self.state is not AttemptState.CONNECTING:
            upstream.release()  # abandoned while waiting
            return
        self.state = AttemptState.SENDING
        self.upstream = upstream
        upstream.attach(self)
        self.cluster.breakers.request_started()
        self.cluster.stats.upstream_rq_total += 1
        host = self.host
        host.rq_total += 1
        host.rq_active += 1
        self.owner.attempt_ready(self)

    def on_pool_failure(self, failure: AttemptFailure) -> None:
        self.pool = None
        if self.state is AttemptState.CONNECTING:
            self.state = AttemptState.DONE
            if failure in HOST_FAILURES:
                host_failed(self.cluster, self.host)
            self.owner.attempt_failed(self, failure)

    # ---------------------------------------------------------------- the request going out
    # Each send is flushed: one write per event toward the upstream. A request the upstream codec refuses to
    # write (a field holding CR, LF or NUL; more body than its Content-Length) cannot be forwarded as
    # received: the connection, possibly mid-request, is closed and the attempt fails with INVALID_REQUEST
    # (the client gets 400, or a reset once its response started).
    def send_request(
        self, head: RequestHead, body: list[bytes], complete: bool, per_try_timeout: float | None
    ) -> None:
        """The head, the body received so far and, if the request is complete, its end; the per-try
        timeout starts once the whole request is out."""
        upstream = self.upstream
        if upstream is None:
            return
        try:
            upstream.send_head(head)
            for chunk in body:
                upstream.send_data(chunk)
            if complete:
                upstream.send_end()
        except ProtocolError:
            self._refused()
            return
        upstream.flush()
        if complete and per_try_timeout is not None:
            self.try_timer = self.clock.call_later(per_try_timeout, self._on_try_timeout)

    def send_data(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            try:
                upstream.send_data(data)
            except ProtocolError:
                self._refused()
                return
            upstream.flush()

    def send_end(self, per_try_timeout: float | None) -> None:
        upstream = self.upstream
        if upstream is not None:
            try:
                upstream.send_end()
            except ProtocolError:
                self._refused()
                return
            upstream.flush()
            if per_try_timeout is not None and self.try_timer is None:
                self.try_timer = self.clock.call_later(per_try_timeout, self._on_try_timeout)

    def _refused(self) -> None:
        self.end(reuse=False)
        self.owner.attempt_failed(self, AttemptFailure.INVALID_REQUEST)

    def pause_reading(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_reading(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def cancel_try_timer(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        if self.state is AttemptState.SENDING:
            host_failed(self.cluster, self.host)
            self.owner.attempt_try_timeout(self)

    # ---------------------------------------------------------------- UpstreamStream (the connection's side)
    def on_response_events(self, events: list[Event]) -> None:
        self.owner.attempt_events(self, events)

    def on_upstream_lost(self, failure: AttemptFailure) -> None:
        if self.upstream is None:
            return
        self.upstream = None
        self.cluster.stats.upstream_rq_rx_reset += 1
        self._settle()
        if failure in HOST_FAILURES:
            host_failed(self.cluster, self.host)
        self.owner.attempt_failed(self, failure)

    def on_upstream_write_paused(self) -> None:
        self.owner.attempt_write_paused(True)

    def on_upstream_write_resumed(self) -> None:
        self.owner.attempt_write_paused(False)

    def on_tunnel_data(self, data: bytes) -> None:
        """Tunnel bytes from the upstream; b"" when its connection is gone."""
        if not data and self.upstream is not None:
            self.upstream = None
            self._settle()
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)

    def on_tunnel_eof(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_eof()

    # ---------------------------------------------------------------- tunnels and endings
    def start_tunnel(self, tunnel: TunnelSink) -> None:
        self.tunnel = tunnel
        self.cancel_try_timer()
        self.state = AttemptState.TUNNEL
        if self.upstream is not None:
            self.upstream.start_tunnel()

    def write_eof(self) -> None:
        if self.upstream is not None:
            self.upstream.write_eof()

    def end(self, reuse: bool) -> None:
        """Detach from the upstream; reuse it only after a complete exchange. Idempotent."""
        if self.state is AttemptState.DONE:
            return
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.cancel(self)
        upstream = self.upstream
        if upstream is None:
            self.state = AttemptState.DONE
            self.cancel_try_timer()
            return
        self.upstream = None
        self._settle()
        if reuse:
            upstream.release()
        else:
            upstream.close()

    def _settle(self) -> None:
        """The attempt no longer holds its upstream: counters and the circuit breaker slot go back."""
        self.state = AttemptState.DONE
        if self.try_timer is not None:
            self.cancel_try_timer()
        self.cluster.breakers.request_done()
        self.host.rq_active -= 1
