"""Certificates as the TLS contexts use them: loading PEM material into an `ssl.SSLContext`, checking it
before it replaces what serves, and matching a peer's subject alternative names.

Python's `ssl` loads a certificate chain and key only from files; secrets that arrive over SDS are handed
to it through an anonymous in-memory file (`memfd_create`), so private keys never touch a disk, as App
Mesh promised for SDS ("without the private keys ever touching the file system", user guide, TLS).
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Iterable, Iterator, Mapping

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


class CertificateError(Exception):
    """Certificate material that cannot be used: unreadable, malformed, expired, or a key that does not
    match. The message names the file or the SDS secret."""


def first_certificate(chain: bytes) -> bytes | None:
    """The DER bytes of the first PEM certificate in `chain` (the leaf), or None if there is none."""
    start = chain.find(_PEM_CERTIFICATE)
    end = chain.find(_PEM_END, start)
    if start < 0 or end < 0:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[start : end + len(_PEM_END)].decode("ascii", "replace"))


def _der_items(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER item in data[offset:end] (X.690 definite lengths)."""
    while offset < end:
        tag = data[offset]
        length = data[offset + 1]
        offset += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
        yield tag, offset, offset + length
        offset += length


def not_after(der: bytes) -> datetime.datetime:
    """A certificate's validity end (RFC 5280 §4.1: Certificate -> tbsCertificate -> validity.notAfter).
    Raises ValueError when the DER is not shaped like a certificate."""
    try:
        _, start, end = next(_der_items(der, 0, len(der)))  # Certificate
        _, start, end = next(_der_items(der, start, end))  # tbsCertificate
        items = list(_der_items(der, start, end))
        if items and items[0][0] == 0xA0:  # explicit [0] version
            items = items[1:]
        _, start, end = items[3]  # serialNumber, signature, issuer, validity
        times = list(_der_items(der, start, end))
        tag, start, end = times[1]
    except (StopIteration, IndexError) as exc:
        raise ValueError("not an X.509 certificate") from exc
    value = der[start:end].decode("ascii")
    # UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ
    pattern = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return datetime.datetime.strptime(value, pattern).replace(tzinfo=datetime.UTC)


def check_not_expired(chain: bytes, source: str, now: datetime.datetime | None = None) -> None:
    """Raise CertificateError if the leaf certificate of `chain` has expired (or has none)."""
    der = first_certificate(chain)
    if der is None:
        raise CertificateError(f"{source}: no PEM certificate found")
    try:
        end = not_after(der)
    except ValueError as exc:
        raise CertificateError(f"{source}: {exc}") from None
    if end <= (now or datetime.datetime.now(datetime.UTC)):
        raise CertificateError(f"{source}: the certificate expired on {end:%Y-%m-%d %H:%M:%S} UTC")


def load_chain(context: ssl.SSLContext, chain: bytes, key: bytes, source: str) -> None:
    """Load a PEM chain and key held in memory into `context` (through an anonymous memory file)."""
    try:
        with _memory_file(chain + b"\n" + key) as path:
            context.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise CertificateError(f"{source}: {_ssl_reason(exc)}") from None


def load_trust(context: ssl.SSLContext, bundle: bytes, source: str) -> None:
    try:
        context.load_verify_locations(cadata=bundle.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise CertificateError(f"{source}: not a PEM trust bundle ({exc})") from None


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CertificateError(f"file {path}: {exc.strerror or exc}") from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the private key does not match the certificate"
    return exc.reason or str(exc)


class _memory_file:  # a context manager used like a function
    """A path to `data` that lives in memory only: a memfd on Linux, else an unlinked-on-exit temp file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fd = -1
        self.path = ""

    def __enter__(self) -> str:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("meshproxy-tls", os.MFD_CLOEXEC)
            os.write(self.fd, self.data)
            self.path = f"/proc/self/fd/{self.fd}"
        else:  # pragma: no cover - not Linux
            import tempfile  # here only: tempfile pulls in shutil, bz2 and lzma (~0.6 MiB in every worker)

            self.fd, self.path = tempfile.mkstemp(prefix="meshproxy-tls-")
            os.write(self.fd, self.data)
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        if not self.path.startswith("/proc/"):  # pragma: no cover - not Linux
            os.unlink(self.path)


def dns_name_match(expected: str, presented: str) -> bool:
    """Envoy's DNS SAN rule for an exact matcher: equal ignoring case, or a certificate wildcard `*.rest`
    standing for exactly one leftmost label (`*.apps.local` covers `a.apps.local`, not `apps.local` nor
    `a.b.apps.local`; Envoy's Utility::dnsNameMatch)."""
    expected, presented = expected.lower(), presented.lower()
    if expected == presented:
        return True
    if presented.startswith("*.") and "." in expected:
        label, rest = expected.split(".", 1)
        return bool(label) and rest == presented[2:]
    return False


def san_matches(peer: Mapping[str, object] | None, names: Iterable[str]) -> bool:
    """Whether a verified peer certificate (`SSLObject.getpeercert()`) carries one of `names`: DNS names by
    `dns_name_match`, URI (SPIFFE IDs), e-mail and IP SANs by equality (Envoy's exact SAN matchers, which
    App Mesh's `subjectAlternativeNames.match.exact` became)."""
    entries = peer.get("subjectAltName", ()) if peer else ()
    presented = [(kind, value) for kind, value in entries] if isinstance(entries, tuple) else []
    for name in names:
        for kind, value in presented:
            if kind == "DNS" and dns_name_match(name, value):
                return True
            if kind in ("URI", "email", "IP Address") and value == name:
                return True
    return False
