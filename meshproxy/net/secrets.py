"""SDS secrets by name, as last accepted: what `sds` certificates and trust bundles resolve to.

The SDS client (net/sds.py) hands every secret it receives to `SecretStore.accept`, which checks it the way
a TLS context would load it (a certificate that parses, has not expired and matches its key; a trust bundle
that parses) before it replaces the previous version: a bad push is refused (the client NACKs it, naming
the reason) and the last good secret keeps serving. The TLS contexts that use a secret
(net/tls_contexts.py) are rebuilt as soon as it is accepted (`on_update`); established connections keep
theirs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshproxy.net.certificates import CertificateError, check_not_expired, load_chain, load_trust

log = logging.getLogger("meshproxy.tls")


@dataclass(frozen=True, slots=True)
class TlsSecret:
    """One SDS secret, resolved to PEM bytes: a certificate with its key, or a trust bundle."""

    name: str
    version: str
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    trusted_ca: bytes | None = None

    def check(self) -> None:
        """Raise CertificateError if the secret cannot serve (what loading it into a context would find)."""
        source = f"SDS secret {self.name!r} version {self.version!r}"
        if self.certificate_chain is None and self.trusted_ca is None:
            raise CertificateError(f"{source}: neither a tls_certificate nor a validation_context")
        if self.certificate_chain is not None:
            if self.private_key is None:
                raise CertificateError(f"{source}: a certificate without its private key")
            check_not_expired(self.certificate_chain, source)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            load_chain(context, self.certificate_chain, self.private_key, source)
        if self.trusted_ca is not None:
            load_trust(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.trusted_ca, source)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SecretSubscriber:
    """What the store asks of the SDS client: fetch these names (net/sds.py implements it)."""

    def subscribe(self, name: str) -> None:
        raise NotImplementedError


class SecretStore:
    """Secrets by name; `on_update` listeners hear of every accepted one."""

    def __init__(self, subscriber: SecretSubscriber | None = None) -> None:
        self.subscriber = subscriber
        self.secrets: dict[str, TlsSecret] = {}
        self.wanted: set[str] = set()
        self.on_update: list[Callable[[str], None]] = []  # called with the name of each accepted secret
        self._waiters: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<SecretStore secrets={len(self.secrets)} wanted={len(self.wanted)}>"

    @property
    def available(self) -> bool:
        """Whether secrets can be fetched at all (APPMESH_SDS_SOCKET_PATH is set)."""
        return self.subscriber is not None

    def get(self, name: str) -> TlsSecret | None:
        return self.secrets.get(name)

    def want(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.wanted:
                self.wanted.add(name)
                if self.subscriber is not None:
                    self.subscriber.subscribe(name)

    def accept(self, secret: TlsSecret) -> None:
        """Take a delivered secret; raises CertificateError (and keeps the previous one) if it is unusable."""
        previous = self.secrets.get(secret.name)
        if previous is not None and previous == secret:
            return  # the same material again (a reconnect): nothing to rebuild
        secret.check()
        self.secrets[secret.name] = secret
        if previous is None:
            log.info("SDS secret %r version %r received", secret.name, secret.version)
        else:
            log.info("SDS secret %r rotated: version %r -> %r", secret.name, previous.version, secret.version)
        for listener in self.on_update:
            listener(secret.name)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter()

    def missing(self, names: Iterable[str]) -> list[str]:
        return sorted(name for name in names if name not in self.secrets)

    async def wait_for(self, names: Iterable[str], timeout: float) -> list[str]:
        """Wait until every one of `names` has arrived, at most `timeout` seconds; the names still missing."""
        wanted = list(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.missing(wanted) and loop.time() < deadline:
            arrived: asyncio.Future[None] = loop.create_future()
            self._waiters.append(functools.partial(_wake, arrived))
            try:
                await asyncio.wait_for(arrived, deadline - loop.time())
            except TimeoutError:
                break
        return self.missing(wanted)
