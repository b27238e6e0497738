"""Listening sockets for the proxy's listeners (ingress, egress, gateway ports, admin)."""

from __future__ import annotations

import socket

LISTEN_BACKLOG = 4096  # Envoy's default (tcp_backlog_size); the kernel caps it at net.core.somaxconn


def listening_socket(address: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A non-blocking TCP listening socket; SO_REUSEPORT lets several worker processes share the port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
