"""The TCP app behind the proxies for tcp-small and tcp-bulk: an echo server and a byte sink in one process.

`python -m bench.tcp_upstream --echo-port P --sink-port Q` (127.0.0.1 only):

- echo: uvloop and an asyncio Protocol that writes back whatever it reads, in one `transport.write` per read:
  the cheapest echo Python can do, so that it is not the bottleneck (the bench measures it direct too);
- sink: one blocking thread per connection reading into a reused 1 MiB buffer (no allocation per read)
  until EOF, then answering with the byte count as 8 big-endian bytes (`SINK_REPLY`) and closing. The count
  is the bulk client's figure: bytes that really crossed the proxy, not bytes its kernel buffered.

Nginx-light has no stream module and socat is not installed, hence this small server.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import cast

import uvloop

SINK_REPLY = struct.Struct(">Q")
SINK_BUFFER = 1 << 20


class EchoProtocol(asyncio.Protocol):
    """Writes every read back unchanged; half-close is answered by closing."""

    __slots__ = ("transport",)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too


def drain(conn: socket.socket) -> None:
    """Read `conn` to EOF into one reused buffer, then answer with the count and close."""
    buffer = bytearray(SINK_BUFFER)
    view = memoryview(buffer)
    total = 0
    with conn:
        try:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                total += n
            conn.sendall(SINK_REPLY.pack(total))
        except OSError:
            pass  # the client went away: nothing to answer


def serve_sink(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=drain, args=(conn,), name="sink", daemon=True).start()


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def serve_echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, sock=listen(port))
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tcp_upstream", description=__doc__)
    parser.add_argument("--echo-port", type=int, required=True)
    parser.add_argument("--sink-port", type=int, required=True)
    args = parser.parse_args(argv)
    for port in (args.echo_port, args.sink_port):
        if not 1 <= port <= 65535:
            parser.error(f"port {port} outside 1..65535")
    try:
        sink = listen(args.sink_port)
    except OSError as exc:
        print(f"tcp_upstream: cannot listen on {args.sink_port}: {exc}", file=sys.stderr)
        return 2
    threading.Thread(target=serve_sink, args=(sink,), name="sink-accept", daemon=True).start()
    try:
        uvloop.run(serve_echo(args.echo_port))
    except OSError as exc:
        print(f"tcp_upstream: cannot listen on {args.echo_port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
