"""A Secret Discovery Service for the tests: grpcio serving Envoy's own generated SDS service (xds-protos) on
a unix socket, as a SPIRE agent does for App Mesh's Envoy (spec §1.8).

`SdsServer.set_certificate` / `set_trust` publish a secret version and push it on every stream that asked for
that name; the requests the clients send (first request, ACKs, NACKs with their error) are recorded. The
server is proved correct against real Envoy loading a secret from it (tests/e2e/test_sds.py); meshproxy's
SDS client is tested against it.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True)
class SeenRequest:
    names: tuple[str, ...]
    version_info: str
    nonce: str
    error: str  # a NACK's error_detail.message ("" for a request or an ACK)
    node_id: str


class SdsServer:
    """Needs the `envoy_protos` fixture (Envoy's generated modules on the path)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.lock = threading.Lock()
        self.secrets: dict[str, tuple[str, Any]] = {}  # name -> (version, Secret message)
        self.streams: list[tuple[set[str], queue.Queue[Any]]] = []
        self.requests: list[SeenRequest] = []
        self.nonces = itertools.count(1)
        self.server: grpc.Server | None = None

    def __repr__(self) -> str:
        return f"<SdsServer {self.socket_path} secrets={sorted(self.secrets)} streams={len(self.streams)}>"

    # ------------------------------------------------------------------------------------ secrets
    def set_certificate(self, name: str, version: str, chain: bytes, key: bytes) -> None:
        from envoy.config.core.v3.base_pb2 import DataSource
        from envoy.extensions.transport_sockets.tls.v3.common_pb2 import TlsCertificate
        from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

        certificate = TlsCertificate(
            certificate_chain=DataSource(inline_bytes=chain), private_key=DataSource(inline_bytes=key)
        )
        self._publish(name, version, Secret(name=name, tls_certificate=certificate))

    def set_trust(self, name: str, version: str, bundle: bytes) -> None:
        from envoy.config.core.v3.base_pb2 import DataSource
        from envoy.extensions.transport_sockets.tls.v3.common_pb2 import CertificateValidationContext
        from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

        context = CertificateValidationContext(trusted_ca=DataSource(inline_bytes=bundle))
        self._publish(name, version, Secret(name=name, validation_context=context))

    def _publish(self, name: str, version: str, secret: Any) -> None:
        with self.lock:
            self.secrets[name] = (version, secret)
            for names, outbox in self.streams:
                if name in names:
                    outbox.put(self._response(name))

    def _response(self, name: str) -> Any:
        from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

        version, secret = self.secrets[name]
        response = DiscoveryResponse(version_info=version, type_url=SECRET_TYPE, nonce=str(next(self.nonces)))
        response.resources.add().Pack(secret)
        return response

    def nacks(self) -> list[SeenRequest]:
        with self.lock:
            return [r for r in self.requests if r.error]

    def acked(self, name: str, version: str) -> bool:
        with self.lock:
            return any(
                name in r.names and r.version_info == version and r.nonce and not r.error
                for r in self.requests
            )

    # ------------------------------------------------------------------------------------ gRPC
    def StreamSecrets(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        outbox: queue.Queue[Any] = queue.Queue()
        names: set[str] = set()
        entry = (names, outbox)

        def read() -> None:
            try:
                for request in requests:
                    seen = SeenRequest(
                        tuple(request.resource_names),
                        request.version_info,
                        request.response_nonce,
                        request.error_detail.message,
                        request.node.id,
                    )
                    with self.lock:
                        self.requests.append(seen)
                        new = [n for n in request.resource_names if n not in names]
                        names.update(new)
                        for name in new:
                            # a client that already has this version is not sent it again (xDS versions)
                            if name in self.secrets and self.secrets[name][0] != request.version_info:
                                outbox.put(self._response(name))
            except grpc.RpcError:
                pass
            outbox.put(None)

        with self.lock:
            self.streams.append(entry)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while context.is_active():
                try:
                    item = outbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield item
        finally:
            with self.lock:
                self.streams.remove(entry)

    def FetchSecrets(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            return self._response(request.resource_names[0])

    def DeltaSecrets(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not served here")
        yield from ()

    def start(self) -> SdsServer:
        from envoy.service.secret.v3 import sds_pb2_grpc

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self.server)  # type: ignore[arg-type]
        self.server.add_insecure_port(f"unix:{self.socket_path}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait(5)
            self.server = None
        self.socket_path.unlink(missing_ok=True)
