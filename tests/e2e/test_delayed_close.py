"""Error replies survive the close that follows them (Envoy's delayed close, net/delayed_close.py).

Closing a socket whose receive buffer still holds bytes the proxy has not read makes the kernel send a RST
instead of a FIN, and bytes arriving at a closed socket are answered with a RST too; a RST can overtake the
reply still in flight, so the client sees ECONNRESET instead of the GOAWAY or the 431 it was meant to read
(a flake of h2spec's 4.2 case once, issue: delayed close). Each case here makes unread bytes certain: the
client sends the offending input with more behind it, waits until the proxy has answered, then sends a
large amount more. It must read the whole answer and then a clean EOF, and every byte it sent must be
accepted without a reset. The proxy discards what comes after its reply only within a budget: a client that
keeps sending is cut off.

On both HTTP/2 codecs and both HTTP/1.1 parsers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame

from meshproxy.codec.h2 import HTTP2_CODECS

from .h2_wire import HEADERS, MAX_FRAME_SIZE, H2Wire, frame
from .harness import PARSERS, MeshProxy, running_proxy
from .resources import mesh, node_arn, service_via_node, virtual_node

ECHO = "echo.demo.local"
EXTRA = 256 * 1024  # more than one read of the proxy's (uvloop: 256 000 bytes): some is certain to be unread
AFTER_REPLY = 256 * 1024  # sent once the proxy has answered (and, before the fix, closed)
KEEP_SENDING_BOUND = 64 << 20  # a client that never stops: the proxy must cut it off long before this
READ_TIMEOUT_S = 5.0

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True, slots=True)
class Listener:
    proxy: MeshProxy
    protocol: str  # "h2" (prior knowledge) or "h1"


CODECS = [("h2", codec) for codec in HTTP2_CODECS] + [("h1", parser) for parser in PARSERS]


@pytest.fixture(scope="module", params=CODECS, ids=[name for _, name in CODECS])
def listener(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    """The egress listener of a proxy running `name` (an HTTP/2 codec or an HTTP/1.1 parser); the requests
    never reach an upstream."""
    protocol, name = request.param
    resources = [
        mesh(),
        virtual_node("echo", 18998),
        virtual_node("front", 18998, backends=[ECHO]),
        service_via_node(ECHO, "echo"),
    ]
    env = {"MESHPROXY_HTTP2_CODEC": name} if protocol == "h2" else {}
    parser = name if protocol == "h1" else None
    workdir = tmp_path_factory.mktemp(f"delayed-close-{name}")
    with running_proxy(resources, node_arn("front"), workdir, parser=parser, env=env) as proxy:
        yield Listener(proxy, protocol)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the peer's FIN; a reset is raised (ConnectionResetError), never taken as the end."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    data = bytearray()
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def frames(data: bytes) -> list[Frame]:
    parsed: list[Frame] = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        head, body, data = data[:9], data[9 : 9 + length], data[9 + length :]
        got, _ = Frame.parse_frame_header(memoryview(head))
        got.parse_body(memoryview(body))
        parsed.append(got)
    return parsed


def keeps_sending_until_cut_off(sock: socket.socket) -> bool:
    """Send without reading until the proxy stops taking bytes (bounded): True if it did."""
    chunk = b"\0" * 65536
    sock.settimeout(READ_TIMEOUT_S)
    for _ in range(KEEP_SENDING_BOUND // len(chunk)):
        try:
            sock.sendall(chunk)
        except TimeoutError:  # not reading, and not closed either
            return False
        except OSError:  # reset or broken pipe: the proxy has closed
            return True
    return False


def offending_h2(wire: H2Wire) -> bytes:
    """A HEADERS frame one byte over SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2: FRAME_SIZE_ERROR)."""
    size = wire.peer_settings.get(MAX_FRAME_SIZE, 16384) + 1
    return frame(HEADERS, 0x5, 1, b"\0" * size)


def offending_h1() -> bytes:
    """A header block past max_request_headers_kb (60 KiB): 431, then close."""
    return f"GET / HTTP/1.1\r\nHost: {ECHO}\r\nx-big: ".encode() + b"a" * (64 * 1024)


def check_431(reply: bytes) -> None:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)
    }
    assert status.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert fields[b"connection"] == b"close"
    assert body == b"Request Header Fields Too Large" and len(body) == int(fields[b"content-length"])


def test_the_error_reply_is_read_in_full_then_a_clean_eof(listener: Listener) -> None:
    proxy = listener.proxy
    wire = H2Wire(proxy.egress_port, timeout=READ_TIMEOUT_S)
    try:
        sock = wire.sock
        if listener.protocol == "h2":
            wire.handshake()
            offending, filler = offending_h2(wire), b"\0"
        else:
            offending, filler = offending_h1(), b"a"
        sock.sendall(offending + filler * EXTRA)
        time.sleep(0.2)  # the proxy has answered by now (and, without a delayed close, closed)
        sock.sendall(filler * AFTER_REPLY)  # read and dropped by the proxy, not answered with a reset
        reply = read_to_eof(sock)
        if listener.protocol == "h2":
            goaways = [f for f in frames(wire.buffer + reply) if isinstance(f, GoAwayFrame)]
            assert [g.error_code for g in goaways] == [ErrorCodes.FRAME_SIZE_ERROR], frames(reply)
        else:
            check_431(reply)
        assert keeps_sending_until_cut_off(sock), "the proxy neither read nor closed"
    finally:
        wire.close()
    assert proxy.process is not None and proxy.process.poll() is None, proxy.output_tail()
    assert "Traceback" not in proxy.stderr_text(), proxy.output_tail()
