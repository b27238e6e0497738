"""grpcio servers and clients for the e2e tests, without generated stubs (generic handlers on raw bytes).

`EchoServer(name)` serves service `demo.Echo`:

- `Unary`: answers `<name>:<request>`.
- `Stream`: server streaming; the request is a decimal count n, answered with n messages `<name>:<i>`.
- `Flaky`: fails the next `fail_first` calls with `fail_code` (trailers-only, as grpcio does when no
  message was sent), then answers like `Unary`.
- `Sleep`: sleeps the number of milliseconds in the request, then answers `<name>:slept`.
- `Collect`: client streaming; answers `<name>:` and the requests joined with commas.
- `Chat`: bidirectional; answers each request `m` with `<name>>m` as it arrives.

and service `demo.Admin` with `Whoami` (answers `<name>`), for routing by service name. Invocation metadata
is recorded per call (`metadata`), so tests can check what the proxy forwarded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

# Never let an HTTP proxy from the environment carry the test's gRPC traffic (grpc honours http_proxy).
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]


class EchoServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.calls: list[str] = []  # "<service>/<method>" per call
        self.metadata: list[dict[str, str]] = []
        self.fail_first = 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "demo.Echo",
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
                        "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
                        "Flaky": grpc.unary_unary_rpc_method_handler(self._flaky),
                        "Sleep": grpc.unary_unary_rpc_method_handler(self._sleep),
                        "Collect": grpc.stream_unary_rpc_method_handler(self._collect),
                        "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    "demo.Admin", {"Whoami": grpc.unary_unary_rpc_method_handler(self._whoami)}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __repr__(self) -> str:
        return f"<EchoServer {self.name} port={self.port} calls={len(self.calls)}>"

    def start(self) -> EchoServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=0).wait(5.0)

    def reset(self, fail_first: int = 0, fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        with self.lock:
            self.calls = []
            self.metadata = []
            self.fail_first = fail_first
            self.fail_code = fail_code

    def _record(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls.append(method)
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("demo.Echo/Unary", context)
        return self.name.encode() + b":" + request

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record("demo.Echo/Stream", context)
        for i in range(int(request)):
            yield f"{self.name}:{i}".encode()

    def _flaky(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("demo.Echo/Flaky", context)
        with self.lock:
            fail = self.fail_first > 0
            if fail:
                self.fail_first -= 1
        if fail:
            context.abort(self.fail_code, f"{self.name} is flaky")
        return self.name.encode() + b":" + request

    def _sleep(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("demo.Echo/Sleep", context)
        time.sleep(int(request) / 1000.0)
        return self.name.encode() + b":slept"

    def _collect(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._record("demo.Echo/Collect", context)
        return self.name.encode() + b":" + b",".join(requests)

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record("demo.Echo/Chat", context)
        for request in requests:
            yield self.name.encode() + b">" + request

    def _whoami(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("demo.Admin/Whoami", context)
        return self.name.encode()


class EchoClient:
    """A grpcio channel to a proxy port, with `:authority` set to the virtual service name."""

    def __init__(self, port: int, authority: str) -> None:
        options = [*CHANNEL_OPTIONS, ("grpc.default_authority", authority)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)

    def __enter__(self) -> EchoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def unary(
        self,
        method: str,
        request: bytes,
        *,
        timeout: float = 10.0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        call = self.channel.unary_unary(f"/{method}")
        reply: bytes = call(request, timeout=timeout, metadata=metadata)
        return reply

    def collect(self, method: str, requests: list[bytes], *, timeout: float = 10.0) -> bytes:
        call = self.channel.stream_unary(f"/{method}")
        reply: bytes = call(iter(requests), timeout=timeout)
        return reply

    def chat(self, method: str, requests: list[bytes], *, timeout: float = 10.0) -> list[bytes]:
        call = self.channel.stream_stream(f"/{method}")
        return list(call(iter(requests), timeout=timeout))

    def stream(self, method: str, request: bytes, *, timeout: float = 10.0) -> list[bytes]:
        call = self.channel.unary_stream(f"/{method}")
        return list(call(request, timeout=timeout))
