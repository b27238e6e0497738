"""SO_ORIGINAL_DST: decoding the kernel's sockaddr, and real sockets that were not redirected.

The redirected case needs iptables in a network namespace: tests/netns/test_interception_rules.py.
"""

from __future__ import annotations

import socket
import struct

import pytest

from meshproxy.net.original_dst import (
    OriginalDestinationError,
    original_destination,
    parse_sockaddr,
)


def sockaddr_in(host: str, port: int) -> bytes:
    # family in host byte order, port in network byte order, 8 bytes of zero padding: 16 bytes
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_pton(socket.AF_INET, host)
        + bytes(8)
    )


def sockaddr_in6(host: str, port: int, scope_id: int = 0) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, host)
        + struct.pack("=I", scope_id)
    )  # 28 bytes


def test_parse_ipv4() -> None:
    data = sockaddr_in("10.250.1.2", 8080)
    assert len(data) == 16
    assert parse_sockaddr(data) == ("10.250.1.2", 8080)
    assert parse_sockaddr(sockaddr_in("255.255.255.255", 65535)) == ("255.255.255.255", 65535)


def test_parse_ipv6() -> None:
    data = sockaddr_in6("fd00:250:1::2", 443, scope_id=3)
    assert len(data) == 28
    assert parse_sockaddr(data) == ("fd00:250:1::2", 443)
    assert parse_sockaddr(sockaddr_in6("::ffff:10.0.0.1", 1)) == ("::ffff:10.0.0.1", 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",
        sockaddr_in("1.2.3.4", 80)[:7],
        sockaddr_in6("::1", 80)[:20],
        struct.pack("=H", 1) + bytes(14),
    ],
)
def test_malformed_sockaddr_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(OriginalDestinationError):
        parse_sockaddr(data)


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    accepted, _ = listener.accept()
    return listener, client, accepted


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_direct_connection_is_not_redirected(family: int, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener, client, accepted = _pair(family, host)
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")
    with listener, client, accepted:
        # Without NAT the kernel either has no entry (ENOENT) or reports the socket's own address: both None.
        assert original_destination(accepted) is None
        assert original_destination(client) is None


def test_ipv4_client_on_a_dual_stack_listener_is_not_redirected() -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::ffff:127.0.0.1", 0))  # v4-mapped loopback: no wildcard bind
    except OSError as exc:
        listener.close()
        pytest.skip(f"no dual-stack socket: {exc}")
    listener.listen(1)
    with listener, socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockname()[0] == "::ffff:127.0.0.1"
            assert original_destination(accepted) is None


def test_a_closed_socket_raises_rather_than_guessing() -> None:
    listener, client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    listener.close()
    client.close()
    accepted.close()
    with pytest.raises(OSError):
        original_destination(accepted)
