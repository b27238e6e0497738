"""TLS on a connection, either side: listeners terminate it, the TLS connector originates it.

TLS runs over memory BIOs (`ssl.SSLObject`): a listener can look at the first byte before deciding
(PERMISSIVE: TLS and plaintext on one port) and hand bytes it has already read to the handshake, which
`loop.start_tls` cannot; the same engine runs over the component tier's in-memory transports. The inner
protocol (a connection manager, the TCP proxy, a pooled upstream connection) sees an ordinary transport and
plaintext, from the moment the handshake has finished and the peer has passed the checks Envoy makes: the
trust bundle (OpenSSL verifies the chain), then the subject alternative names (`net/certificates.py`).

Stats follow Envoy's SSL stats (`<scope>.ssl.*`): `handshake` (with the cipher and version counters) for a
connection that is up, `no_certificate` when the peer presented none, and one failure counter per failed
handshake: `fail_verify_no_cert`, `fail_verify_error`, `fail_verify_san`, else `connection_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final

from meshproxy.net.certificates import san_matches
from meshproxy.telemetry.stats import TlsStats

log = logging.getLogger("meshproxy.tls")

_READ_CHUNK: Final = 256 * 1024
TLS_HANDSHAKE_RECORD: Final = 0x16  # the first byte of a ClientHello (RFC 8446 §5.1)

# Inner protocol for a finished handshake, by the ALPN protocol the peers agreed on (None: no ALPN).
InnerFactory = Callable[[str | None], asyncio.Protocol]


class TlsMode(enum.StrEnum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLED = "DISABLED"


class TlsFailure(enum.Enum):
    """Why a handshake failed, named by the stat Envoy counts for it."""

    CONNECTION_ERROR = "connection_error"
    FAIL_VERIFY_NO_CERT = "fail_verify_no_cert"
    FAIL_VERIFY_ERROR = "fail_verify_error"
    FAIL_VERIFY_SAN = "fail_verify_san"


class TlsHandshakeError(Exception):
    def __init__(self, failure: TlsFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure


def classify(exc: ssl.SSLError) -> TlsFailure:
    """The stat for an OpenSSL handshake error (Envoy: the validator counts verification failures, a
    missing required client certificate is `fail_verify_no_cert`, anything else `connection_error`)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailure.FAIL_VERIFY_ERROR
    if exc.reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"):
        return TlsFailure.FAIL_VERIFY_NO_CERT
    return TlsFailure.CONNECTION_ERROR


def count_failure(stats: TlsStats, failure: TlsFailure) -> None:
    name = failure.value
    setattr(stats, name, getattr(stats, name) + 1)


class TlsState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"


class _TlsTransport(asyncio.Transport):
    """What the inner protocol writes to: plaintext in, ciphertext out through the session."""

    __slots__ = ("_session",)

    def __init__(self, session: TlsSession) -> None:
        super().__init__()
        self._session = session

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._session.write_plain(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # TLS has close_notify, not half-close

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def close(self) -> None:
        self._session.close()

    def abort(self) -> None:
        self._session.abort()

    def is_closing(self) -> bool:
        return self._session.state is TlsState.CLOSED

    def pause_reading(self) -> None:
        self._session.raw_pause(True)

    def resume_reading(self) -> None:
        self._session.raw_pause(False)

    def is_reading(self) -> bool:
        return not self._session.reading_paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._session.sslobj
        raw = self._session.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._session.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        inner = self._session.inner
        assert inner is not None
        return inner

    def get_write_buffer_size(self) -> int:
        raw = self._session.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._session.raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)


class TlsSession(asyncio.Protocol):
    """One TLS connection on a raw transport. The inner protocol is made when the handshake is done (by
    `inner_factory`, from the negotiated ALPN protocol) and sees a `_TlsTransport`.

    `names`: the subject alternative names the peer's certificate must carry (empty: any the trust bundle
    accepts). `done`, for the originating side: resolved when the inner protocol is connected, or failed
    with a `TlsHandshakeError`.
    """

    __slots__ = (
        "_initial",
        "_pending_plain",
        "done",
        "incoming",
        "inner",
        "inner_factory",
        "names",
        "outgoing",
        "raw",
        "reading_paused",
        "sslobj",
        "state",
        "stats",
        "transport",
    )

    def __init__(
        self,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        inner_factory: InnerFactory,
        stats: TlsStats,
        *,
        names: tuple[str, ...] = (),
        initial: bytes = b"",
        done: asyncio.Future[None] | None = None,
    ) -> None:
        self.sslobj = sslobj
        self.incoming = incoming
        self.outgoing = outgoing
        self.inner_factory = inner_factory
        self.inner: asyncio.Protocol | None = None
        self.stats = stats
        self.names = names
        self.done = done
        self.raw: asyncio.Transport | None = None
        self.transport = _TlsTransport(self)
        self.state = TlsState.HANDSHAKING
        self.reading_paused = False
        self._initial = initial
        self._pending_plain: list[bytes] = []

    def __repr__(self) -> str:
        side = "server" if self.sslobj.server_side else "client"
        return f"<TlsSession {side} {self.state.value}>"

    @classmethod
    def server(
        cls,
        context: ssl.SSLContext,
        inner_factory: InnerFactory,
        stats: TlsStats,
        names: tuple[str, ...] = (),
        initial: bytes = b"",
    ) -> TlsSession:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = context.wrap_bio(incoming, outgoing, server_side=True)
        return cls(sslobj, incoming, outgoing, inner_factory, stats, names=names, initial=initial)

    @classmethod
    def client(
        cls,
        context: ssl.SSLContext,
        inner: asyncio.Protocol,
        stats: TlsStats,
        done: asyncio.Future[None],
        names: tuple[str, ...] = (),
        session: ssl.SSLSession | None = None,
    ) -> TlsSession:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = context.wrap_bio(incoming, outgoing, server_side=False, session=session)
        return cls(sslobj, incoming, outgoing, lambda _alpn: inner, stats, names=names, done=done)

    # ---------------------------------------------------------------- raw side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        if not self.sslobj.server_side:
            self._handshake()  # the ClientHello
        elif self._initial:
            data, self._initial = self._initial, b""
            self.data_received(data)

    def attach(self, raw: asyncio.Transport) -> None:
        """Take over an accepted transport whose first bytes were already read (PERMISSIVE sniffing)."""
        raw.set_protocol(self)
        self.connection_made(raw)

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if self.state is not TlsState.OPEN and (self.state is TlsState.CLOSED or not self._handshake()):
            return
        sslobj, incoming = self.sslobj, self.incoming
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sslobj.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._deliver(chunks)
                if self.inner is not None:
                    self.inner.eof_received()
                self.close()
                return
            except ssl.SSLError as exc:
                self.stats.connection_error += 1
                log.debug("TLS read failed: %s", exc)
                self.abort()
                return
            if not chunk:
                break
            chunks.append(chunk)
            if not incoming.pending and not sslobj.pending():
                break  # everything read: skip the read that would only raise SSLWantReadError
        if self.outgoing.pending:
            self._flush()  # key updates, session tickets
        self._deliver(chunks)

    def _handshake(self) -> bool:
        """One handshake step; True once it is done and the inner protocol is connected."""
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            self._flush()  # the alert, so the peer learns why
            self._fail(classify(exc), exc.reason or str(exc))
            return False
        self._flush()
        return self._handshaken()

    def _handshaken(self) -> bool:
        sslobj, stats = self.sslobj, self.stats
        peer = sslobj.getpeercert(binary_form=True)
        if self.names and peer is not None and not san_matches(sslobj.getpeercert(), self.names):
            self._fail(TlsFailure.FAIL_VERIFY_SAN, "no subject alternative name of the peer is accepted")
            return False
        if peer is None:
            stats.no_certificate += 1
        cipher = sslobj.cipher()
        stats.count_handshake(cipher[0] if cipher else None, sslobj.version())
        if sslobj.session_reused:
            stats.session_reused += 1
        self.state = TlsState.OPEN
        inner = self.inner = self.inner_factory(sslobj.selected_alpn_protocol())
        inner.connection_made(self.transport)
        for plain in self._pending_plain:
            self.write_plain(plain)
        self._pending_plain.clear()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        return self.state is TlsState.OPEN

    def _fail(self, failure: TlsFailure, reason: str) -> None:
        count_failure(self.stats, failure)
        log.debug("TLS handshake failed (%s): %s", failure.value, reason)
        self.abort()
        if self.done is not None and not self.done.done():
            self.done.set_exception(TlsHandshakeError(failure, reason))

    def _deliver(self, chunks: list[bytes]) -> None:
        inner = self.inner
        if chunks and inner is not None and self.state is TlsState.OPEN:
            inner.data_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    def eof_received(self) -> bool | None:
        if self.state is TlsState.OPEN and self.inner is not None:
            self.inner.eof_received()  # EOF without close_notify: the peer is gone
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self.state = self.state, TlsState.CLOSED
        if self.inner is not None:
            self.inner.connection_lost(exc)
        elif previous is TlsState.HANDSHAKING and self.done is not None and not self.done.done():
            self.stats.connection_error += 1
            self.done.set_exception(
                TlsHandshakeError(TlsFailure.CONNECTION_ERROR, "connection closed during the TLS handshake")
            )

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ---------------------------------------------------------------- inner side
    def write_plain(self, data: bytes | bytearray | memoryview) -> None:
        if self.state is not TlsState.OPEN:
            if self.state is TlsState.HANDSHAKING:
                self._pending_plain.append(bytes(data))
            return
        self.sslobj.write(data)  # a memory BIO takes it all (several records if need be)
        self._flush()

    def _flush(self) -> None:
        out = self.outgoing.read()
        raw = self.raw
        if out and raw is not None and not raw.is_closing():
            raw.write(out)

    def raw_pause(self, paused: bool) -> None:
        self.reading_paused = paused
        raw = self.raw
        if raw is None or raw.is_closing():
            return
        if paused:
            raw.pause_reading()
        else:
            raw.resume_reading()

    def close(self) -> None:
        """close_notify, then close the raw transport once its buffer is written."""
        if self.state is TlsState.CLOSED:
            return
        opened = self.state is TlsState.OPEN
        self.state = TlsState.CLOSED
        if opened:
            with contextlib.suppress(ssl.SSLError):
                self.sslobj.unwrap()
            self._flush()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.state = TlsState.CLOSED
        if self.raw is not None:
            self.raw.abort()
