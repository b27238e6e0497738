"""Envoy's Secret Discovery Service messages, as the SDS client sends and reads them (no I/O).

SDS is xDS for secrets: the client opens `envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`, a
bidirectional gRPC stream, and sends a `DiscoveryRequest` naming the secrets it wants; the server answers
with `DiscoveryResponse`s whose resources are `envoy.extensions.transport_sockets.tls.v3.Secret`s, and pushes
a new response whenever a secret rotates. Each response is acknowledged with a request that carries its
`version_info` and `nonce` (a NACK adds `error_detail` and keeps the last accepted version): the xDS
protocol, envoyproxy.io "xDS REST and gRPC protocol", ACK/NACK.

Field numbers are those of Envoy's v3 .proto files (discovery.proto, base.proto, secret.proto,
common.proto), checked in tests against the generated classes of the xds-protos package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from meshproxy.codec.protobuf import ProtobufError, by_number, integer, length_delimited, string, text

STREAM_SECRETS_PATH = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
INVALID_ARGUMENT = 3  # google.rpc.Code of a NACK's error_detail
# gRPC over HTTP/2, Length-Prefixed-Message: a compressed flag, the message length
_GRPC_PREFIX = struct.Struct(">BI")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default receive limit


@dataclass(frozen=True, slots=True)
class Node:
    """The proxy as the SDS server sees it (envoy.config.core.v3.Node: id 1, cluster 2, user_agent_name 6,
    user_agent_version 7)."""

    id: str
    cluster: str
    user_agent_name: str = "meshproxy"
    user_agent_version: str = ""


@dataclass(frozen=True, slots=True)
class DataSource:
    """envoy.config.core.v3.DataSource: filename 1, inline_bytes 2, inline_string 3,
    environment_variable 4."""

    filename: str | None = None
    inline: bytes | None = None
    environment_variable: str | None = None


@dataclass(frozen=True, slots=True)
class Secret:
    """The parts of an envoy.extensions.transport_sockets.tls.v3.Secret a mesh proxy uses: a certificate
    (tls_certificate 2: certificate_chain 1, private_key 2) or a trust bundle (validation_context 4:
    trusted_ca 1)."""

    name: str
    certificate_chain: DataSource | None = None
    private_key: DataSource | None = None
    trusted_ca: DataSource | None = None


@dataclass(frozen=True, slots=True)
class DiscoveryResponse:
    """envoy.service.discovery.v3.DiscoveryResponse: version_info 1, resources 2 (google.protobuf.Any),
    type_url 4, nonce 5."""

    version_info: str
    resources: tuple[tuple[str, bytes], ...]  # (Any.type_url, Any.value)
    type_url: str
    nonce: str


def discovery_request(
    node: Node | None,
    names: tuple[str, ...],
    *,
    version_info: str = "",
    response_nonce: str = "",
    error: str | None = None,
) -> bytes:
    """A DiscoveryRequest for `names` (version_info 1, node 2, resource_names 3, type_url 4, response_nonce 5,
    error_detail 6 as google.rpc.Status{code 1, message 2}). The node goes on a stream's first request."""
    out = [string(1, version_info)]
    if node is not None:
        encoded = (
            string(1, node.id)
            + string(2, node.cluster)
            + string(6, node.user_agent_name)
            + string(7, node.user_agent_version)
        )
        out.append(length_delimited(2, encoded))
    out.extend(length_delimited(3, name.encode()) for name in names)
    out.append(string(4, SECRET_TYPE_URL))
    out.append(string(5, response_nonce))
    if error is not None:
        out.append(length_delimited(6, integer(1, INVALID_ARGUMENT) + string(2, error)))
    return b"".join(out)


def _last(found: dict[int, list[bytes]], number: int) -> bytes | None:
    """A singular field: the last value wins (protobuf merging rules)."""
    values = found.get(number)
    return values[-1] if values else None


def _text(found: dict[int, list[bytes]], number: int) -> str:
    value = _last(found, number)
    return "" if value is None else text(value)


def parse_discovery_response(data: bytes) -> DiscoveryResponse:
    found = by_number(data)
    return DiscoveryResponse(
        version_info=_text(found, 1),
        resources=tuple(_any(value) for value in found.get(2, ())),
        type_url=_text(found, 4),
        nonce=_text(found, 5),
    )


def _any(data: bytes) -> tuple[str, bytes]:
    """google.protobuf.Any: type_url 1, value 2."""
    found = by_number(data)
    return _text(found, 1), _last(found, 2) or b""


def _data_source(data: bytes | None) -> DataSource | None:
    if data is None:
        return None
    found = by_number(data)
    inline = _last(found, 2)
    return DataSource(
        filename=_text(found, 1) or None,
        inline=inline if inline is not None else _last(found, 3),
        environment_variable=_text(found, 4) or None,
    )


def parse_secret(data: bytes) -> Secret:
    """A Secret resource; raises ProtobufError when it is malformed or has no name."""
    found = by_number(data)
    name = _text(found, 1)
    if not name:
        raise ProtobufError("a Secret without a name")
    certificate = by_number(_last(found, 2) or b"")
    validation = by_number(_last(found, 4) or b"")
    return Secret(
        name,
        certificate_chain=_data_source(_last(certificate, 1)),
        private_key=_data_source(_last(certificate, 2)),
        trusted_ca=_data_source(_last(validation, 1)),
    )


def grpc_frame(payload: bytes) -> bytes:
    """One gRPC Length-Prefixed-Message, uncompressed."""
    return _GRPC_PREFIX.pack(0, len(payload)) + payload


class GrpcMessageReader:
    """Splits a gRPC stream's DATA into messages (they may span or share DATA frames)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def __repr__(self) -> str:
        return f"<GrpcMessageReader buffered={len(self._buffer)}>"

    def feed(self, data: bytes) -> list[bytes]:
        """Complete messages in `data` and what came before it. Raises ProtobufError for a compressed
        message (none was negotiated) or one above MAX_MESSAGE_BYTES."""
        buffer = self._buffer + data
        messages: list[bytes] = []
        while len(buffer) >= _GRPC_PREFIX.size:
            compressed, size = _GRPC_PREFIX.unpack_from(buffer)
            if compressed:
                raise ProtobufError("compressed gRPC message, but no compression was negotiated")
            if size > MAX_MESSAGE_BYTES:
                raise ProtobufError(f"gRPC message of {size} bytes is above {MAX_MESSAGE_BYTES}")
            if len(buffer) < _GRPC_PREFIX.size + size:
                break
            messages.append(buffer[_GRPC_PREFIX.size : _GRPC_PREFIX.size + size])
            buffer = buffer[_GRPC_PREFIX.size + size :]
        self._buffer = buffer
        return messages
