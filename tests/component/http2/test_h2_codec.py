"""The HTTP/2 pieces shared by both sides (meshproxy/http/h2_codec.py, http/grpc.py), against a real peer.

The peer is the h2 library with its default (validating) configuration, so what the proxy writes must be
valid HTTP/2, and translation between HTTP/2 header blocks and the router's heads is checked both ways.
"""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec import h2_flow, h2_messages
from meshproxy.codec.grpc import (
    grpc_status_of,
    grpc_timeout_of,
    is_grpc,
    parse_grpc_timeout,
    percent_encode_message,
    trailers_only_headers,
)
from meshproxy.core.events import BodyKind, RequestHead, ResponseHead


def exchange(a: H2Connection, b: H2Connection) -> list[Event]:
    """Move a's pending bytes to b; returns b's events."""
    data = a.data_to_send()
    return b.receive_data(data) if data else []


def connected_pair(client_window: int | None = None) -> tuple[H2Connection, H2Connection]:
    """(proxy-side server, validating client) after the preface and SETTINGS exchange."""
    server = h2_codec.new_connection(client_side=False)
    server.initiate_connection()
    h2_codec.open_connection_window(server)
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    if client_window is not None:
        # in force at once: the preface SETTINGS frame carries the current values
        client.local_settings.update({SettingCodes.INITIAL_WINDOW_SIZE: client_window})
        client.local_settings.acknowledge()
    client.initiate_connection()
    exchange(client, server)
    exchange(server, client)
    exchange(client, server)
    return server, client


def test_request_block_becomes_a_head_with_host_and_joined_cookies() -> None:
    server, client = connected_pair()
    client.send_headers(
        1,
        [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc.local:8080"),
         (b":path", b"/a?b=1"), (b"cookie", b"a=1"), (b"content-length", b"3"), (b"cookie", b"b=2")],
    )  # fmt: skip
    (event,) = exchange(client, server)
    assert isinstance(event, RequestReceived)
    head = h2_messages.request_head_from_h2(event.headers, event.stream_ended is not None)
    assert head is not None
    assert (head.method, head.target, head.http_version, head.body, head.content_length) == (
        "POST",
        "/a?b=1",
        "2",
        BodyKind.LENGTH,
        3,
    )
    assert head.headers[0] == (b"host", b"svc.local:8080")
    assert (b"cookie", b"a=1; b=2") in head.headers


@pytest.mark.parametrize(
    ("block", "ended", "body"),
    [
        ([(b":method", b"GET"), (b":path", b"/")], True, BodyKind.NONE),
        ([(b":method", b"POST"), (b":path", b"/")], False, BodyKind.CHUNKED),
    ],
)
def test_request_framing_follows_end_stream(
    block: list[tuple[bytes, bytes]], ended: bool, body: BodyKind
) -> None:
    head = h2_messages.request_head_from_h2(block, ended)
    assert head is not None and head.body is body


@pytest.mark.parametrize(
    "block",
    [
        [(b":path", b"/")],  # no :method
        [(b":method", b"GET")],  # no :path
        [(b":method", b"GET"), (b":path", b"/"), (b"content-length", b"x")],
    ],
)
def test_malformed_request_blocks_are_refused(block: list[tuple[bytes, bytes]]) -> None:
    assert h2_messages.request_head_from_h2(block, True) is None


def test_upstream_head_is_a_valid_http2_request_without_connection_fields() -> None:
    head = RequestHead(
        "POST",
        "/demo.Echo/Unary",
        [(b"host", b"grpc.local"), (b"content-type", b"application/grpc"), (b"transfer-encoding", b"chunked"),
         (b"connection", b"keep-alive"), (b"x-request-id", b"r1")],
        "1.1",
        True,
        BodyKind.CHUNKED,
    )  # fmt: skip
    block = h2_messages.h2_request_headers(head)
    assert block[:4] == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"grpc.local"),
        (b":path", b"/demo.Echo/Unary"),
    ]
    names = [n for n, _ in block]
    assert b"transfer-encoding" not in names and b"connection" not in names and b"host" not in names
    assert (b"te", b"trailers") in block  # gRPC servers insist on it
    # a validating HTTP/2 server accepts it
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    client = h2_codec.new_connection(client_side=True)
    client.initiate_connection()
    client.send_headers(1, block, end_stream=True)
    events = exchange(client, server)
    assert any(isinstance(e, RequestReceived) for e in events)


def test_response_head_round_trip_adds_envoy_headers_and_drops_hop_by_hop() -> None:
    head = ResponseHead(
        200,
        b"OK",
        [(b"content-type", b"text/plain"), (b"connection", b"keep-alive"), (b"server", b"nginx"),
         (b"transfer-encoding", b"chunked")],
        "1.1",
        True,
        BodyKind.CHUNKED,
    )  # fmt: skip
    server, client = connected_pair()
    client.send_headers(
        1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    )
    exchange(client, server)
    server.send_headers(1, h2_messages.h2_response_headers(head, 7), end_stream=True)
    events = exchange(server, client)
    response = next(e for e in events if isinstance(e, ResponseReceived))
    assert dict(response.headers) == {
        b":status": b"200",
        b"content-type": b"text/plain",
        b"x-envoy-upstream-service-time": b"7",
        b"server": b"envoy",
    }


@pytest.mark.parametrize(
    ("block", "ended", "head_request", "kind", "length"),
    [
        ([(b":status", b"200"), (b"content-length", b"5")], False, False, BodyKind.LENGTH, 5),
        ([(b":status", b"200")], False, False, BodyKind.CHUNKED, -1),
        ([(b":status", b"200")], True, False, BodyKind.LENGTH, 0),  # framed for an HTTP/1.1 client
        ([(b":status", b"204")], True, False, BodyKind.NONE, -1),
        ([(b":status", b"200"), (b"content-length", b"5")], True, True, BodyKind.NONE, 5),
    ],
)
def test_response_block_framing_for_http1_clients(
    block: list[tuple[bytes, bytes]], ended: bool, head_request: bool, kind: BodyKind, length: int
) -> None:
    head = h2_messages.response_head_from_h2(block, ended, head_request)
    assert head is not None and (head.body, head.content_length) == (kind, length)
    if kind is BodyKind.LENGTH and length == 0:
        assert (b"content-length", b"0") in head.headers


def test_response_block_without_a_valid_status_is_refused() -> None:
    assert h2_messages.response_head_from_h2([(b":status", b"abc")], True, False) is None
    assert h2_messages.response_head_from_h2([(b"content-type", b"x")], True, False) is None


def test_outbound_body_waits_for_window_updates_and_ends_with_trailers() -> None:
    server, client = connected_pair(client_window=1000)
    client.send_headers(
        1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    )
    exchange(client, server)
    server.send_headers(1, [(b":status", b"200")])
    body = h2_flow.OutboundBody()
    body.push(b"x" * 2500)
    body.finish([(b"grpc-status", b"0")])
    assert body.drain(server, 1) is True  # blocked after 1000 bytes
    received = b""
    trailers = None
    ended = False
    for _ in range(10):
        for event in exchange(server, client):
            if isinstance(event, DataReceived):
                received += event.data
                client.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, TrailersReceived):
                trailers = event.headers
            elif isinstance(event, StreamEnded):
                ended = True
        if ended:
            break
        assert any(isinstance(e, WindowUpdated) for e in exchange(client, server))
        body.drain(server, 1)
    assert received == b"x" * 2500 and ended and body.ended
    assert trailers == [(b"grpc-status", b"0")]


def test_outbound_body_ends_on_the_last_data_frame() -> None:
    server, client = connected_pair()
    client.send_headers(
        1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    )
    exchange(client, server)
    server.send_headers(1, [(b":status", b"200")])
    body = h2_flow.OutboundBody()
    body.push(b"abc")
    body.finish()
    assert body.drain(server, 1) is False and body.ended
    events = exchange(server, client)
    data = [e for e in events if isinstance(e, DataReceived)]
    assert len(data) == 1 and data[0].stream_ended is not None  # END_STREAM rides on the data, no empty frame


def test_goaway_frame_is_understood_by_a_peer() -> None:
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    client.data_to_send()
    server = H2Connection(H2Configuration(client_side=False))
    server.initiate_connection()
    events = client.receive_data(server.data_to_send() + h2_codec.goaway_frame(7))
    goaway = events[-1]
    assert type(goaway).__name__ == "ConnectionTerminated"
    assert goaway.last_stream_id == 7 and goaway.error_code == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------------ gRPC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"100m", 0.1), (b"5S", 5.0), (b"2M", 120.0), (b"1H", 3600.0), (b"250u", 0.00025), (b"7n", 7e-9)],
)
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"m", b"10", b"10x", b"123456789S", b"-1S", b"1.5S"])
def test_malformed_grpc_timeouts_are_ignored(value: bytes) -> None:
    assert parse_grpc_timeout(value) is None


def test_grpc_header_helpers() -> None:
    headers = [
        (b"content-type", b"application/grpc+proto"),
        (b"grpc-timeout", b"3S"),
        (b"grpc-status", b"14"),
    ]
    assert is_grpc(headers) and not is_grpc([(b"content-type", b"application/json")])
    assert grpc_timeout_of(headers) == 3.0
    assert grpc_status_of(headers) == 14 and grpc_status_of([(b"grpc-status", b"x")]) is None


def test_grpc_message_is_percent_encoded() -> None:
    assert percent_encode_message(b"no healthy upstream") == b"no healthy upstream"
    assert percent_encode_message(b"100% caf\xc3\xa9\n") == b"100%25 caf%C3%A9%0A"
    assert trailers_only_headers(14, b"") == [(b"content-type", b"application/grpc"), (b"grpc-status", b"14")]
