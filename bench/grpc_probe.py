"""One real gRPC unary call through a proxy: `python -m bench.grpc_probe --port P --authority A --path /S/M`.

h2load counts an HTTP 200 as success, but a gRPC call only succeeds when the response message arrives *and*
the `grpc-status: 0` trailer comes through: a proxy that drops trailers, or answers UNAVAILABLE as a
trailers-only 200, would look fine to h2load. grpcio checks both. It runs in its own process so that
grpcio's threads never share the harness process while it measures.

Exit 0 and prints `ok <n> bytes` on success; exit 1 with the gRPC status on failure; exit 3 when grpcio is
not installed (the harness then says it could not check trailers).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_NO_GRPCIO = 3


def call(port: int, authority: str, path: str, request: bytes, timeout_s: float) -> bytes:
    import grpc  # the [test] extra; imported here so `--help` and the exit code work without it

    options = [("grpc.default_authority", authority), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        # No (de)serializers: raw message bytes in and out.
        unary = channel.unary_unary(path)
        response: bytes = unary(request, timeout=timeout_s)
        return response


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_probe", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--authority", required=True)
    parser.add_argument("--path", required=True, help="/<package.Service>/<Method>")
    parser.add_argument("--request-hex", default="", help="the request message (without gRPC framing), hex")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535 or not args.path.startswith("/") or not 0 < args.timeout <= 60:
        parser.error("--port 1..65535, --path starting with /, --timeout 0..60")
    try:
        import grpc
    except ImportError:
        print("grpcio is not installed", file=sys.stderr)
        return EXIT_NO_GRPCIO
    try:
        response = call(args.port, args.authority, args.path, bytes.fromhex(args.request_hex), args.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"gRPC call failed: {code} {details}", file=sys.stderr)
        return 1
    print(f"ok {len(response)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
