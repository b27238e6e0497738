"""What the router needs from the layers above it, as typing Protocols and mypyc traits (the higher layer
implements them).

- `RequestContext`: one per listener. The snapshot, clusters, stats, tracer and observer a request uses,
  instead of the listener itself (STYLE.md: a router never reaches through `down.listener`).
- `Downstream`: the client side of one request: an HTTP/1.1 connection manager or one HTTP/2 stream.
  Event-level sends (`send_head`, `send_data`, `send_end`) queue; `flush` writes once. A mypyc trait that
  the two subclass, not a Protocol: the router calls it several times per request (ARCHITECTURE.md).
- `RequestObserver`: told once per finished request, with a frozen `RequestSummary` (access log, tracing,
  the metrics extension), when it wants one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mypy_extensions import trait

from meshproxy.config.snapshot import Snapshot
from meshproxy.core.clock import Clock
from meshproxy.core.direction import ListenerDirection
from meshproxy.core.events import Headers, ResponseHead
from meshproxy.core.outcomes import LocalReply
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.stats import HttpConnManagerStats
from meshproxy.telemetry.tracing import TraceStart
from meshproxy.upstream.cluster import ClusterRuntime


class RequestObserver(Protocol):
    @property
    def wants_summary(self) -> bool:
        """False: the router does not build summaries at all (nothing would read them)."""
        ...

    def request_done(self, summary: RequestSummary) -> None:
        """Never blocks, never raises."""
        ...


class Tracer(Protocol):
    def start_trace(
        self, direction: str, headers: Sequence[tuple[bytes, bytes]], method: str, authority: str, path: str
    ) -> TraceStart | None: ...


@trait
class RequestContext:
    """A listener as its requests see it (a mypyc trait, as `Downstream`: read several times per request).
    What does not change while the listener lives is a plain attribute of the implementation."""

    __slots__ = ()

    direction: ListenerDirection
    port: int
    stat_prefix: str  # `ingress` / `egress`: the `http.<prefix>.` stats and the trace direction
    http_stats: HttpConnManagerStats
    clock: Clock
    tracer: Tracer | None
    observer: RequestObserver | None

    @property
    def local_address(self) -> str:
        """`ip:port` of the listener (the access log's DOWNSTREAM_LOCAL_ADDRESS)."""
        raise NotImplementedError

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot; a request captures it once, when it starts."""
        raise NotImplementedError

    def cluster(self, name: str) -> ClusterRuntime | None:
        raise NotImplementedError

    def passthrough_cluster(self, address: str, port: int, http2: bool) -> ClusterRuntime:
        """ALLOW_ALL: the original destination as a one-host cluster (HTTP/2 if the client spoke it)."""
        raise NotImplementedError

    def admit_request(self) -> bool:
        """False when the listener's own connection pool is full (a virtual gateway's `connectionPool`)."""
        raise NotImplementedError


class TunnelEnd(Protocol):
    """Where the client's bytes go after an accepted Upgrade (router/tunnel.py `Tunnel`)."""

    def from_client(self, data: bytes) -> None: ...

    def client_eof(self) -> None: ...


@trait
class Downstream:
    """The client side of one request."""

    __slots__ = ()

    @property
    def original_destination(self) -> tuple[str, int] | None:
        raise NotImplementedError

    @property
    def original_port(self) -> int | None:
        raise NotImplementedError

    @property
    def peer(self) -> str:
        """`ip:port` of the client."""
        raise NotImplementedError

    @property
    def secure(self) -> bool:
        """The client's connection is TLS, terminated by this listener (x-forwarded-proto `https`)."""
        raise NotImplementedError

    def send_informational(self, status: int, headers: Headers) -> None:
        """A 1xx response (100 Continue); HTTP/2 streams ignore it."""
        raise NotImplementedError

    def send_head(self, head: ResponseHead, service_time_ms: int) -> None:
        raise NotImplementedError

    def send_data(self, data: bytes) -> None:
        raise NotImplementedError

    def send_end(self, trailers: Headers | None) -> None:
        """End the response; trailers (gRPC status) go where the protocol carries them."""
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def send_local_reply(self, reply: LocalReply) -> None:
        """Answer the request locally (and flush); the request is then done."""
        raise NotImplementedError

    def request_done(self) -> None:
        """The response is complete, or the request was abandoned: next request, or close."""
        raise NotImplementedError

    def abort(self) -> None:
        """The response cannot be completed: reset (the connection, or the HTTP/2 stream)."""
        raise NotImplementedError

    def start_tunnel(self, tunnel: TunnelEnd) -> None:
        """The response head (101) was sent: from now on the client's bytes go to `tunnel`, raw."""
        raise NotImplementedError

    def tunnel_eof(self) -> None:
        """Tunnel half-close toward the client."""
        raise NotImplementedError

    def end_tunnel(self) -> None:
        """Both directions of a tunnel are done: close gracefully (pending bytes are still sent)."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError
