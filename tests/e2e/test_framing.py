"""HTTP/1.1 framing through a real proxy, on both parsers: bodiless responses, malformed requests, upgrades
and 100 MB streamed request bodies with bounded proxy memory (issue 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import h11
import pytest

from .apps import AppLoop, ColourApp, TunnelEcho
from .harness import (
    Http1Client,
    MeshProxy,
    proc_status_kib,
    process_tree,
    recv_until_closed,
    running_proxy,
    wait_for,
)
from .resources import (
    mesh,
    node_arn,
    route,
    service_via_node,
    service_via_router,
    virtual_node,
    virtual_router,
)

ECHO = "echo.demo.local"
SINK = "sink.demo.local"
TUNNEL = "tunnel.demo.local"
BODY_SIZE = 100 * 1024 * 1024
BLOCK = b"meshproxy" * (1024 * 1024 // 9) + b"m" * (1024 * 1024 % 9)  # 1 MiB
MEMORY_BOUND_KIB = 80 * 1024


@dataclass(frozen=True, slots=True)
class FramingMesh:
    proxy: MeshProxy
    echo: ColourApp
    sink: ColourApp
    tunnel: TunnelEcho
    front: ColourApp


@pytest.fixture(scope="module")
def upstreams(app_loop: AppLoop) -> tuple[ColourApp, ColourApp, TunnelEcho, ColourApp]:
    return (
        app_loop.colour_app("echo"),
        app_loop.colour_app("sink"),
        app_loop.tunnel_echo("tunnel"),
        app_loop.colour_app("front"),
    )


@pytest.fixture(scope="module")
def framing_mesh(
    upstreams: tuple[ColourApp, ColourApp, TunnelEcho, ColourApp],
    http1_parser: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FramingMesh]:
    echo, sink, tunnel, front = upstreams
    resources = [
        mesh(),
        virtual_node("echo", echo.port),
        virtual_node("sink", sink.port),
        virtual_node("tunnel", tunnel.port),
        virtual_node("front", front.port, backends=[ECHO, SINK, TUNNEL]),
        service_via_node(ECHO, "echo"),
        service_via_node(TUNNEL, "tunnel"),
        # A long per-request timeout: the 100 MB uploads must not race the default 15 s on a busy machine.
        virtual_router("sink-router"),
        route("sink-router", "all", [("sink", 1)], timeout_s=60),
        service_via_router(SINK, "sink-router"),
    ]
    workdir = tmp_path_factory.mktemp(f"framing-{http1_parser}")
    with running_proxy(resources, node_arn("front"), workdir, parser=http1_parser) as proxy:
        yield FramingMesh(proxy, echo, sink, tunnel, front)


@pytest.fixture(autouse=True)
def _fresh_apps(upstreams: tuple[ColourApp, ColourApp, TunnelEcho, ColourApp]) -> None:
    for app in upstreams:
        if isinstance(app, ColourApp):
            app.reset()


# --- bodiless responses -------------------------------------------------------------------------------------


class StrictClient:
    """An h11 client on a raw socket: it rejects any byte a response must not carry."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h11.Connection(h11.CLIENT)

    def exchange(self, method: str, target: str, host: str) -> tuple[h11.Response, bytes]:
        request = h11.Request(method=method, target=target, headers=[("Host", host)])
        self.sock.sendall(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r} after {method} {target}")
        assert response is not None
        self.conn.start_next_cycle()
        return response, bytes(body)

    def close(self) -> None:
        self.sock.close()


def _header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name), None)


def test_head_204_and_304_carry_no_body_and_keep_the_connection(framing_mesh: FramingMesh) -> None:
    client = StrictClient(framing_mesh.proxy.egress_port)
    try:
        head, body = client.exchange("HEAD", "/thing", ECHO)
        assert (head.status_code, body) == (200, b"")
        assert _header(head, b"x-app-name") == b"echo"
        for code in (204, 304):
            response, body = client.exchange("GET", f"/status/{code}", ECHO)
            assert (response.status_code, body) == (code, b""), response
            assert _header(response, b"transfer-encoding") is None, response
            assert _header(response, b"x-app-name") == b"echo"
        response, body = client.exchange("GET", "/after", ECHO)
        assert response.status_code == 200
        assert b'"path": "/after"' in body
        # Nothing stray follows the last response.
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)
    finally:
        client.close()
    assert [s.method for s in framing_mesh.echo.seen] == ["HEAD", "GET", "GET", "GET"]


# --- malformed requests -------------------------------------------------------------------------------------

MALFORMED_EGRESS = {
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: echo.demo.local\r\nno-colon-here\r\n\r\n",
    "non-numeric-content-length": b"GET / HTTP/1.1\r\nHost: echo.demo.local\r\nContent-Length: abc\r\n\r\n",
    "conflicting-content-lengths": (
        b"POST / HTTP/1.1\r\nHost: echo.demo.local\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: echo.demo.local\r\n\r\n",
    "nul-in-header-name": b"GET / HTTP/1.1\r\nHost: echo.demo.local\r\nX-Bad\x00: v\r\n\r\n",
    "content-length-with-chunked": (
        b"POST / HTTP/1.1\r\nHost: echo.demo.local\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
}
MALFORMED_INGRESS = {
    "not-http": b"HELLO THERE\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: front\r\nno-colon-here\r\n\r\n",
}


def _send_malformed(port: int, data: bytes) -> tuple[bytes, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return recv_until_closed(sock, timeout=5.0)


def test_malformed_requests_get_400_and_a_close_while_others_are_served(framing_mesh: FramingMesh) -> None:
    proxy = framing_mesh.proxy
    stop = threading.Event()
    statuses: list[int] = []
    errors: list[BaseException] = []
    sockets: set[int] = set()

    def keep_alive_client() -> None:
        try:
            with Http1Client(proxy.egress_port) as client:
                for _ in range(2000):  # bounded; normally ended by `stop` long before
                    statuses.append(client.get("/steady", host=ECHO).status)
                    assert client.sock is not None
                    sockets.add(id(client.sock))
                    if stop.is_set():
                        break
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=keep_alive_client, name="keep-alive-client")
    worker.start()
    try:
        outcomes = {}
        for name, data in MALFORMED_EGRESS.items():
            outcomes[f"egress/{name}"] = _send_malformed(proxy.egress_port, data)
        for name, data in MALFORMED_INGRESS.items():
            outcomes[f"ingress/{name}"] = _send_malformed(proxy.ingress_port, data)
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()

    bad = {
        name: (answer[:120], closed)
        for name, (answer, closed) in outcomes.items()
        if not (answer.startswith(b"HTTP/1.1 400 ") and closed)
    }
    assert not bad, f"expected '400' then a close for each of these: {bad}"
    assert not errors, errors
    assert statuses and set(statuses) == {200}, statuses[-5:]
    assert len(sockets) == 1, "the keep-alive client's connection was dropped"
    # Nothing malformed reached an upstream.
    assert {s.path for s in framing_mesh.echo.seen} == {"/steady"}
    assert framing_mesh.front.requests == 0


# --- upgrades -----------------------------------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a full response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_exactly(sock: socket.socket, size: int, already: bytes = b"") -> bytes:
    data = bytearray(already)
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        assert chunk, f"closed after {len(data)} of {size} echoed bytes"
        data += chunk
    return bytes(data)


def test_websocket_upgrade_is_tunnelled_both_ways(framing_mesh: FramingMesh) -> None:
    handshake = (
        b"GET /chat HTTP/1.1\r\nHost: tunnel.demo.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    payload = bytes(range(256)) * 1024  # 256 KiB, every byte value
    with socket.create_connection(("127.0.0.1", framing_mesh.proxy.egress_port), timeout=10) as sock:
        sock.sendall(handshake)
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"upgrade: websocket" in head.lower(), head
        sock.sendall(b"ping")
        assert _read_exactly(sock, 4, rest) == b"ping"
        sock.sendall(payload)
        assert _read_exactly(sock, len(payload)) == payload
    # The client went away: the proxy must close the upstream side of the tunnel too.
    assert wait_for(lambda: framing_mesh.tunnel.open_connections == 0, 5.0), "upstream tunnel left open"
    forwarded = framing_mesh.tunnel.heads[-1].lower()
    assert b"\r\nupgrade: websocket\r\n" in forwarded, forwarded
    assert b"upgrade" in next(line for line in forwarded.split(b"\r\n") if line.startswith(b"connection:"))


async def _websocket_round_trip(port: int) -> list[object]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws", headers={"Host": ECHO}) as ws,
    ):
        await ws.send_str("hello")
        text = await ws.receive(timeout=10)
        await ws.send_bytes(b"\x00\xff" * 40000)
        binary = await ws.receive(timeout=10)
        return [text.data, binary.data]


def test_aiohttp_websocket_through_the_proxy(framing_mesh: FramingMesh) -> None:
    text, binary = asyncio.run(_websocket_round_trip(framing_mesh.proxy.egress_port))
    assert text == "hello"
    assert binary == b"\x00\xff" * 40000


# --- 100 MB request bodies ----------------------------------------------------------------------------------


def _upload(port: int, *, chunked: bool) -> tuple[int, bytes]:
    def blocks() -> Iterator[bytes]:
        for _ in range(BODY_SIZE // len(BLOCK)):
            yield BLOCK

    headers = {"Host": SINK}
    if not chunked:
        headers["Content-Length"] = str(BODY_SIZE)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        # An iterable body without Content-Length is sent with Transfer-Encoding: chunked by http.client.
        conn.request("POST", "/upload", body=blocks(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _reset_peak_rss(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (proc(5)); best effort.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_100_mb_request_body_streams_with_bounded_memory(framing_mesh: FramingMesh, chunked: bool) -> None:
    proxy, sink = framing_mesh.proxy, framing_mesh.sink
    warm = proxy.egress(SINK, "/warm-up", method="POST", body=b"x" * 1024)
    assert warm.status == 200, warm
    pids = process_tree(proxy.pid)
    for pid in pids:
        _reset_peak_rss(pid)
    baseline = {pid: proc_status_kib(pid, "VmRSS") for pid in pids}

    status, body = _upload(proxy.egress_port, chunked=chunked)

    assert status == 200, body[:300]
    assert sink.last.body_bytes == BODY_SIZE
    assert f'"body_bytes": {BODY_SIZE}'.encode() in body
    framing = sink.last.headers
    if chunked:
        assert "chunked" in framing.get("transfer-encoding", ""), framing
    else:
        assert framing.get("content-length") == str(BODY_SIZE), framing
    growth = {pid: proc_status_kib(pid, "VmHWM") - baseline[pid] for pid in pids}
    assert max(growth.values()) < MEMORY_BOUND_KIB, f"peak RSS growth (KiB) per proxy process: {growth}"
