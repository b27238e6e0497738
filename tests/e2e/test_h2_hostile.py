"""Hostile input across the HTTP/2 <-> HTTP/1.1 translation, through a running proxy, on both HTTP/2 codecs.

- h2c client -> HTTP/1.1 upstream: a CR/LF in a field value or in `:path`, `transfer-encoding: chunked`
  with a chunked body, DATA that disagrees with `content-length` (issue 11, defects 1 and 2). The upstream
  records every byte the proxy writes and parses them with h11: nothing a client sends may become an
  extra header line or an extra request, and a valid request on the same connection still gets through.
- HTTP/1.1 client -> h2c upstream: connection-specific fields never reach HTTP/2 (the upstream is the h2
  library with its validation on, so a malformed request would be refused there), bodies keep their size.
- h2c upstream -> client: a malformed response (DATA against content-length, CR/LF, upper case,
  connection-specific fields, pseudo-headers in trailers) is never passed on as a complete response.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from meshproxy.codec.h2 import HTTP2_CODECS

from .apps import AppLoop
from .grpc_apps.h2_app import H2App
from .h2_wire import H2Wire, data, request
from .harness import MeshProxy, http_request, recv_until_closed, running_proxy
from .hostile_upstreams import HOSTILE_ANSWERS, HostileH2Upstream, RecordingUpstream
from .resources import listener, mesh, node_arn, service_via_node, virtual_node

RAW = "raw.demo.local"
H2OK = "h2ok.demo.local"
EVIL = "evil.demo.local"

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True, slots=True)
class HostileMesh:
    proxy: MeshProxy
    recorder: RecordingUpstream
    h2app: H2App
    evil: HostileH2Upstream
    codec: str


@pytest.fixture(scope="module", params=HTTP2_CODECS)
def hostile(
    request: pytest.FixtureRequest, app_loop: AppLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileMesh]:
    codec: str = request.param
    recorder, h2app, evil = RecordingUpstream(), H2App("h2ok"), HostileH2Upstream()
    for app in (recorder, h2app, evil):
        app_loop.call(app.start())
    try:
        resources = [
            mesh(),
            virtual_node("front", recorder.port, backends=[RAW, H2OK, EVIL]),
            virtual_node("raw", recorder.port),
            virtual_node("h2ok", [listener(h2app.port, protocol="http2")]),
            virtual_node("evil", [listener(evil.port, protocol="http2")]),
            service_via_node(RAW, "raw"),
            service_via_node(H2OK, "h2ok"),
            service_via_node(EVIL, "evil"),
        ]
        workdir = tmp_path_factory.mktemp(f"h2-hostile-{codec}")
        with running_proxy(
            resources, node_arn("front"), workdir, env={"MESHPROXY_HTTP2_CODEC": codec}
        ) as proxy:
            yield HostileMesh(proxy, recorder, h2app, evil, codec)
    finally:
        for app in (recorder, h2app, evil):
            app_loop.call(app.stop())


@pytest.fixture
def recorder(hostile: HostileMesh) -> RecordingUpstream:
    hostile.recorder.reset()
    return hostile.recorder


def raw_request(
    hostile: HostileMesh, path: bytes = b"/", method: bytes = b"GET"
) -> list[tuple[bytes, bytes]]:
    return request(RAW.encode(), method, path)


def _rejected_then_served(hostile: HostileMesh, *frames: bytes, content_length_case: bool = False) -> None:
    """`frames` on stream 1 are refused (PROTOCOL_ERROR); a valid GET on stream 3 is then served."""
    with H2Wire(hostile.proxy.egress_port) as w:
        w.handshake()
        w.send(*frames)
        if content_length_case and hostile.codec == "h2":
            w.stream_or_connection_error(1, ErrorCodes.PROTOCOL_ERROR)  # h2 ends the connection (§5.4.1)
            return
        w.stream_error(1, ErrorCodes.PROTOCOL_ERROR)
        w.send(w.headers(3, raw_request(hostile, b"/after")))
        response = w.response(3)
        assert (response.status, response.body) == (200, b"ok")


def _upstream_saw_only(recorder: RecordingUpstream, *targets: bytes) -> None:
    assert [r.target for r in recorder.requests] == list(targets), recorder.requests
    assert not recorder.errors, recorder.errors
    lowered = recorder.raw.lower()
    assert b"x-injected" not in lowered and b"smuggled" not in lowered, recorder.raw


def test_crlf_in_a_field_value_never_becomes_a_header_line(
    hostile: HostileMesh, recorder: RecordingUpstream
) -> None:
    with H2Wire(hostile.proxy.egress_port) as w:
        headers = [*raw_request(hostile), (b"x-a", b"1\r\nX-Injected: yes")]
        _rejected_then_served(hostile, w.headers(1, headers))
    _upstream_saw_only(recorder, b"/after")


def test_crlf_in_path_never_reaches_the_request_line(
    hostile: HostileMesh, recorder: RecordingUpstream
) -> None:
    with H2Wire(hostile.proxy.egress_port) as w:
        path = b"/a HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /smuggled"
        _rejected_then_served(hostile, w.headers(1, raw_request(hostile, path)))
    _upstream_saw_only(recorder, b"/after")


def test_transfer_encoding_chunked_body_is_not_forwarded(
    hostile: HostileMesh, recorder: RecordingUpstream
) -> None:
    with H2Wire(hostile.proxy.egress_port) as w:
        headers = [*raw_request(hostile, b"/", b"POST"), (b"transfer-encoding", b"chunked")]
        body = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
        _rejected_then_served(
            hostile, w.headers(1, headers, end_stream=False), data(1, body, end_stream=True)
        )
    _upstream_saw_only(recorder, b"/after")


@pytest.mark.parametrize("length", [b"0", b"5"])
def test_data_past_content_length_is_never_forwarded(
    hostile: HostileMesh, recorder: RecordingUpstream, length: bytes
) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    with H2Wire(hostile.proxy.egress_port) as w:
        headers = [*raw_request(hostile, b"/cl", b"POST"), (b"content-length", length)]
        frames = (w.headers(1, headers, end_stream=False), data(1, b"hello" + smuggled, end_stream=True))
        _rejected_then_served(hostile, *frames, content_length_case=True)
    assert b"smuggled" not in recorder.raw.lower(), recorder.raw
    assert all(r.target != b"/smuggled" for r in recorder.requests), recorder.requests
    assert all(r.body == b"" for r in recorder.requests if r.target == b"/cl"), recorder.requests


def test_valid_h2_requests_are_translated_exactly(hostile: HostileMesh, recorder: RecordingUpstream) -> None:
    body = bytes(range(256)) * 400
    with H2Wire(hostile.proxy.egress_port) as w:
        w.handshake()
        sized = [*raw_request(hostile, b"/sized?q=1", b"POST"), (b"content-length", b"%d" % len(body))]
        w.send(
            w.headers(1, sized, end_stream=False),
            data(1, body[:50000]),
            data(1, body[50000:], end_stream=True),
        )
        assert w.response(1).status == 200
        w.send(w.headers(3, raw_request(hostile, b"/streamed", b"POST"), end_stream=False))
        w.send(data(3, body[:1000]), data(3, body[1000:], end_stream=True))
        assert w.response(3).status == 200
    sent = {r.target: r for r in recorder.requests}
    assert sent[b"/sized?q=1"].body == body and sent[b"/streamed"].body == body
    assert (b"content-length", b"%d" % len(body)) in sent[b"/sized?q=1"].headers
    assert dict(sent[b"/streamed"].headers)[b"host"] == RAW.encode()


def test_http1_connection_specific_fields_never_reach_an_http2_upstream(hostile: HostileMesh) -> None:
    request_bytes = (
        b"POST /h1 HTTP/1.1\r\nHost: "
        + H2OK.encode()
        + b"\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: gzip\r\nTransfer-Encoding: chunked\r\nX-Fine: 1\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", hostile.proxy.egress_port), timeout=5) as sock:
        sock.sendall(request_bytes)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = head.split(b"\r\n\r\n", 1)[1]
    for name in (b'"connection"', b'"keep-alive"', b'"proxy-connection"', b'"transfer-encoding"', b'"te"'):
        assert name not in seen.lower(), seen
    assert b'"x-fine"' in seen and b'"body_bytes": 11' in seen, seen


@pytest.mark.parametrize("path", [p for p in HOSTILE_ANSWERS if p != "/ok"])
def test_malformed_http2_responses_are_not_passed_on(hostile: HostileMesh, path: str) -> None:
    """An HTTP/1.1 client gets a 5xx local reply, or (when the head had already gone out) a cut-short
    response on a closed connection, never the malformed response as a complete one; the next request on a
    new connection is served."""
    with socket.create_connection(("127.0.0.1", hostile.proxy.egress_port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {EVIL}\r\nConnection: close\r\n\r\n".encode())
        answer, closed = recv_until_closed(sock, timeout=5.0)
    assert closed, answer
    assert b"x-injected" not in answer.lower() and b"smuggle" not in answer, answer
    assert b"X-Upper" not in answer, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    if head.startswith(b"HTTP/1.1 200"):
        # the head was on its way before the violation: the body must end short (the connection closed)
        if fields.get(b"transfer-encoding") == b"chunked":
            assert not body.endswith(b"0\r\n\r\n"), answer
        else:
            assert len(body) < int(fields[b"content-length"]), answer
    else:
        assert head.split(b" ")[1][:1] == b"5", answer
    assert http_request(hostile.proxy.egress_port, "GET", "/ok", host=EVIL).body == b"ok"


@pytest.mark.parametrize("path", ["/crlf-value", "/cl-longer", "/pseudo-in-trailers"])
def test_malformed_http2_responses_are_not_passed_on_to_http2_clients(
    hostile: HostileMesh, path: str
) -> None:
    with H2Wire(hostile.proxy.egress_port, timeout=5.0) as w:
        w.handshake()
        w.send(w.headers(1, request(EVIL.encode(), path=path.encode())))
        try:
            response = w.response(1)
        except AssertionError as reset:  # a reset after the head went out
            assert "stream reset" in str(reset), reset
        else:
            assert response.status >= 500, response
            assert b"x-injected" not in repr(response.headers).lower().encode()


@pytest.mark.parametrize("codec", HTTP2_CODECS)
def test_header_limits_from_settings_apply_to_http2(
    codec: str, tmp_path: Path, recorder_app: RecordingUpstream
) -> None:
    """MESHPROXY_MAX_REQUEST_HEADERS_COUNT reaches both HTTP/2 codecs: a request over it is reset with
    ENHANCE_YOUR_CALM (Envoy resets such a stream too), one within it is served."""
    resources = [
        mesh(),
        virtual_node("front", recorder_app.port, backends=[RAW]),
        virtual_node("raw", recorder_app.port),
        service_via_node(RAW, "raw"),
    ]
    env = {"MESHPROXY_HTTP2_CODEC": codec, "MESHPROXY_MAX_REQUEST_HEADERS_COUNT": "12"}
    with running_proxy(resources, node_arn("front"), tmp_path, env=env) as proxy:
        with H2Wire(proxy.egress_port) as w:
            w.handshake()
            many = [*request(RAW.encode()), *((b"x-field-%d" % i, b"v") for i in range(20))]
            w.send(w.headers(1, many))
            w.stream_or_connection_error(1, ErrorCodes.ENHANCE_YOUR_CALM)
        with H2Wire(proxy.egress_port) as w:
            w.handshake()
            w.send(w.headers(1, [*request(RAW.encode()), (b"x-one", b"1")]))
            assert w.response(1).status == 200


@pytest.fixture
def recorder_app(app_loop: AppLoop) -> Iterator[RecordingUpstream]:
    app = RecordingUpstream()
    app_loop.call(app.start())
    try:
        yield app
    finally:
        app_loop.call(app.stop())
