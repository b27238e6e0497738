"""A tiny TCP probe for the netns tests, run inside namespaces (often as UID 1337). Not a test module.

probe.py serve --name NAME [--host ADDR] PORT [PORT ...]
    Listen on every port; print "READY" once listening. For each connection write one JSON line
    {"server", "uid", "local", "peer", "original_dst", "received"} and close. Runs until SIGTERM.
    `original_dst` is what meshproxy.net.original_dst.original_destination reads (None when not redirected).
probe.py connect HOST PORT [--send TEXT]
    Connect, send TEXT and a newline, print what the server wrote (one JSON line), or {"error": ...}.
probe.py late HOST PORT --wait SECONDS --authority NAME [--path PATH]
    Connect, say nothing for SECONDS (a pooled or pre-warmed connection), then send one HTTP/1.1 GET with
    `Connection: close`; print {"status", "body"} of the answer, or {"error": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any

from meshproxy.net.original_dst import original_destination

IO_TIMEOUT_S = 5.0


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def _answer(name: str, conn: socket.socket) -> None:
    with conn:
        conn.settimeout(IO_TIMEOUT_S)
        try:
            dst = original_destination(conn)
            reply: dict[str, Any] = {"original_dst": list(dst) if dst else None}
        except OSError as exc:
            reply = {"original_dst_error": str(exc)}
        received = b""
        try:
            while not received.endswith(b"\n") and len(received) < 4096:  # the client sends one line
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        reply.update(
            server=name,
            uid=os.getuid(),
            local=list(conn.getsockname()[:2]),
            peer=list(conn.getpeername()[:2]),
            received=received.decode("latin-1").rstrip("\n"),
        )
        conn.settimeout(IO_TIMEOUT_S)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")


def serve(name: str, host: str, ports: list[int]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    for port in ports:
        selector.register(_listener(host, port), selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in selector.select():
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            conn, _ = listener.accept()
            _answer(name, conn)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_: str = "http"

    def _reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        dst = original_destination(self.connection)
        reply = {
            "server": self.server_name_,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("latin-1"),
            "local": list(self.connection.getsockname()[:2]),
            "peer": list(self.client_address[:2]),
            "original_dst": list(dst) if dst else None,
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)


def serve_http(name: str, host: str, ports: list[int]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    handler = type("Handler", (_EchoHandler,), {"server_name_": name})
    servers = [_Server(host, port, handler) for port in ports]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("READY", flush=True)
    servers[0].serve_forever()
    return 0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(IO_TIMEOUT_S)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)


def serve_echo(host: str, port: int) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer((host, port), _Echo)
    print("READY", flush=True)
    server.serve_forever()
    return 0


def connect(host: str, port: int, send: str) -> int:
    # Read one line (every server here answers with one line: JSON, or the echo of ours) or until EOF.
    data = b""
    try:
        with socket.create_connection((host, port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(send.encode("latin-1") + b"\n")
            while not data.endswith(b"\n") and (chunk := sock.recv(65536)):
                data += chunk
    except OSError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "raw": data.decode("latin-1").strip()}))
        return 1
    text = data.decode("latin-1").strip()
    print(text if text.startswith("{") else json.dumps({"error": "no JSON reply", "raw": text}))
    return 0


def late(host: str, port: int, wait: float, authority: str, path: str) -> int:
    request = f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
    data = b""
    try:
        with socket.create_connection((host, port), timeout=IO_TIMEOUT_S + wait) as sock:
            time.sleep(wait)
            sock.sendall(request)
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "raw": data.decode("latin-1")}))
        return 1
    head, _, body = data.decode("latin-1").partition("\r\n\r\n")
    status = head.split(" ", 2)[1] if head.startswith("HTTP/1.") else "0"
    print(json.dumps({"status": int(status), "body": body}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="probe.py")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("ports", type=int, nargs="+")
    h = sub.add_parser("http")
    h.add_argument("--name", required=True)
    h.add_argument("--host", default="0.0.0.0")
    h.add_argument("ports", type=int, nargs="+")
    e = sub.add_parser("echo")
    e.add_argument("--host", default="0.0.0.0")
    e.add_argument("port", type=int)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--send", default="")
    late_parser = sub.add_parser("late")
    late_parser.add_argument("host")
    late_parser.add_argument("port", type=int)
    late_parser.add_argument("--wait", type=float, required=True)
    late_parser.add_argument("--authority", required=True)
    late_parser.add_argument("--path", default="/")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.name, args.host, args.ports)
    if args.command == "http":
        return serve_http(args.name, args.host, args.ports)
    if args.command == "echo":
        return serve_echo(args.host, args.port)
    if args.command == "late":
        return late(args.host, args.port, args.wait, args.authority, args.path)
    return connect(args.host, args.port, args.send)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
