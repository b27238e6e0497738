"""Switching a client connection to HTTP/2: the h2c preface sniffer and the `Upgrade: h2c` switch.

The HTTP/1.1 connection manager only signals an acceptable `Upgrade: h2c` request (through
`ConnectionContext.h2c_upgrade`); the switch is performed here, in the listener layer, so neither
connection manager imports the other (hypercorn's pattern).
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import logging
from typing import cast

from h2.exceptions import H2Error

from meshproxy.codec import h2 as h2_codec
from meshproxy.core.events import Event, RequestHead, Upgraded
from meshproxy.downstream.context import ConnectionContext, UpgradeSource
from meshproxy.downstream.h1 import Http1ConnectionManager
from meshproxy.downstream.h2 import H2ConnectionManager
from meshproxy.downstream.h2_stream import H2StreamState
from meshproxy.net.original_dst import Redirect

log = logging.getLogger("meshproxy.http2")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
_UPGRADE_ONLY = frozenset({b"upgrade", b"http2-settings", b"connection"})


class PrefaceState(enum.Enum):
    SNIFFING = "sniffing"
    HANDED_OVER = "handed-over"
    CLOSED = "closed"


class PrefaceSniffer(asyncio.Protocol):
    """An http2/grpc listener that nothing redirects to (a virtual gateway's port): h2c with prior knowledge
    goes to the HTTP/2 manager, anything else to the HTTP/1.1 one (which may then ask `Upgrade: h2c`)."""

    __slots__ = ("buffer", "ctx", "redirect", "state", "transport")

    def __init__(self, ctx: ConnectionContext, redirect: Redirect | None = None) -> None:
        self.ctx = ctx
        self.redirect = redirect  # a redirected connection's original destination, for the manager
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.state = PrefaceState.SNIFFING

    def __repr__(self) -> str:
        return f"<PrefaceSniffer {self.ctx.local_address} {self.state.value}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer = self.buffer + data
        if len(buffer) < len(H2_PREFACE) and H2_PREFACE.startswith(buffer):
            return
        transport = self.transport
        assert transport is not None
        protocol: asyncio.Protocol
        if buffer.startswith(H2_PREFACE):
            protocol = H2ConnectionManager(self.ctx, self.redirect)
        else:
            protocol = Http1ConnectionManager(self.ctx, self.redirect)
        self.state = PrefaceState.HANDED_OVER
        self.buffer = b""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = PrefaceState.CLOSED


def upgrade_to_h2c(
    ctx: ConnectionContext, h1: UpgradeSource, head: RequestHead, settings: bytes, rest: list[Event]
) -> bool:
    """Take over `h1`'s transport: answer 101, then serve `head` as stream 1 and the rest as HTTP/2.
    `rest` holds the events the HTTP/1.1 codec parsed after the head. False (nothing done) if the
    HTTP2-Settings value is malformed; the request is then served over HTTP/1.1."""
    transport = h1.transport
    if transport is None:
        return False
    manager = H2ConnectionManager(ctx, h1.redirect)
    try:
        manager.h2.initiate_upgrade_connection(settings)
    except (H2Error, ValueError, binascii.Error) as exc:
        log.debug("downstream %s: bad HTTP2-Settings: %s", h1.peer, exc)
        return False
    h2_codec.open_connection_window(manager.h2)
    ctx.connection_upgraded(h1, manager)
    manager.adopt(transport)
    manager.opened = h1.opened
    transport.set_protocol(manager)
    transport.write(_SWITCHING_PROTOCOLS + manager.h2.data_to_send())
    manager.last_stream_id = 1
    headers = [(n, v) for n, v in head.headers if n not in _UPGRADE_ONLY]
    stream1 = head.replace(headers=headers, upgrade=False, http_version="2")
    manager.in_batch = True
    try:
        stream = manager.start_stream(1, stream1)
        stream.request_ended = True
        if stream.request is not None and stream.state is H2StreamState.ACTIVE:
            stream.request.on_request_end()
    finally:
        manager.in_batch = False
    manager.flush()
    trailing = b"".join(e.trailing for e in rest if isinstance(e, Upgraded)) + h1.upgrade_trailing()
    if trailing:
        manager.data_received(trailing)
    return True
