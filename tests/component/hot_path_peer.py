"""The other end of the hot-path test (test_hot_path.py), run as a separate process so that every count the
test takes of its own process (syscalls, allocations, Python calls) is the proxy's alone.

It runs an upstream on loopback (HTTP/1.1 answering every request head with a 4-byte body, or a TCP echo),
prints `PORT <upstream port>`, then serves commands from stdin, one per line, answering `ok` or `error ...`:

    http1 <proxy port> <n>   n sequential requests on one keep-alive HTTP/1.1 connection (kept for the next)
    h2 <proxy port> <n>      n sequential requests on one h2c (prior knowledge) connection, a stream each
    tcp <proxy port> <n>     n 64-byte round trips on one TCP connection

Blocking sockets only (no event loop): each request goes out in one send and every read is bounded by a
timeout, so a stuck proxy fails the command instead of hanging the test.
"""

from __future__ import annotations

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nblue"
REQUEST = b"GET /color HTTP/1.1\r\nHost: color.demo.local\r\n\r\n"
MESSAGE = b"m" * 64
TIMEOUT_S = 10.0


def serve_http1(conn: socket.socket) -> None:
    buffer = b""
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                conn.sendall(RESPONSE)


def serve_echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def upstream(kind: str) -> int:
    server = socket.create_server(("127.0.0.1", 0))
    handler = serve_echo if kind == "tcp" else serve_http1

    def accept_forever() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    return int(server.getsockname()[1])


class Client:
    """One connection through the proxy, of one kind, kept across commands."""

    def __init__(self, kind: str, port: int) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2: h2.connection.H2Connection | None = None
        if kind == "h2":
            self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            self.h2.initiate_connection()
            self.sock.sendall(self.h2.data_to_send())

    def http1(self) -> None:
        self.sock.sendall(REQUEST)
        received = b""
        while not received.endswith(b"blue"):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            received += data
        if not received.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"unexpected answer {received[:80]!r}")

    def h2_request(self) -> None:
        conn = self.h2
        assert conn is not None
        stream = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "color.demo.local")]
        conn.send_headers(stream, [*headers, (":path", "/color")], end_stream=True)
        self.sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    ended = True
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    raise ConnectionError(f"unexpected {event}")
            pending = conn.data_to_send()  # SETTINGS acknowledgements: none once the connection is set up
            if pending:
                self.sock.sendall(pending)

    def tcp(self) -> None:
        self.sock.sendall(MESSAGE)
        received = b""
        while len(received) < len(MESSAGE):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            received += data

    def run(self, count: int) -> None:
        step = {"http1": self.http1, "h2": self.h2_request, "tcp": self.tcp}[self.kind]
        for _ in range(count):
            step()


def main() -> None:
    kind = sys.argv[1]
    print(f"PORT {upstream(kind)}", flush=True)
    clients: dict[str, Client] = {}
    for line in sys.stdin:
        command, port, count = line.split()
        try:
            client = clients.get(command) or clients.setdefault(command, Client(command, int(port)))
            client.run(int(count))
        except (OSError, ValueError) as exc:
            print(f"error {exc}", flush=True)
            continue
        print("ok", flush=True)


if __name__ == "__main__":
    main()
