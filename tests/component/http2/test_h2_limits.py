"""Header limits and hostile header blocks at the codec level, on both HTTP/2 codecs (lean and h2): the
limits are constructor parameters (Envoy's max_request_headers_kb / max_headers_count, wired from Settings),
and both codecs reset a stream the same way for the same block.
"""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event, RequestReceived, StreamReset
from h2.exceptions import H2Error

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec import h2_rules
from meshproxy.codec.h2 import H2Codec

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"svc")]


@pytest.fixture(params=h2_codec.HTTP2_CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def serve(codec: str, **limits: int) -> tuple[H2Codec, H2Connection]:
    server = h2_codec.new_connection(False, codec, **limits)
    server.initiate_connection()
    client = H2Connection(
        H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    client.initiate_connection()
    for _ in range(3):
        if data := client.data_to_send():
            server.receive_data(data)
        if data := server.data_to_send():
            client.receive_data(data)
    return server, client


def send(server: H2Codec, client: H2Connection, sid: int, headers: list[tuple[bytes, bytes]]) -> list[Event]:
    client.send_headers(sid, headers, end_stream=True)
    return server.receive_data(client.data_to_send())


def reset_code(events: list[Event], sid: int) -> int | None:
    assert not any(isinstance(e, RequestReceived) and e.stream_id == sid for e in events), events
    return next((e.error_code for e in events if isinstance(e, StreamReset) and e.stream_id == sid), None)


def test_header_count_limit_is_a_constructor_parameter(codec: str) -> None:
    server, client = serve(codec, max_header_count=6)
    ok = send(server, client, 1, [*REQUEST, (b"x-a", b"1"), (b"x-b", b"2")])
    assert isinstance(ok[0], RequestReceived)
    over = send(server, client, 3, [*REQUEST, (b"x-a", b"1"), (b"x-b", b"2"), (b"x-c", b"3")])
    assert reset_code(over, 3) == ErrorCodes.ENHANCE_YOUR_CALM
    assert b"\x00\x00\x04\x03\x00\x00\x00\x00\x03\x00\x00\x00\x0b" in server.data_to_send()  # RST_STREAM 3


def test_header_size_limit_is_a_constructor_parameter(codec: str) -> None:
    server, client = serve(codec, max_header_list_size=1000)
    assert isinstance(send(server, client, 1, [*REQUEST, (b"x-a", b"v" * 900)])[0], RequestReceived)
    over = send(server, client, 3, [*REQUEST, (b"x-a", b"v" * 1000)])
    assert reset_code(over, 3) == ErrorCodes.ENHANCE_YOUR_CALM


def test_a_block_far_over_the_limit_ends_the_connection(codec: str) -> None:
    """Past RFC 7541's size of a list within both limits, HPACK decoding stops: a connection error."""
    server, client = serve(codec, max_header_list_size=1000, max_header_count=10)
    client.send_headers(1, [*REQUEST, *((b"x-%d" % i, b"v" * 200) for i in range(20))], end_stream=True)
    with pytest.raises(H2Error):
        server.receive_data(client.data_to_send())
    assert b"\x07\x00\x00\x00\x00\x00" in server.data_to_send()  # GOAWAY


@pytest.mark.parametrize(
    "headers",
    [
        [*REQUEST, (b"x-a", b"1\r\nX-Injected: yes")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a\r\nX: y"), (b":authority", b"svc")],
        [*REQUEST, (b"transfer-encoding", b"chunked")],
        [*REQUEST, (b"Upper", b"1")],
    ],
    ids=["crlf-value", "crlf-path", "transfer-encoding", "uppercase"],
)
def test_both_codecs_reset_a_malformed_request_alike(codec: str, headers: list[tuple[bytes, bytes]]) -> None:
    server, client = serve(codec)
    assert reset_code(send(server, client, 1, headers), 1) == ErrorCodes.PROTOCOL_ERROR
    assert isinstance(send(server, client, 3, REQUEST)[0], RequestReceived)


def test_rules_count_pseudo_headers_and_bytes_as_envoy_does() -> None:
    size = sum(len(n) + len(v) for n, v in REQUEST)  # 40: names and values, no per-field overhead
    assert h2_rules.check_request(REQUEST, size, 4) == -1
    with pytest.raises(h2_rules.StreamRejected):
        h2_rules.check_request(REQUEST, size - 1, 4)
    with pytest.raises(h2_rules.StreamRejected):
        h2_rules.check_request(REQUEST, 1000, 3)
