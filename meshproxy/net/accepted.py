"""What every protocol object on an accepted client connection knows of its socket: the peer's address,
whether it is TLS that this listener terminated, for a connection iptables redirected here, where it was
originally going (read on first use), and its delayed close once the proxy has begun to close it."""

from __future__ import annotations

import asyncio

from meshproxy.net.delayed_close import DelayedClose
from meshproxy.net.original_dst import Redirect


class AcceptedConnection:
    """Mixin for the connection managers and the dispatcher (they set `redirect`, `peer`, `peer_ip`,
    `secure`, `closing`)."""

    __slots__ = ("closing", "peer", "peer_ip", "redirect", "secure")

    def __init__(self, redirect: Redirect | None) -> None:
        self.redirect = redirect
        self.peer = "-"
        self.peer_ip = b"-"
        self.secure = False  # the transport is a TLS session's (net/tls.py): x-forwarded-proto https
        self.closing: DelayedClose | None = None  # the proxy is closing it: what arrives is dropped

    @property
    def original_destination(self) -> tuple[str, int] | None:
        return self.redirect.destination if self.redirect is not None else None

    @property
    def original_port(self) -> int | None:
        return self.redirect.port if self.redirect is not None else None

    def note_peer(self, transport: asyncio.BaseTransport) -> None:
        self.secure = transport.get_extra_info("ssl_object") is not None
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0]).encode()
            self.peer = f"{peer[0]}:{peer[1]}"
