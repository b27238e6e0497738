"""TLS termination on a listener: the session for a connection, and PERMISSIVE's TLS-or-plaintext choice.

A virtual-node listener (on the ingress port, by original port) or a virtual-gateway listener with `tls`
(spec §4.2, §4.6) runs a server-side `TlsSession` with the listener's current context
(net/tls_contexts.py). After the handshake the connection is served by what the negotiated ALPN protocol
asks for: `h2` goes to the HTTP/2 connection manager on every HTTP listener (http, http2, grpc), anything
else to what the listener serves in plaintext. With `validation` a client certificate is asked for and
checked (mTLS); a STRICT listener requires one. While a context cannot be built (an SDS secret has not
arrived), connections are closed and counted, as Envoy counts `downstream_context_secrets_not_ready`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from meshproxy.config.snapshot import ListenerProtocol, TlsTermination
from meshproxy.listeners.policy import PolicyListener
from meshproxy.net.tls import TLS_HANDSHAKE_RECORD, InnerFactory, TlsSession
from meshproxy.net.tls_contexts import TlsKey, listener_alpn


class Refused(asyncio.Protocol):
    """A connection the listener cannot serve: closed as soon as it is accepted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<Refused>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


def tls_session(
    listener: PolicyListener,
    termination: TlsTermination,
    protocol: ListenerProtocol,
    serve: InnerFactory,
    initial: bytes = b"",
) -> asyncio.Protocol:
    """The protocol for a TLS connection to `listener`: a TlsSession serving `serve(alpn)` once the
    handshake is done, or `Refused` while the listener's certificate is not available."""
    stats = listener.listener_stats.tls()
    source = listener.tls_source(TlsKey.server(termination, listener_alpn(protocol)))
    context = None if source is None else source.context()
    if source is None or context is None:
        stats.downstream_context_secrets_not_ready += 1
        return Refused()
    source.use(stats)
    return TlsSession.server(context, serve, stats, names=source.names, initial=initial)


class PermissiveTls(asyncio.Protocol):
    """A PERMISSIVE listener: TLS when the first byte starts a handshake record, plaintext otherwise."""

    __slots__ = ("listener", "plaintext", "protocol", "serve", "termination", "transport")

    def __init__(
        self,
        listener: PolicyListener,
        termination: TlsTermination,
        protocol: ListenerProtocol,
        serve: InnerFactory,
        plaintext: Callable[[], asyncio.Protocol],
    ) -> None:
        self.listener = listener
        self.termination = termination
        self.protocol = protocol
        self.serve = serve
        self.plaintext = plaintext
        self.transport: asyncio.Transport | None = None

    def __repr__(self) -> str:
        return f"<PermissiveTls {self.listener.local_address}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        connection: asyncio.Protocol
        if data[0] == TLS_HANDSHAKE_RECORD:
            connection = tls_session(self.listener, self.termination, self.protocol, self.serve, data)
            data = b""
        else:
            connection = self.plaintext()
        transport.set_protocol(connection)
        connection.connection_made(transport)
        if data:
            connection.data_received(data)
