"""Client-side probes of a listening port, shared by the acceptor tests."""

from __future__ import annotations

import socket


def refused_at_once(port: int) -> bool:
    """A blocking connect from the loop's own thread, before the loop turns again: refused (True), or
    accepted by the kernel (False)."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(1.0)
    try:
        client.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        client.close()
    return False
