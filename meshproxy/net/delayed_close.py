"""Closing a client connection after a reply the client must read (Envoy's delayed close).

A socket closed while its receive buffer holds bytes the proxy has not read is reset, not closed with a FIN
(RFC 1122 §4.2.2.13; Linux `tcp_close`), and bytes that arrive at a closed socket are answered with a reset
too. The reset can overtake the reply still in flight, and a client that is still sending sees ECONNRESET
instead of the 400 / 431 / 408 or the GOAWAY it was meant to read. Envoy's HTTP connection manager closes
with `FlushWriteAndDelay` for this reason (`delayed_close_timeout`, 1 s by default), as nginx and Apache
linger.

`DelayedClose`: half-close once the write buffer has drained (`write_eof`: the client reads the reply, then
EOF), keep reading and drop what still arrives, and close at the first of: the client's EOF (the manager's
`eof_received` lets the transport close), `DELAYED_CLOSE_S` with no progress writing the reply (Envoy:
progress restarts the timer; a reply stuck that long is abandoned, `abort`), or `DISCARD_BUDGET` bytes
dropped. A transport that cannot half-close (TLS: close_notify instead) is closed at once, as before.
"""

from __future__ import annotations

import asyncio

from meshproxy.core.clock import Clock, Timer

DELAYED_CLOSE_S = 1.0  # Envoy's delayed_close_timeout default
# Bytes read and dropped at most; past them the socket closes (a reset, if more come). Room for the rest of an
# oversized HTTP/2 frame (our SETTINGS_MAX_FRAME_SIZE is 1 MiB) and what the client sent behind it.
DISCARD_BUDGET = 4 << 20


class DelayedClose:
    """The delayed close of one connection, begun by its connection manager (which then drops what it reads
    and passes its byte counts to `discard`, and calls `cancel` from `connection_lost`)."""

    __slots__ = ("budget", "clock", "timer", "transport", "unwritten")

    def __init__(self, transport: asyncio.Transport, clock: Clock) -> None:
        self.transport = transport
        self.clock = clock
        self.budget = DISCARD_BUDGET
        self.unwritten = transport.get_write_buffer_size()
        self.timer: Timer | None = None
        if transport.is_closing():  # closed or aborted already: nothing left to do
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the FIN goes after the reply, once the write buffer has drained
        transport.resume_reading()  # a pipelining or slow-reading pause would leave the bytes unread
        self.timer = clock.call_later(DELAYED_CLOSE_S, self._expire)

    def __repr__(self) -> str:
        return (
            f"<DelayedClose budget={self.budget} unwritten={self.unwritten} armed={self.timer is not None}>"
        )

    def discard(self, size: int) -> None:
        """`size` bytes arrived after the reply: dropped; past the budget the socket closes now."""
        self.budget -= size
        if self.budget < 0:
            self.cancel()
            self.transport.close()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        unwritten = self.transport.get_write_buffer_size()
        if not unwritten:
            self.transport.close()  # everything read so far was dropped: a FIN already went, no reset
        elif unwritten < self.unwritten:  # the reply is still being written, and moving: wait on
            self.unwritten = unwritten
            self.timer = self.clock.call_later(DELAYED_CLOSE_S, self._expire)
        else:
            self.transport.abort()
