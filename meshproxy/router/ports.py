"""The two sides the router's `UpstreamRequest` talks to, as typing Protocols.

HTTP/1.1 implements them with `http.connection.DownstreamConnection` (one per TCP connection) and
`upstream.connection.UpstreamConnection` (one per pooled TCP connection). HTTP/2 implements them per stream,
so the router (routing, retries, timeouts, stats) is the same whatever the protocol on either side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from meshproxy.config.snapshot import Snapshot
from meshproxy.core.events import Headers, RequestHead, ResponseHead
from meshproxy.core.outcomes import LocalReply

if TYPE_CHECKING:
    from meshproxy.listeners.listener import HttpListener
    from meshproxy.router.request import UpstreamRequest
    from meshproxy.upstream.h1_connection import UpstreamStream
    from meshproxy.upstream.pool import Acquire, PoolWaiter


class ResponseEncoder(Protocol):
    """Body framing toward the client: bytes to hand to `Downstream.write`."""

    def encode_data(self, data: bytes) -> bytes: ...

    def encode_end(self) -> bytes: ...

    def encode_informational(self, status: int, headers: Headers) -> bytes: ...


class Downstream(Protocol):
    """The client side of one request."""

    # read-only members (properties, so implementations may hold narrower types)
    @property
    def listener(self) -> HttpListener: ...

    @property
    def snapshot(self) -> Snapshot:
        """Captured when the request started."""
        ...

    @property
    def original_destination(self) -> tuple[str, int] | None: ...

    @property
    def original_port(self) -> int | None: ...

    @property
    def peer_ip(self) -> bytes: ...

    @property
    def codec(self) -> ResponseEncoder: ...

    def write(self, data: bytes) -> None: ...

    def encode_response_head(self, head: ResponseHead, service_time_ms: int) -> bytes: ...

    def encode_trailers(self, trailers: Headers) -> bytes:
        """End the response with trailers (gRPC status); HTTP/1.1 ends it without them."""
        ...

    def send_local_reply(self, stream: UpstreamRequest, reply: LocalReply) -> None: ...

    def stream_done(self, stream: UpstreamRequest) -> None: ...

    def abort(self, stream: UpstreamRequest) -> None: ...

    def start_tunnel(self, stream: UpstreamRequest) -> None: ...

    def tunnel_eof(self) -> None:
        """Tunnel half-close toward the client."""
        ...

    def end_tunnel(self) -> None:
        """Both directions of a tunnel are done: close gracefully (pending bytes are still sent)."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class RequestEncoder(Protocol):
    def encode_request_head(self, head: RequestHead) -> bytes: ...

    def encode_data(self, data: bytes) -> bytes: ...

    def encode_end(self) -> bytes: ...


class ConnectionPool(Protocol):
    """Hands out `Upstream`s for one host (upstream.pool.HostPool for HTTP/1.1)."""

    def acquire(self, waiter: PoolWaiter) -> tuple[Acquire, Upstream | None]: ...

    def cancel(self, waiter: PoolWaiter) -> None: ...


class Upstream(Protocol):
    """The server side of one attempt: a pooled connection (HTTP/1.1) or a stream on one (HTTP/2)."""

    @property
    def codec(self) -> RequestEncoder: ...

    def attach(self, stream: UpstreamStream) -> None: ...

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def start_tunnel(self) -> None: ...

    def write_eof(self) -> None:
        """Tunnel half-close toward the upstream."""
        ...

    def release(self) -> None:
        """The exchange completed: reuse if possible."""
        ...

    def close(self) -> None:
        """Abandon the exchange (reset the stream / close the connection)."""
        ...
