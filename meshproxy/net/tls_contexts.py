"""TLS contexts built from the configuration's certificate sources, kept current while the proxy runs.

A `TlsContextSource` turns one listener termination or one cluster origination into an `ssl.SSLContext`
from files and SDS secrets, and rebuilds it when they change, off the request path: files are checked once
a second by `TlsContexts.watch` (the certificate chain, the key, the trust bundle: all re-read on change),
an SDS secret rebuilds the contexts using it when it is accepted. A rebuild that fails (a file half
written, an expired certificate, a key that does not match) is logged once with the file or secret and the
previous context keeps serving; connections already up keep theirs either way (rotation without dropped
connections).

`TlsContexts` holds the sources of the current snapshot. `prepare(snapshot)` builds every source a new
snapshot needs before it is applied and raises `TlsConfigError` naming each file that cannot load, so an
update whose certificates cannot load is rejected whole (as Envoy rejects it, spec §6.5 "typical cause:
unreadable TLS files"). Sources whose configuration did not change are kept, with their contexts.

Versions and ciphers follow Envoy's defaults for App Mesh's era (TlsParameters): clients TLS 1.2 only,
servers TLS 1.2 to 1.3, ECDHE with AES-GCM or ChaCha20 for TLS 1.2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from meshproxy.config.snapshot import (
    CertificateSource,
    ListenerProtocol,
    PeerValidation,
    Snapshot,
    TlsOrigination,
    TlsTermination,
)
from meshproxy.net.certificates import CertificateError, check_not_expired, load_chain, load_trust, read_file
from meshproxy.net.secrets import SecretStore
from meshproxy.telemetry.stats import TlsStats

log = logging.getLogger("meshproxy.tls")

FILE_CHECK_INTERVAL_S: Final = 1.0
CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)
HTTP_ALPN: Final = ("h2", "http/1.1")  # what HTTP listeners offer: h2 over TLS, or HTTP/1.1


def listener_alpn(protocol: ListenerProtocol) -> tuple[str, ...]:
    """ALPN an HTTP listener offers (any of them serves h2 and HTTP/1.1); a TCP listener offers none."""
    return () if protocol is ListenerProtocol.TCP else HTTP_ALPN


def cluster_alpn(protocol: ListenerProtocol) -> tuple[str, ...]:
    """ALPN toward an upstream, by the cluster's protocol, as Envoy's connection pools set it."""
    if protocol in (ListenerProtocol.HTTP2, ListenerProtocol.GRPC):
        return ("h2",)
    return ("http/1.1",) if protocol is ListenerProtocol.HTTP else ()


class TlsConfigError(Exception):
    """Certificates a configuration names cannot load; `problems` names each file or secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TlsKey:
    """What one context is built from: the side, the certificate, the validation and the ALPN list."""

    server_side: bool
    certificate: CertificateSource | None
    validation: PeerValidation | None
    alpn: tuple[str, ...]
    require_client_certificate: bool = False

    @classmethod
    def server(cls, termination: TlsTermination, alpn: tuple[str, ...]) -> TlsKey:
        return cls(
            True,
            termination.certificate,
            termination.validation,
            alpn,
            termination.require_client_certificate,
        )

    @classmethod
    def client(cls, origination: TlsOrigination, alpn: tuple[str, ...]) -> TlsKey:
        return cls(False, origination.certificate, origination.validation, alpn)

    def files(self) -> tuple[str, ...]:
        certificate, validation = self.certificate, self.validation
        paths = []
        if certificate is not None and certificate.sds_secret is None:
            paths += [certificate.certificate_chain or "", certificate.private_key or ""]
        if validation is not None and validation.trust_file is not None:
            paths.append(validation.trust_file)
        return tuple(paths)

    def secrets(self) -> tuple[str, ...]:
        names = []
        if self.certificate is not None and self.certificate.sds_secret is not None:
            names.append(self.certificate.sds_secret)
        if self.validation is not None and self.validation.trust_sds_secret is not None:
            names.append(self.validation.trust_sds_secret)
        return tuple(names)


class SecretsNotReady(Exception):
    """An SDS secret the context needs has not arrived yet."""


def _file_stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TlsContextSource:
    """One SSLContext, current with its files and secrets. `context()` is what a new connection asks."""

    def __init__(self, key: TlsKey, secrets: SecretStore) -> None:
        self.key = key
        self.secrets = secrets
        self.files = key.files()
        self.secret_names = key.secrets()
        self.names = () if key.validation is None else key.validation.subject_alternative_names
        self.stats: list[TlsStats] = []  # the listeners' / clusters' ssl scopes using this context
        self._context: ssl.SSLContext | None = None
        self._stamps: tuple[tuple[int, int, int], ...] = ()
        self._failed: object = None  # the stamps of the last failed rebuild (logged once)

    def __repr__(self) -> str:
        side = "server" if self.key.server_side else "client"
        return f"<TlsContextSource {side} ready={self._context is not None} files={len(self.files)}>"

    def use(self, stats: TlsStats) -> None:
        if stats not in self.stats:
            self.stats.append(stats)

    def load(self) -> None:
        """The first build. Raises CertificateError (files); a missing SDS secret is not an error yet."""
        stamps = self._current_stamps()
        try:
            self._context = self._build()
        except SecretsNotReady:
            self._context = None
        self._stamps = stamps

    def context(self) -> ssl.SSLContext | None:
        """The current context (None while an SDS secret it needs has not arrived): what a new connection
        uses. Rebuilt off the request path, by `check_files` and `secret_changed`."""
        return self._context

    def check_files(self) -> None:
        """Rebuild if a certificate, key or trust file changed since the last build (or failed attempt)."""
        if self.files and self._current_stamps() != self._stamps:
            self._refresh(sds=False)

    def secret_changed(self) -> None:
        self._refresh(sds=True)

    def _current_stamps(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(_file_stamp(path) for path in self.files)

    def _refresh(self, sds: bool) -> None:
        stamps = self._current_stamps()
        try:
            context = self._build()
        except SecretsNotReady:
            return
        except CertificateError as exc:
            if self._failed != stamps or sds:
                log.error("TLS: cannot reload, the previous certificate keeps serving: %s", exc)
            self._failed = self._stamps = stamps  # logged once; a later change of the files tries again
            return
        self._context, self._stamps, self._failed = context, stamps, None
        if sds:
            for stats in self.stats:
                stats.context_update_by_sds += 1
        log.info("TLS: reloaded %s", ", ".join(self.files + self.secret_names))

    def _material(self, path: str | None, secret: str | None, part: str) -> tuple[bytes, str]:
        if secret is None:
            assert path is not None
            return read_file(path), f"file {path}"
        found = self.secrets.get(secret)
        value = None if found is None else getattr(found, part)
        if value is None:
            raise SecretsNotReady(secret)
        return value, f"SDS secret {secret!r}"

    def _build(self) -> ssl.SSLContext:
        key = self.key
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if key.server_side else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not key.server_side:
            context.maximum_version = ssl.TLSVersion.TLSv1_2  # Envoy's client default
            context.check_hostname = False  # SANs are matched as Envoy matches them (net/certificates.py)
        context.set_ciphers(CIPHERS)
        if key.alpn:
            context.set_alpn_protocols(list(key.alpn))
        certificate = key.certificate
        if certificate is not None:
            chain, source = self._material(
                certificate.certificate_chain, certificate.sds_secret, "certificate_chain"
            )
            private_key, _ = self._material(certificate.private_key, certificate.sds_secret, "private_key")
            check_not_expired(chain, source)
            load_chain(context, chain, private_key, source)
        validation = key.validation
        if validation is None:
            context.verify_mode = ssl.CERT_NONE
        else:
            bundle, source = self._material(validation.trust_file, validation.trust_sds_secret, "trusted_ca")
            load_trust(context, bundle, source)
            required = not key.server_side or key.require_client_certificate
            context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
        return context


class TlsContexts:
    """The TLS context sources of the current snapshot, by what they are built from. `watch()` (a task)
    checks their files once a second; an accepted SDS secret rebuilds the sources that use it at once."""

    def __init__(self, secrets: SecretStore) -> None:
        self.secrets = secrets
        self.sources: dict[TlsKey, TlsContextSource] = {}
        secrets.on_update.append(self._secret_updated)

    def _secret_updated(self, name: str) -> None:
        for source in self.sources.values():
            if name in source.secret_names:
                source.secret_changed()

    async def watch(self, interval: float = FILE_CHECK_INTERVAL_S) -> None:
        """Re-read changed certificate files for as long as the proxy runs (Envoy watches them too)."""
        while True:
            await asyncio.sleep(interval)
            for source in list(self.sources.values()):
                source.check_files()

    def __repr__(self) -> str:
        return f"<TlsContexts sources={len(self.sources)} {self.secrets!r}>"

    @staticmethod
    def keys_of(snapshot: Snapshot) -> list[TlsKey]:
        keys = [TlsKey.server(i.tls, listener_alpn(i.protocol)) for i in snapshot.ingress if i.tls]
        keys += [TlsKey.server(g.tls, listener_alpn(g.protocol)) for g in snapshot.gateway if g.tls]
        keys += [TlsKey.client(c.tls, cluster_alpn(c.protocol)) for c in snapshot.clusters.values() if c.tls]
        return list(dict.fromkeys(keys))

    def prepare(self, snapshot: Snapshot) -> dict[TlsKey, TlsContextSource]:
        """Every source `snapshot` needs, loaded; raises TlsConfigError listing what cannot load."""
        problems: list[str] = []
        prepared: dict[TlsKey, TlsContextSource] = {}
        for key in self.keys_of(snapshot):
            source = self.sources.get(key)
            if source is None:
                if key.secrets() and not self.secrets.available:
                    names = ", ".join(repr(n) for n in key.secrets())
                    problems.append(
                        f"SDS secret {names} needs APPMESH_SDS_SOCKET_PATH (the SDS agent socket)"
                    )
                    continue
                source = TlsContextSource(key, self.secrets)
                try:
                    source.load()
                except CertificateError as exc:
                    problems.append(str(exc))
                    continue
            prepared[key] = source
        if problems:
            raise TlsConfigError(list(dict.fromkeys(problems)))
        return prepared

    def commit(self, prepared: dict[TlsKey, TlsContextSource]) -> None:
        """Make `prepared` current and ask SDS for every secret it names."""
        self.sources = prepared
        self.secrets.want(name for key in prepared for name in key.secrets())

    def source(self, key: TlsKey) -> TlsContextSource | None:
        return self.sources.get(key)

    def wanted_secrets(self) -> Iterable[str]:
        return sorted({name for key in self.sources for name in key.secrets()})
