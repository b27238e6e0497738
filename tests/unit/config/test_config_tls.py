"""TLS in the compiled snapshot: listener termination, and which clusters originate TLS with what validation
(client policies, ports, enforce, the server-driven default, SAN defaults), as App Mesh configured Envoy
(user guide, TLS: "How App Mesh configures Envoys to negotiate TLS"; spec §4.2)."""

from __future__ import annotations

from typing import Any

import pytest

from meshproxy.config.compile import compile_snapshot
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
from meshproxy.config.errors import Severity
from meshproxy.config.snapshot import (
    CertificateSource,
    PeerValidation,
    Snapshot,
    TlsOrigination,
    TlsTermination,
)
from meshproxy.config.validate import validate
from meshproxy.settings import parse_identity

Item = dict[str, Any]
BLUE = "cds_egress_demo_blue_http_9001"
GREEN = "cds_egress_demo_green_http_9002"
TRUST = {"file": {"certificateChain": "/certs/ca.pem"}}


def mesh() -> list[Item]:
    items = colour_mesh(9001, 9002, 9000)
    items[2]["virtualNode"]["spec"]["serviceDiscovery"] = {"dns": {"hostname": "blue.demo.local"}}
    items[3]["virtualNode"]["spec"]["serviceDiscovery"] = {
        "awsCloudMap": {"namespaceName": "demo.local", "serviceName": "green"}
    }
    return items


def front(items: list[Item]) -> dict[str, Any]:
    spec: dict[str, Any] = items[1]["virtualNode"]["spec"]
    return spec


def listener_tls(items: list[Item], index: int, tls: dict[str, Any]) -> None:
    items[index]["virtualNode"]["spec"]["listeners"][0]["tls"] = tls


def issues_of(items: list[Item]) -> list[tuple[Severity, str]]:
    read = read_document(items, source="test.json")
    _, issues = validate(read.resources)
    return [(i.severity, str(i)) for i in read.issues + issues]


def build(items: list[Item], node: str = "virtualNode/front") -> Snapshot:
    read = read_document(items, source="test.json")
    resources, issues = validate(read.resources)
    assert [str(i) for i in read.issues + issues if i.severity is Severity.ERROR] == []
    identity = parse_identity({"APPMESH_RESOURCE_ARN": f"mesh/demo/{node}"})
    return compile_snapshot(resources, identity, version="v1")


def tls_of(snapshot: Snapshot, cluster: str) -> TlsOrigination | None:
    return snapshot.clusters[cluster].tls


def test_no_policy_and_no_server_tls_is_plaintext() -> None:
    snapshot = build(mesh())
    assert tls_of(snapshot, BLUE) is None and tls_of(snapshot, GREEN) is None
    assert all(c.tls is None for c in snapshot.clusters.values())


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_a_tls_listener_without_a_client_policy_gets_tls_without_validation(mode: str) -> None:
    items = mesh()
    certificate = {"file": {"certificateChain": "/certs/blue.pem", "privateKey": "/certs/blue.key"}}
    listener_tls(items, 2, {"mode": mode, "certificate": certificate})
    listener_tls(items, 3, {"mode": "DISABLED", "certificate": certificate})
    snapshot = build(items)
    assert tls_of(snapshot, BLUE) == TlsOrigination(validation=None)
    assert tls_of(snapshot, GREEN) is None


def test_backend_defaults_originate_tls_with_the_service_discovery_name_as_san() -> None:
    items = mesh()
    front(items)["backendDefaults"] = {"clientPolicy": {"tls": {"validation": {"trust": TRUST}}}}
    snapshot = build(items)
    assert tls_of(snapshot, BLUE) == TlsOrigination(
        validation=PeerValidation(trust_file="/certs/ca.pem", subject_alternative_names=("blue.demo.local",))
    )
    green = tls_of(snapshot, GREEN)  # Cloud Map: <service>.<namespace>
    assert green is not None and green.validation is not None
    assert green.validation.subject_alternative_names == ("green.demo.local",)
    # the local app is never reached over TLS (App Mesh: app <-> proxy is plaintext)
    assert snapshot.clusters["cds_ingress_demo_front_http_9000"].tls is None


def test_listed_sans_and_client_certificates() -> None:
    items = mesh()
    front(items)["backendDefaults"] = {
        "clientPolicy": {
            "tls": {
                "validation": {
                    "trust": {"sds": {"secretName": "spiffe://demo.local"}},
                    "subjectAlternativeNames": {"match": {"exact": ["spiffe://demo.local/ns/a/sa/blue"]}},
                },
                "certificate": {"sds": {"secretName": "spiffe://demo.local/ns/a/sa/front"}},
            }
        }
    }
    assert tls_of(build(items), BLUE) == TlsOrigination(
        validation=PeerValidation(
            trust_sds_secret="spiffe://demo.local",
            subject_alternative_names=("spiffe://demo.local/ns/a/sa/blue",),
        ),
        certificate=CertificateSource(sds_secret="spiffe://demo.local/ns/a/sa/front"),
    )
    front(items)["backendDefaults"]["clientPolicy"]["tls"]["certificate"] = {
        "file": {"certificateChain": "/certs/front.pem", "privateKey": "/certs/front.key"}
    }
    blue = tls_of(build(items), BLUE)
    assert blue is not None
    assert blue.certificate == CertificateSource(
        certificate_chain="/certs/front.pem", private_key="/certs/front.key"
    )


def test_ports_scope_the_policy() -> None:
    items = mesh()
    front(items)["backendDefaults"] = {
        "clientPolicy": {"tls": {"ports": [9002], "validation": {"trust": TRUST}}}
    }
    snapshot = build(items)
    assert tls_of(snapshot, BLUE) is None  # 9001 is not in `ports`, and blue terminates no TLS
    assert tls_of(snapshot, GREEN) is not None


@pytest.mark.parametrize(("server_mode", "expected"), [(None, False), ("DISABLED", False), ("STRICT", True)])
def test_enforce_false_falls_back_only_when_the_backend_has_no_tls(
    server_mode: str | None, expected: bool
) -> None:
    items = mesh()
    front(items)["backendDefaults"] = {
        "clientPolicy": {"tls": {"enforce": False, "validation": {"trust": TRUST}}}
    }
    if server_mode is not None:
        certificate = {"file": {"certificateChain": "/certs/blue.pem", "privateKey": "/certs/blue.key"}}
        listener_tls(items, 2, {"mode": server_mode, "certificate": certificate})
    blue = tls_of(build(items), BLUE)
    assert (blue is not None) is expected
    if blue is not None:  # with the policy's validation, not the unvalidated server-driven default
        assert blue.validation is not None and blue.validation.trust_file == "/certs/ca.pem"


def test_a_backends_own_policy_replaces_the_defaults() -> None:
    items = mesh()
    front(items)["backendDefaults"] = {"clientPolicy": {"tls": {"validation": {"trust": TRUST}}}}
    own = {"file": {"certificateChain": "/certs/colour-ca.pem"}}
    front(items)["backends"][0]["virtualService"]["clientPolicy"] = {"tls": {"validation": {"trust": own}}}
    blue = tls_of(build(items), BLUE)
    assert blue is not None and blue.validation is not None
    assert blue.validation.trust_file == "/certs/colour-ca.pem"


def test_gateway_backend_defaults_apply_to_its_targets() -> None:
    items = mesh()
    items += [
        {
            "virtualGateway": {
                "meshName": "demo",
                "virtualGatewayName": "gw",
                "spec": {
                    "listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}],
                    "backendDefaults": {"clientPolicy": {"tls": {"validation": {"trust": TRUST}}}},
                },
            }
        },
        {
            "gatewayRoute": {
                "meshName": "demo",
                "virtualGatewayName": "gw",
                "gatewayRouteName": "colour",
                "spec": {
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {"target": {"virtualService": {"virtualServiceName": "color.demo.local"}}},
                    }
                },
            }
        },
    ]
    snapshot = build(items, node="virtualGateway/gw")
    assert tls_of(snapshot, BLUE) is not None and tls_of(snapshot, GREEN) is not None


def test_listener_termination_with_client_validation() -> None:
    items = mesh()
    listener_tls(
        items,
        2,
        {
            "mode": "STRICT",
            "certificate": {"sds": {"secretName": "blue-cert"}},
            "validation": {
                "trust": {"file": {"certificateChain": "/certs/ca.pem"}},
                "subjectAlternativeNames": {"match": {"exact": ["front.demo.local"]}},
            },
        },
    )
    (ingress,) = build(items, node="virtualNode/blue").ingress
    expected = TlsTermination(
        mode="STRICT",
        certificate=CertificateSource(sds_secret="blue-cert"),
        validation=PeerValidation(
            trust_file="/certs/ca.pem", subject_alternative_names=("front.demo.local",)
        ),
    )
    assert ingress.tls == expected and expected.require_client_certificate
    # PERMISSIVE asks for a client certificate but lets clients without one in (the migration path)
    permissive = TlsTermination("PERMISSIVE", expected.certificate, expected.validation)
    assert not permissive.require_client_certificate


def test_acm_is_refused_with_the_way_to_move_and_sds_is_accepted() -> None:
    items = mesh()
    listener_tls(items, 2, {"mode": "STRICT", "certificate": {"acm": {"certificateArn": "arn:aws:acm:1"}}})
    front(items)["backendDefaults"] = {
        "clientPolicy": {
            "tls": {"validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:aws:acm-pca:1"]}}}}
        }
    }
    listener_tls(items, 3, {"mode": "STRICT", "certificate": {"sds": {"secretName": "green"}}})
    found = issues_of(items)
    errors = [text for severity, text in found if severity is Severity.ERROR]
    assert len(errors) == 2, found
    listener, policy = sorted(errors, key=lambda text: "blue" not in text)
    assert listener.startswith("virtualNode blue: spec.listeners[0].tls.certificate.acm: ACM certificates")
    assert "aws acm export-certificate" in listener and "`file`" in listener and "`sds`" in listener
    assert policy.startswith("virtualNode front: spec.backendDefaults.clientPolicy.tls.validation.trust.acm:")
    assert "get-certificate-authority-certificate" in policy and "trust.sds" in policy
    # unenforced, the same policy only warns (the backend's listener decides, user guide)
    front(items)["backendDefaults"]["clientPolicy"]["tls"]["enforce"] = False
    assert [s for s, text in issues_of(items) if "trust.acm" in text] == [Severity.WARNING]
