"""The HTTP/2 connection objects the proxy can run (`MESHPROXY_HTTP2_CODEC`: lean, h2) against the h2
library as a validating peer, on both sides: what the proxy writes must be valid HTTP/2, and the events it
reports for what a real peer writes must be the ones the connection manager and the pool expect.

Like the HTTP/1.1 `h1` fixture, `codec` runs every test on each implementation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    InformationalResponseReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec.h2 import H2Codec
from meshproxy.codec.h2_lean import LeanH2Connection

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc"), (b":path", b"/")]


@pytest.fixture(params=h2_codec.HTTP2_CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def peer(client_side: bool, **settings: int) -> H2Connection:
    conn = H2Connection(H2Configuration(client_side=client_side, header_encoding=None))
    if settings:
        conn.local_settings.update({SettingCodes[k.upper()]: v for k, v in settings.items()})
        conn.local_settings.acknowledge()
    conn.initiate_connection()
    return conn


def move(a: H2Codec | H2Connection, b: H2Codec | H2Connection) -> list[Event]:
    data = a.data_to_send()
    return b.receive_data(data) if data else []


def settle(a: H2Codec | H2Connection, b: H2Codec | H2Connection) -> None:
    for _ in range(3):
        move(a, b)
        move(b, a)


@pytest.fixture
def served(codec: str) -> Iterator[tuple[H2Codec, H2Connection]]:
    """(proxy server connection, h2 client) after the handshake."""
    server = h2_codec.new_connection(False, codec)
    server.initiate_connection()
    h2_codec.open_connection_window(server)
    client = peer(True)
    settle(client, server)
    yield server, client


@pytest.fixture
def upstream(codec: str) -> Iterator[tuple[H2Codec, H2Connection]]:
    """(proxy client connection, h2 server) after the handshake."""
    client = h2_codec.new_connection(True, codec)
    client.initiate_connection()
    h2_codec.open_connection_window(client)
    server = peer(False)
    settle(client, server)
    yield client, server


def test_request_and_response_round_trip(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    for sid in (1, 3, 5):  # the decode cache must give the same answer every time
        client.send_headers(sid, [*REQUEST, (b"x-n", str(sid).encode())], end_stream=True)
        events = move(client, server)
        request = next(e for e in events if isinstance(e, RequestReceived))
        assert request.stream_id == sid and request.stream_ended is not None
        assert (b"x-n", str(sid).encode()) in [tuple(h) for h in request.headers]
        assert any(isinstance(e, StreamEnded) for e in events)
        server.send_headers(sid, [(b":status", b"200"), (b"server", b"envoy")])
        server.send_data(sid, b"hello", end_stream=True)
        got = move(server, client)
        response = next(e for e in got if isinstance(e, ResponseReceived))
        assert dict(response.headers)[b":status"] == b"200"
        assert b"".join(e.data for e in got if isinstance(e, DataReceived)) == b"hello"
        assert any(isinstance(e, StreamEnded) for e in got)


def test_request_body_and_trailers_arrive_in_order(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    client.send_headers(1, [(b":method", b"POST"), *REQUEST[1:]])
    client.send_data(1, b"abc")
    client.send_headers(1, [(b"x-trailer", b"1")], end_stream=True)
    kinds = [type(e) for e in move(client, server)]
    assert kinds == [RequestReceived, DataReceived, TrailersReceived, StreamEnded]


def test_large_header_blocks_use_continuation_both_ways(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    big = [(b"x-big", b"v" * 40_000)]
    client.send_headers(1, REQUEST + big, end_stream=True)
    request = next(e for e in move(client, server) if isinstance(e, RequestReceived))
    assert (b"x-big", b"v" * 40_000) in [tuple(h) for h in request.headers]
    server.send_headers(1, [(b":status", b"200"), *big], end_stream=True)
    response = next(e for e in move(server, client) if isinstance(e, ResponseReceived))
    assert dict(response.headers)[b"x-big"] == b"v" * 40_000


def test_padded_and_prioritised_frames_are_understood(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    encoded = client.encoder.encode(REQUEST)
    headers = HeadersFrame(1, flags=["END_HEADERS", "PADDED", "PRIORITY"], pad_length=7)
    headers.data = encoded
    headers.depends_on, headers.stream_weight = 0, 15
    data = DataFrame(1, flags=["END_STREAM", "PADDED"], pad_length=3)
    data.data = b"xyz"
    events = server.receive_data(headers.serialize() + data.serialize())
    kinds = [type(e) for e in events if type(e).__name__ != "PriorityUpdated"]  # h2 also reports priority
    assert kinds == [RequestReceived, DataReceived, StreamEnded]
    body = next(e for e in events if isinstance(e, DataReceived))
    assert body.data == b"xyz" and body.flow_controlled_length == 3 + 3 + 1


def test_inbound_window_is_reopened_as_data_is_acknowledged(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    client.send_headers(1, [(b":method", b"POST"), *REQUEST[1:]])
    move(client, server)
    sent = 0
    chunk = b"x" * 16384
    while sent < 3 * h2_codec.STREAM_WINDOW:  # more than one window: only possible if updates arrive
        window = client.local_flow_control_window(1)
        if window < len(chunk):
            assert any(isinstance(e, WindowUpdated) for e in move(server, client)), sent
            continue
        client.send_data(1, chunk)
        sent += len(chunk)
        for event in move(client, server):
            if isinstance(event, DataReceived):
                server.acknowledge_received_data(event.flow_controlled_length, 1)
    assert sent >= 3 * h2_codec.STREAM_WINDOW


def test_outbound_data_never_exceeds_the_peer_window(codec: str) -> None:
    server = h2_codec.new_connection(False, codec)
    server.initiate_connection()
    client = peer(True, initial_window_size=100)
    settle(client, server)
    client.send_headers(1, REQUEST, end_stream=True)
    move(client, server)
    server.send_headers(1, [(b":status", b"200")])
    assert server.local_flow_control_window(1) == 100
    server.send_data(1, b"x" * 100)
    assert server.local_flow_control_window(1) == 0
    with pytest.raises(H2Error):
        server.send_data(1, b"y")
    move(server, client)
    client.acknowledge_received_data(100, 1)
    client.increment_flow_control_window(50, stream_id=1)
    events = move(client, server)
    assert any(isinstance(e, WindowUpdated) and e.stream_id == 1 for e in events)
    assert server.local_flow_control_window(1) >= 50


def test_peer_settings_change_windows_and_limits(upstream: tuple[H2Codec, H2Connection]) -> None:
    client, server = upstream
    client.send_headers(1, REQUEST)
    move(client, server)
    before = client.local_flow_control_window(1)
    server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000, SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    events = move(server, client)
    changed = next(e for e in events if isinstance(e, RemoteSettingsChanged))
    assert SettingCodes.INITIAL_WINDOW_SIZE in changed.changed_settings
    assert client.remote_settings.max_concurrent_streams == 7
    assert client.local_flow_control_window(1) == before - 65535 + 1000
    move(client, server)  # the ACK


def test_client_side_streams_responses_informational_and_trailers(
    upstream: tuple[H2Codec, H2Connection],
) -> None:
    client, server = upstream
    sids = []
    for _ in range(3):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        sids.append(sid)
    assert sids == [1, 3, 5]
    requests = [e for e in move(client, server) if isinstance(e, RequestReceived)]
    assert [r.stream_id for r in requests] == sids
    server.send_headers(1, [(b":status", b"100")])
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"body")
    server.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    kinds = [type(e) for e in move(server, client)]
    assert kinds == [
        InformationalResponseReceived,
        ResponseReceived,
        DataReceived,
        TrailersReceived,
        StreamEnded,
    ]


def test_resets_and_goaway_are_reported(upstream: tuple[H2Codec, H2Connection]) -> None:
    client, server = upstream
    for sid in (1, 3):
        client.send_headers(sid, REQUEST, end_stream=True)
    move(client, server)
    server.reset_stream(1, ErrorCodes.REFUSED_STREAM)
    server.close_connection(last_stream_id=1)
    events = move(server, client)
    reset = next(e for e in events if isinstance(e, StreamReset))
    assert (reset.stream_id, reset.error_code) == (1, ErrorCodes.REFUSED_STREAM)
    goaway = next(e for e in events if isinstance(e, ConnectionTerminated))
    assert (goaway.last_stream_id, goaway.error_code) == (1, 0)


def test_ping_is_answered(served: tuple[H2Codec, H2Connection]) -> None:
    server, client = served
    client.ping(b"12345678")
    move(client, server)
    assert any(type(e).__name__ == "PingAckReceived" for e in move(server, client))


def test_a_bad_preface_is_a_protocol_error(codec: str) -> None:
    server = h2_codec.new_connection(False, codec)
    server.initiate_connection()
    with pytest.raises(ProtocolError):
        server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_data_beyond_the_window_is_a_flow_control_error() -> None:
    server = h2_codec.new_connection(False, "lean")
    assert isinstance(server, LeanH2Connection)
    server.initiate_connection()  # connection window stays at 65535
    client = peer(True)
    settle(client, server)
    client.send_headers(1, [(b":method", b"POST"), *REQUEST[1:]])
    move(client, server)
    frame = DataFrame(1)
    frame.data = b"x" * 16384
    with pytest.raises(ProtocolError) as raised:
        for _ in range(5):  # 80 KiB against a 64 KiB connection window, never acknowledged
            server.receive_data(frame.serialize())
    assert raised.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_stray_continuation_is_a_protocol_error() -> None:
    server = h2_codec.new_connection(False, "lean")
    server.initiate_connection()
    client = peer(True)
    settle(client, server)
    stray = ContinuationFrame(1, flags=["END_HEADERS"])
    stray.data = b"\x82"
    with pytest.raises(ProtocolError):
        server.receive_data(stray.serialize())


def test_decode_cache_follows_the_dynamic_table() -> None:
    """Indexed-only blocks are cached; a block that changes the table invalidates what was cached."""
    server = h2_codec.new_connection(False, "lean")
    assert isinstance(server, LeanH2Connection)
    server.initiate_connection()
    client = peer(True)
    settle(client, server)
    seen = []
    for sid, value in ((1, b"a"), (3, b"a"), (5, b"b"), (7, b"a"), (9, b"b")):
        client.send_headers(sid, [*REQUEST, (b"x-v", value)], end_stream=True)
        request = next(e for e in move(client, server) if isinstance(e, RequestReceived))
        seen.append(dict(request.headers)[b"x-v"])
    assert seen == [b"a", b"a", b"b", b"a", b"b"]


def test_lean_client_asks_upstreams_for_no_dynamic_table() -> None:
    """Responses then decode independently of each other, so repeated ones come from the decode cache."""
    client = h2_codec.new_connection(True, "lean")
    assert isinstance(client, LeanH2Connection)
    client.initiate_connection()
    server = peer(False)
    settle(client, server)
    for sid in (1, 3, 5):
        client.send_headers(sid, REQUEST, end_stream=True)
        move(client, server)
        server.send_headers(
            sid, [(b":status", b"200"), (b"server", b"nginx"), (b"x-id", b"same")], end_stream=True
        )
        response = next(e for e in move(server, client) if isinstance(e, ResponseReceived))
        assert dict(response.headers)[b"x-id"] == b"same"
    assert len(client.decoder.header_table.dynamic_entries) == 0
    assert client.decode_cache  # the repeated response block was cached
