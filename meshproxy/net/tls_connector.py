"""TLS origination on the connector seam: a `Connector` that opens a connection through another one and
runs the TLS handshake on it before the pool's connection (or the TCP proxy) sees a transport.

The handshake is part of connecting, as in Envoy, where a cluster's connect timeout covers it and an
upstream whose certificate fails validation is a connect failure (`upstream_cx_connect_fail`, 503 with
response flag UF; retried as `connect-failure`): a `TlsHandshakeError` becomes a `ConnectFailure`, and
nothing is ever sent in plaintext to a backend that TLS was originated to. The client presents no SNI
(App Mesh never configured one, config/compile.py `origination`) and offers ALPN by the cluster's protocol
(h2 for http2/grpc, http/1.1 for http). The last TLS 1.2 session is offered again (Envoy's clients keep one
per context, `max_session_keys` 1), so reconnecting to a host skips the full handshake when it allows.
"""

from __future__ import annotations

import asyncio
import ssl

from meshproxy.net.connector import ConnectFailure, Connector
from meshproxy.net.tls import TlsFailure, TlsHandshakeError, TlsSession, count_failure
from meshproxy.net.tls_contexts import TlsContextSource
from meshproxy.telemetry.stats import TlsStats


class TlsConnector:
    """Connects through `inner`, then originates TLS with `source`'s current context."""

    __slots__ = ("_session", "inner", "source", "stats")

    def __init__(self, inner: Connector, source: TlsContextSource, stats: TlsStats) -> None:
        self.inner = inner
        self.source = source
        self.stats = stats
        self._session: tuple[ssl.SSLContext, ssl.SSLSession] | None = None
        source.use(stats)

    def __repr__(self) -> str:
        return f"<TlsConnector {self.source!r} via {self.inner!r}>"

    async def connect(self, protocol: asyncio.Protocol, host: str, port: int, timeout: float) -> None:
        context = self.source.context()
        if context is None:
            self.stats.upstream_context_secrets_not_ready += 1
            missing = ", ".join(repr(name) for name in self.source.secret_names)
            raise ConnectFailure(f"TLS secrets not ready: SDS secret {missing} has not arrived")
        loop = asyncio.get_running_loop()
        started = loop.time()
        done: asyncio.Future[None] = loop.create_future()
        cached = self._session
        session = TlsSession.client(
            context,
            protocol,
            self.stats,
            done,
            names=self.source.names,
            session=cached[1] if cached is not None and cached[0] is context else None,
        )
        await self.inner.connect(session, host, port, timeout)
        try:
            async with asyncio.timeout(max(0.0, timeout - (loop.time() - started))):
                await done
        except TimeoutError as exc:
            count_failure(self.stats, TlsFailure.CONNECTION_ERROR)
            session.abort()
            raise ConnectFailure(f"TLS handshake not done within {timeout}s", timed_out=True) from exc
        except TlsHandshakeError as exc:
            raise ConnectFailure(f"TLS error: {exc.failure.value}: {exc}") from exc
        sslobj = session.sslobj
        if not sslobj.session_reused:
            # Only after a full handshake: reading `session` copies it (CPython re-encodes and decodes it,
            # a workaround for an old OpenSSL bug), which costs more than the abbreviated handshake saves.
            fresh = sslobj.session
            if fresh is not None:
                self._session = (context, fresh)
