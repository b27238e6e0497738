"""The SDS client's protobuf messages against the authority: the classes generated from Envoy's own .proto
files (xds-protos). What meshproxy writes must parse as Envoy's DiscoveryRequest; what an SDS server writes
with Envoy's classes must read back the same through meshproxy's small decoder."""

from __future__ import annotations

import pytest

from meshproxy.codec import sds
from meshproxy.codec.protobuf import ProtobufError, fields, varint

pytestmark = pytest.mark.usefixtures("envoy_protos")  # tests/conftest.py


def test_discovery_requests_parse_as_envoys() -> None:
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

    node = sds.Node("mesh/apps/virtualNode/front", "front-cluster", "meshproxy", "0.1.0")
    first = DiscoveryRequest.FromString(sds.discovery_request(node, ("spiffe://apps/front",)))
    assert first.node.id == "mesh/apps/virtualNode/front"
    assert first.node.cluster == "front-cluster"
    assert (first.node.user_agent_name, first.node.user_agent_version) == ("meshproxy", "0.1.0")
    assert list(first.resource_names) == ["spiffe://apps/front"]
    assert first.type_url == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    assert first.version_info == "" and first.response_nonce == ""

    ack = DiscoveryRequest.FromString(
        sds.discovery_request(None, ("a",), version_info="v7", response_nonce="n7")
    )
    assert (ack.version_info, ack.response_nonce, ack.HasField("node"), ack.HasField("error_detail")) == (
        "v7",
        "n7",
        False,
        False,
    )
    nack = DiscoveryRequest.FromString(
        sds.discovery_request(None, ("a",), version_info="v7", response_nonce="n8", error="bad key")
    )
    assert (nack.version_info, nack.response_nonce) == ("v7", "n8")
    assert (nack.error_detail.code, nack.error_detail.message) == (3, "bad key")


def secret_response(version: str, nonce: str, *secrets: object, extra: object = None) -> bytes:
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

    response = DiscoveryResponse(version_info=version, nonce=nonce, type_url=sds.SECRET_TYPE_URL)
    for secret in secrets:
        response.resources.add().Pack(secret)
    if extra is not None:
        response.resources.add().Pack(extra)
    response.control_plane.identifier = "spire-agent"  # a field meshproxy skips
    return bytes(response.SerializeToString())


def test_secrets_written_by_envoys_classes_read_back() -> None:
    from envoy.config.core.v3.base_pb2 import DataSource
    from envoy.extensions.transport_sockets.tls.v3.common_pb2 import (
        CertificateValidationContext,
        TlsCertificate,
    )
    from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

    certificate = Secret(
        name="default",
        tls_certificate=TlsCertificate(
            certificate_chain=DataSource(inline_bytes=b"CHAIN"),
            private_key=DataSource(inline_string="KEY"),
        ),
    )
    bundle = Secret(
        name="ROOTCA",
        validation_context=CertificateValidationContext(
            trusted_ca=DataSource(filename="/run/spire/bundle.pem"), allow_expired_certificate=True
        ),
    )
    response = sds.parse_discovery_response(secret_response("v1", "n1", certificate, bundle))
    assert (response.version_info, response.nonce, response.type_url) == ("v1", "n1", sds.SECRET_TYPE_URL)
    assert [type_url for type_url, _ in response.resources] == [sds.SECRET_TYPE_URL] * 2
    parsed = [sds.parse_secret(value) for _, value in response.resources]
    assert parsed == [
        sds.Secret(
            "default",
            certificate_chain=sds.DataSource(inline=b"CHAIN"),
            private_key=sds.DataSource(inline=b"KEY"),
        ),
        sds.Secret("ROOTCA", trusted_ca=sds.DataSource(filename="/run/spire/bundle.pem")),
    ]
    env = Secret(
        name="env",
        tls_certificate=TlsCertificate(
            certificate_chain=DataSource(environment_variable="CHAIN"),
            private_key=DataSource(environment_variable="KEY"),
        ),
    )
    (resource,) = sds.parse_discovery_response(secret_response("v2", "n2", env)).resources
    assert sds.parse_secret(resource[1]).certificate_chain == sds.DataSource(environment_variable="CHAIN")


def test_other_resource_types_are_told_apart_and_malformed_bytes_refused() -> None:
    from envoy.config.core.v3.base_pb2 import Node

    response = sds.parse_discovery_response(secret_response("v1", "n1", extra=Node(id="x")))
    assert [type_url for type_url, _ in response.resources] == [
        "type.googleapis.com/envoy.config.core.v3.Node"
    ]
    with pytest.raises(ProtobufError):
        sds.parse_secret(b"")  # no name
    with pytest.raises(ProtobufError):
        list(fields(varint(1 << 3 | 2) + varint(100) + b"short"))  # 100 bytes announced, 5 present
    with pytest.raises(ProtobufError):
        list(fields(b"\x0f"))  # wire type 7


def test_grpc_framing_splits_and_joins_messages() -> None:
    reader = sds.GrpcMessageReader()
    stream = sds.grpc_frame(b"one") + sds.grpc_frame(b"") + sds.grpc_frame(b"three")
    got: list[bytes] = []
    for index in range(len(stream)):  # one byte at a time: messages span reads
        got += reader.feed(stream[index : index + 1])
    assert got == [b"one", b"", b"three"]
    assert reader.feed(sds.grpc_frame(b"a") + sds.grpc_frame(b"b")) == [b"a", b"b"]
    with pytest.raises(ProtobufError):
        sds.GrpcMessageReader().feed(b"\x01\x00\x00\x00\x01x")  # compressed, none negotiated
