"""The original destination of a redirected TCP connection (SO_ORIGINAL_DST), spec §2.4.

After an iptables `REDIRECT`, an accepted socket's local address is the proxy's own port; conntrack still
knows where the client meant to go, and `getsockopt(SOL_IP, SO_ORIGINAL_DST)` returns it as a `sockaddr_in`
(`SOL_IPV6, IP6T_SO_ORIGINAL_DST` and a `sockaddr_in6` for IPv6). Envoy's original-destination listener filter
does the same and then treats the restored address as the connection's local address.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from typing import Protocol

SOL_IP = 0
SOL_IPV6 = 41
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28

# ENOENT: conntrack has no NAT'ed entry for this connection (it was not redirected, or conntrack is not
# tracking it). ENOPROTOOPT: the option is unknown because the conntrack module for the family is not loaded.
_NOT_REDIRECTED = frozenset({errno.ENOENT, errno.ENOPROTOOPT})


class OriginalDestinationError(ValueError):
    """The kernel returned bytes that are not a sockaddr_in / sockaddr_in6."""


class ConnectedSocket(Protocol):
    """What we need from a socket; uvloop's transport.get_extra_info("socket") pseudo-socket also fits."""

    @property
    def family(self) -> int: ...

    def getsockname(self) -> object: ...

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


def parse_sockaddr(data: bytes) -> tuple[str, int]:
    """Decode a `struct sockaddr_in` or `sockaddr_in6` into (address text, port).

    `sa_family` is in host byte order, the port in network byte order. The IPv6 scope id is not kept: an
    original destination that needs one (link-local) cannot be reached through the proxy anyway.
    """
    if len(data) < 2:
        raise OriginalDestinationError(f"sockaddr too short ({len(data)} bytes)")
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET:
        if len(data) < 8:
            raise OriginalDestinationError(f"sockaddr_in too short ({len(data)} bytes, need 8)")
        (port,) = struct.unpack_from("!H", data, 2)
        return socket.inet_ntop(socket.AF_INET, data[4:8]), port
    if family == socket.AF_INET6:
        if len(data) < 24:
            raise OriginalDestinationError(f"sockaddr_in6 too short ({len(data)} bytes, need 24)")
        (port,) = struct.unpack_from("!H", data, 2)
        return socket.inet_ntop(socket.AF_INET6, data[8:24]), port
    raise OriginalDestinationError(f"unexpected address family {family} in sockaddr")


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a == b


def original_destination(sock: socket.socket | ConnectedSocket) -> tuple[str, int] | None:
    """Where the client of an accepted TCP connection meant to connect, or None if it was not redirected.

    None when the kernel has no original destination for the socket (ENOENT / ENOPROTOOPT) and when the
    original destination is the socket's own local address (conntrack tracked the connection but no NAT
    rewrote it: the client connected to the proxy port directly). An IPv4 client on a dual-stack IPv6
    listener (`::ffff:a.b.c.d`) is asked at the IPv4 level and reported as a plain IPv4 address.
    Other OSErrors (e.g. a closed socket) propagate.
    """
    local = sock.getsockname()
    if not isinstance(local, tuple) or len(local) < 2:
        return None  # not an IP socket
    local_host, local_port = str(local[0]), int(local[1])
    if sock.family == socket.AF_INET:
        level, option, size = SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE
    elif sock.family == socket.AF_INET6:
        mapped = ipaddress.ip_address(local_host.split("%", 1)[0])
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            local_host = str(mapped.ipv4_mapped)
            level, option, size = SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE
        else:
            level, option, size = SOL_IPV6, IP6T_SO_ORIGINAL_DST, SOCKADDR_IN6_SIZE
    else:
        return None
    try:
        raw = sock.getsockopt(level, option, size)
    except OSError as exc:
        if exc.errno in _NOT_REDIRECTED:
            return None
        raise
    host, port = parse_sockaddr(raw)
    if port == local_port and _same_address(host, local_host):
        return None
    return host, port


class Redirect:
    """The original destination of one accepted connection, read on first use.

    Most egress HTTP is routed by Host and never needs it; reading it costs a getsockopt through uvloop's
    pseudo-socket (two socket objects) per connection, about 7 % of the CPU of a short-lived connection.
    A connection whose original destination is the listener's own port was not redirected (None).
    """

    __slots__ = ("_known", "_listener_port", "_transport", "_value")

    def __init__(self, transport: asyncio.BaseTransport | None, listener_port: int) -> None:
        self._transport = transport
        self._listener_port = listener_port
        self._value: tuple[str, int] | None = None
        self._known = transport is None

    def __repr__(self) -> str:
        return f"<Redirect {self._value if self._known else 'unread'}>"

    @property
    def destination(self) -> tuple[str, int] | None:
        if not self._known:
            self._known = True
            transport = self._transport
            self._transport = None
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                try:
                    self._value = _read_redirect(sock, self._listener_port)
                except OSError:
                    self._value = None
        return self._value

    @property
    def port(self) -> int | None:
        destination = self.destination
        return destination[1] if destination is not None else None


def _read_redirect(sock: ConnectedSocket, listener_port: int) -> tuple[str, int] | None:
    """SO_ORIGINAL_DST without getsockname: IPv4 first (also right for IPv4 clients of a dual-stack
    listener), then IPv6."""
    attempts = [(SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE)]
    if sock.family == socket.AF_INET6:
        attempts.insert(0, (SOL_IPV6, IP6T_SO_ORIGINAL_DST, SOCKADDR_IN6_SIZE))
    for level, option, size in attempts:
        try:
            raw = sock.getsockopt(level, option, size)
        except OSError as exc:
            if exc.errno in _NOT_REDIRECTED:
                continue
            raise
        host, port = parse_sockaddr(raw)
        return None if port == listener_port else (host, port)
    return None
