"""Certificate checks the TLS contexts make before material replaces what serves: the leaf's expiry read
from its DER, a key that matches, and Envoy's subject-alternative-name rules."""

from __future__ import annotations

import datetime
import ssl

import pytest
import trustme

from meshproxy.net.certificates import (
    CertificateError,
    check_not_expired,
    dns_name_match,
    first_certificate,
    load_chain,
    not_after,
    san_matches,
)


def test_not_after_is_read_from_the_certificate() -> None:
    ca = trustme.CA()
    end = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    cert = ca.issue_cert("blue.apps.local", not_after=end)
    der = first_certificate(cert.cert_chain_pems[0].bytes())
    assert der is not None and not_after(der) == end
    # GeneralizedTime (after 2049) as well as UTCTime
    late = datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    der = first_certificate(ca.issue_cert("x.local", not_after=late).cert_chain_pems[0].bytes())
    assert der is not None and not_after(der) == late


def test_expired_and_mismatched_material_is_refused_with_its_source() -> None:
    ca = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = ca.issue_cert("old.local", not_before=past - datetime.timedelta(days=1), not_after=past)
    with pytest.raises(CertificateError, match=r"file /certs/old.pem: the certificate expired on 2020-01-01"):
        check_not_expired(expired.cert_chain_pems[0].bytes(), "file /certs/old.pem")
    fresh, other = ca.issue_cert("a.local"), ca.issue_cert("b.local")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chain, wrong_key = fresh.cert_chain_pems[0].bytes(), other.private_key_pem.bytes()
    with pytest.raises(CertificateError, match=r"SDS secret 'default': the private key does not match"):
        load_chain(context, chain, wrong_key, "SDS secret 'default'")
    load_chain(context, chain, fresh.private_key_pem.bytes(), "SDS secret 'default'")  # the right key loads
    with pytest.raises(CertificateError, match="no PEM certificate"):
        check_not_expired(b"garbage", "file x")


@pytest.mark.parametrize(
    ("expected", "presented", "match"),
    [
        ("blue.apps.local", "blue.apps.local", True),
        ("Blue.Apps.Local", "blue.apps.local", True),
        ("blue.apps.local", "*.apps.local", True),  # a wildcard certificate serves the exact name
        ("apps.local", "*.apps.local", False),
        ("a.blue.apps.local", "*.apps.local", False),  # one label only
        ("blue.apps.local", "green.apps.local", False),
    ],
)
def test_dns_sans_follow_envoys_wildcard_rule(expected: str, presented: str, match: bool) -> None:
    assert dns_name_match(expected, presented) is match


def test_san_matching_by_kind() -> None:
    peer = {
        "subjectAltName": (
            ("DNS", "*.apps.local"),
            ("URI", "spiffe://apps.local/ns/default/sa/blue"),
            ("IP Address", "10.0.0.7"),
        )
    }
    assert san_matches(peer, ["blue.apps.local"])
    assert san_matches(peer, ["nope", "spiffe://apps.local/ns/default/sa/blue"])
    assert san_matches(peer, ["10.0.0.7"])
    assert not san_matches(peer, ["spiffe://apps.local/ns/default/sa/green", "apps.local"])
    assert not san_matches({}, ["blue.apps.local"]) and not san_matches(None, ["x"])


def test_an_sds_secret_is_checked_before_it_replaces_the_last_good_one() -> None:
    from meshproxy.net.secrets import SecretStore, TlsSecret

    ca = trustme.CA()
    good = ca.issue_cert("web.local")
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = ca.issue_cert("web.local", not_before=past - datetime.timedelta(days=1), not_after=past)
    store, updates = SecretStore(), []
    store.on_update.append(updates.append)
    first = TlsSecret("web", "v1", good.cert_chain_pems[0].bytes(), good.private_key_pem.bytes())
    store.accept(first)
    store.accept(first)  # the same version again (a reconnect): no rebuild
    assert updates == ["web"]
    stale = TlsSecret("web", "v2", expired.cert_chain_pems[0].bytes(), expired.private_key_pem.bytes())
    with pytest.raises(CertificateError, match=r"SDS secret 'web' version 'v2': the certificate expired"):
        store.accept(stale)
    with pytest.raises(CertificateError, match="without its private key"):
        store.accept(TlsSecret("web", "v3", good.cert_chain_pems[0].bytes()))
    with pytest.raises(CertificateError, match="not a PEM trust bundle"):
        store.accept(TlsSecret("ROOTCA", "r1", trusted_ca=b"garbage"))
    assert store.get("web") == first and updates == ["web"] and store.missing(["web", "ROOTCA"]) == ["ROOTCA"]
