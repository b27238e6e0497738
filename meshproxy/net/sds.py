"""The SDS client: Envoy's Secret Discovery Service over gRPC on the agent's unix socket (spec §1.8).

App Mesh pointed Envoy at `APPMESH_SDS_SOCKET_PATH` (SPIRE's agent socket on EKS) and fetched every `sds`
secret over it; meshproxy does the same with one HTTP/2 connection and one `StreamSecrets` stream per
secret name, as Envoy opens one subscription per SDS secret config. Each stream sends a DiscoveryRequest
for its name, takes every pushed DiscoveryResponse (rotation), hands the secret to the `SecretStore` and
acknowledges it, or NACKs it with the reason when the store refuses it (the last good secret stays).

The socket may be absent at start or go away (the agent restarts): the client retries with Envoy's xDS
back-off (0.5 s doubling to 30 s, jittered), logs once per outage naming the socket and the secrets, and
keeps serving the secrets it has. gRPC is spoken with the h2 library (already the proxy's HTTP/2 codec
library) and the small protobuf codec in codec/sds.py: no gRPC runtime in the proxy (grpcio brings its
own threads and fork handlers into processes that fork workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import random
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import H2Error

from meshproxy.codec import sds
from meshproxy.codec.protobuf import ProtobufError
from meshproxy.net.certificates import CertificateError
from meshproxy.net.secrets import SecretStore, SecretSubscriber, TlsSecret

log = logging.getLogger("meshproxy.sds")

AUTHORITY = "static_cluster_sds_unix_socket"  # the name Envoy's gRPC client used as :authority
INITIAL_BACKOFF_S = 0.5  # Envoy's xDS gRPC retry back-off (base 500 ms, max 30 s)
MAX_BACKOFF_S = 30.0
CONNECT_TIMEOUT_S = 1.0  # the agent's SDS cluster connect timeout (spec §1.8)


class SdsState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # between attempts
    CLOSED = "closed"


class _Stream:
    """One StreamSecrets stream: the secret it asks for and what it last accepted."""

    __slots__ = ("id", "name", "reader", "version")

    def __init__(self, name: str, stream_id: int, version: str) -> None:
        self.name = name
        self.id = stream_id
        self.version = version
        self.reader = sds.GrpcMessageReader()


def _header(headers: object, name: str) -> str | None:
    """A header of an h2 event (str pairs, as the connection decodes them)."""
    for key, value in headers or ():  # type: ignore[attr-defined]
        if key == name:
            return str(value)
    return None


def resolve(source: sds.DataSource | None, secret: str) -> bytes | None:
    """A DataSource's bytes: inline, a file the SDS server named, or an environment variable."""
    if source is None:
        return None
    if source.inline is not None:
        return source.inline
    if source.filename is not None:
        try:
            with open(source.filename, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise CertificateError(f"SDS secret {secret!r}: file {source.filename}: {exc.strerror}") from None
    if source.environment_variable is not None:
        value = os.environ.get(source.environment_variable)
        if value is None:
            raise CertificateError(f"SDS secret {secret!r}: ${source.environment_variable} is not set")
        return value.encode()
    return None


def tls_secret(secret: sds.Secret, version: str) -> TlsSecret:
    return TlsSecret(
        name=secret.name,
        version=version,
        certificate_chain=resolve(secret.certificate_chain, secret.name),
        private_key=resolve(secret.private_key, secret.name),
        trusted_ca=resolve(secret.trusted_ca, secret.name),
    )


def _same(connection: _SdsConnection) -> _SdsConnection:
    return connection


class _SdsConnection(asyncio.Protocol):
    """The HTTP/2 connection to the SDS server and its streams."""

    def __init__(self, client: SdsClient) -> None:
        self.client = client
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<SdsConnection streams={len(self.streams)}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        for name in sorted(self.client.names):
            self.open_stream(name)
        self.flush()

    def open_stream(self, name: str) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        accepted = self.client.store.get(name)
        # a new stream states the version it already has, so an unchanged secret is not pushed again
        stream = self.streams[stream_id] = _Stream(name, stream_id, accepted.version if accepted else "")
        self.h2.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", sds.STREAM_SECRETS_PATH),
                (":authority", AUTHORITY),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", "meshproxy"),
            ],
        )
        request = sds.discovery_request(self.client.node, (name,), version_info=stream.version)
        self.h2.send_data(stream_id, sds.grpc_frame(request))

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            log.warning("SDS: protocol error from %s: %s", self.client.path, exc)
            self.close()
            return
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._messages(stream, event.data)
        elif isinstance(event, ResponseReceived):
            status = _header(event.headers, ":status")
            if status != "200":
                log.warning("SDS: %s answered HTTP %s to StreamSecrets", self.client.path, status)
        elif isinstance(event, TrailersReceived | StreamEnded | StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                trailers = event.headers if isinstance(event, TrailersReceived) else None
                log.warning(
                    "SDS: the stream for secret %r ended (grpc-status %s %s); reconnecting",
                    stream.name,
                    _header(trailers, "grpc-status") or "-",
                    _header(trailers, "grpc-message") or "",
                )
                self.close()  # the client reconnects and reopens every stream
        elif isinstance(event, ConnectionTerminated):
            self.close()

    def _messages(self, stream: _Stream, data: bytes) -> None:
        try:
            messages = stream.reader.feed(data)
        except ProtobufError as exc:
            log.warning("SDS: stream for secret %r: %s", stream.name, exc)
            self.close()
            return
        for payload in messages:
            self._response(stream, payload)

    def _response(self, stream: _Stream, payload: bytes) -> None:
        try:
            response = sds.parse_discovery_response(payload)
        except ProtobufError as exc:
            log.warning("SDS: stream for secret %r: malformed DiscoveryResponse: %s", stream.name, exc)
            self.close()
            return
        error: str | None = None
        try:
            for type_url, value in response.resources:
                if type_url != sds.SECRET_TYPE_URL:
                    continue
                secret = sds.parse_secret(value)
                if secret.name == stream.name:
                    self.client.store.accept(tls_secret(secret, response.version_info))
        # two clauses, not one with a tuple: compiled by mypyc, a tuple of two native exception classes
        # binds `exc` as the first one and fails on the second (TypeError instead of a NACK)
        except ProtobufError as exc:
            error = str(exc)
        except CertificateError as exc:
            error = str(exc)
        if error is None:
            stream.version = response.version_info
        else:
            log.error("SDS: rejected an update of secret %r, keeping version %r: %s",
                      stream.name, stream.version, error)  # fmt: skip
        # ACK (the version now in use) or NACK (the previous version, with the reason), xDS protocol
        ack = sds.discovery_request(
            None, (stream.name,), version_info=stream.version, response_nonce=response.nonce, error=error
        )
        self.h2.send_data(stream.id, sds.grpc_frame(ack))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class SdsClient(SecretSubscriber):
    """Keeps one connection to the SDS server open while the proxy runs; `subscribe` adds secret names."""

    def __init__(
        self,
        path: str,
        node: sds.Node,
        store: SecretStore,
        *,
        initial_backoff: float = INITIAL_BACKOFF_S,
        max_backoff: float = MAX_BACKOFF_S,
    ) -> None:
        self.path = path
        self.node = node
        self.store = store
        self.names: set[str] = set()
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.state = SdsState.IDLE
        self.connection: _SdsConnection | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<SdsClient {self.path} {self.state.value} secrets={sorted(self.names)}>"

    def subscribe(self, name: str) -> None:
        if name in self.names:
            return
        self.names.add(name)
        connection = self.connection
        if connection is not None and self.state is SdsState.CONNECTED:
            connection.open_stream(name)
            connection.flush()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = self.initial_backoff
        outage: str | None = None
        loop = asyncio.get_running_loop()
        while self.state is not SdsState.CLOSED:
            self.state = SdsState.CONNECTING
            connection = _SdsConnection(self)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await loop.create_unix_connection(functools.partial(_same, connection), self.path)
            except (OSError, TimeoutError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                if outage != reason:  # once per outage, not once per retry
                    log.error("SDS: cannot reach %s (%s); secrets %s keep their last version; retrying",
                              self.path, reason, sorted(self.names))  # fmt: skip
                    outage = reason
            else:
                if outage is not None:
                    log.info("SDS: connected to %s", self.path)
                outage = None
                self.connection, self.state = connection, SdsState.CONNECTED
                started = loop.time()
                await connection.lost
                self.connection = None
                if self.state is SdsState.CLOSED:
                    return
                log.warning("SDS: connection to %s lost; secrets %s keep their last version; reconnecting",
                            self.path, sorted(self.names))  # fmt: skip
                outage = "connection lost"
                if loop.time() - started > self.max_backoff:
                    backoff = self.initial_backoff  # it was up for a while: start over
            self.state = SdsState.WAITING
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        self.state = SdsState.CLOSED
        if self.connection is not None:
            self.connection.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
