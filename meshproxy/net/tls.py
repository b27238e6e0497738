"""TLS termination for listeners (virtual-gateway listener `tls`, spec §4.6), with certificate reload.

TLS runs over memory BIOs (`ssl.SSLObject`), so a listener can look at the first byte before deciding
(PERMISSIVE: TLS and plaintext on one port) and hand bytes it has already read to the handshake, which
`loop.start_tls` cannot. The inner protocol (the HTTP connection manager) sees an ordinary transport.
Certificate files are re-read when they change; new connections get the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import ssl
import time
from typing import Any

from meshproxy.config.snapshot import TlsTermination
from meshproxy.telemetry.stats import ListenerStats

log = logging.getLogger("meshproxy.tls")

_RELOAD_CHECK_S = 1.0
_READ_CHUNK = 256 * 1024


class TlsMode(enum.StrEnum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLED = "DISABLED"


class CertificateStore:
    """An SSLContext for one certificate chain + key, rebuilt when either file changes."""

    def __init__(self, termination: TlsTermination) -> None:
        self.termination = termination
        self._stamp: tuple[float, float] | None = None
        self._checked = 0.0
        self._context = self._load()

    def __repr__(self) -> str:
        return f"<CertificateStore {self.termination.certificate_chain} mode={self.termination.mode}>"

    def _stat(self) -> tuple[float, float]:
        return (
            os.stat(self.termination.certificate_chain).st_mtime,
            os.stat(self.termination.private_key).st_mtime,
        )

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.termination.certificate_chain, self.termination.private_key)
        context.set_alpn_protocols(["http/1.1"])
        self._stamp = self._stat()
        return context

    @property
    def context(self) -> ssl.SSLContext:
        """The current context; file changes are noticed at most once a second."""
        now = time.monotonic()
        if now - self._checked >= _RELOAD_CHECK_S:
            self._checked = now
            try:
                if self._stat() != self._stamp:
                    self._context = self._load()
                    log.info("reloaded certificate %s", self.termination.certificate_chain)
            except (OSError, ssl.SSLError) as exc:
                log.error("certificate reload failed, keeping the previous one: %s", exc)
        return self._context


class _TlsTransport(asyncio.Transport):
    """What the inner protocol writes to: plaintext in, ciphertext out through the terminator."""

    def __init__(self, terminator: TlsTerminator) -> None:
        super().__init__()
        self._terminator = terminator

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._terminator.write_plain(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def close(self) -> None:
        self._terminator.close()

    def abort(self) -> None:
        self._terminator.abort()

    def is_closing(self) -> bool:
        return self._terminator.closing

    def pause_reading(self) -> None:
        self._terminator.raw_pause(True)

    def resume_reading(self) -> None:
        self._terminator.raw_pause(False)

    def is_reading(self) -> bool:
        return not self._terminator.reading_paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._terminator.sslobj
        raw = self._terminator.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._terminator.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._terminator.inner

    def get_write_buffer_size(self) -> int:
        raw = self._terminator.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._terminator.raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)


class TlsTerminator(asyncio.Protocol):
    """Sits on the raw transport; the inner protocol gets decrypted bytes and a `_TlsTransport`."""

    def __init__(
        self, context: ssl.SSLContext, inner: asyncio.Protocol, stats: ListenerStats, initial: bytes = b""
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.inner = inner
        self.stats = stats
        self.raw: asyncio.Transport | None = None
        self.transport = _TlsTransport(self)
        self.handshaken = False
        self.closing = False
        self.reading_paused = False
        self._initial = initial
        self._pending_plain: list[bytes] = []

    def __repr__(self) -> str:
        return f"<TlsTerminator handshaken={self.handshaken} closing={self.closing}>"

    # raw side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        if self._initial:
            data, self._initial = self._initial, b""
            self.data_received(data)

    def attach(self, raw: asyncio.Transport) -> None:
        """Take over an accepted transport whose first bytes were already read (PERMISSIVE sniffing)."""
        raw.set_protocol(self)
        self.connection_made(raw)

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.handshaken:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except ssl.SSLError as exc:
                self.stats.ssl_connection_error += 1
                log.debug("TLS handshake failed: %s", exc)
                self._flush()
                self.abort()
                return
            self.handshaken = True
            self.stats.ssl_handshake += 1
            self._flush()
            self.inner.connection_made(self.transport)
            for plain in self._pending_plain:
                self.write_plain(plain)
            self._pending_plain.clear()
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.sslobj.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._deliver(chunks)
                self.inner.eof_received()
                self.close()
                return
            except ssl.SSLError as exc:
                self.stats.ssl_connection_error += 1
                log.debug("TLS read failed: %s", exc)
                self.abort()
                return
            if not chunk:
                break
            chunks.append(chunk)
        self._flush()  # key updates, session tickets
        self._deliver(chunks)

    def _deliver(self, chunks: list[bytes]) -> None:
        if chunks and not self.closing:
            self.inner.data_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    def eof_received(self) -> bool | None:
        if self.handshaken:
            self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.handshaken:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.handshaken:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.handshaken:
            self.inner.resume_writing()

    # inner side
    def write_plain(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.handshaken:
            self._pending_plain.append(data)
            return
        view = memoryview(data)
        while view:
            written = self.sslobj.write(view)
            view = view[written:]
        self._flush()

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out and self.raw is not None and not self.raw.is_closing():
            self.raw.write(out)

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
        if self.closing:
            return
        self.closing = True
        if self.handshaken:
            with contextlib.suppress(ssl.SSLError):
                self.sslobj.unwrap()
            self._flush()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()
