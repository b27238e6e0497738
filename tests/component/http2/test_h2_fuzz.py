"""Property-based fuzzing (hypothesis) of both HTTP/2 codecs and of the HTTP/2 <-> HTTP/1.1 translation.

- Codecs (lean and h2, server and client side): random frame sequences, built from hostile header lists
  and raw frames, and byte-level mutations of a valid exchange. Nothing but the codec's own protocol error
  (h2's H2Error) escapes; every header block a codec reports passes the message rules; DATA reported for a
  stream never exceeds its content-length and ends exactly on it.
- Translation: a request the rules accept becomes an HTTP/1.1 head (both HTTP/1.1 encoders) with exactly
  one line per field and no CR, LF or NUL inside a line, and h11 reads back the same fields; a response
  likewise; an HTTP/1.1 message becomes an HTTP/2 header block the rules (and the h2 library) accept; body
  bytes come out as many as went in.

CI runs a fixed, derandomized budget. A longer run (random seeds) is a documented command:

    MESHPROXY_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/component/http2/test_h2_fuzz.py
"""

from __future__ import annotations

import os
import struct

import h11
import pytest
from h2.events import (
    DataReceived,
    Event,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    TrailersReceived,
)
from h2.exceptions import H2Error
from h2.utilities import HeaderValidationFlags, validate_headers
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshproxy.codec import h2 as h2_codec
from meshproxy.codec import h2_messages, h2_rules
from meshproxy.codec.h1_h11 import H11ClientCodec, H11ServerCodec
from meshproxy.codec.h1_httptools import HttptoolsClientCodec, HttptoolsServerCodec
from meshproxy.core.events import BodyKind, RequestHead, ResponseHead

_EXAMPLES = int(os.environ.get("MESHPROXY_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_EXAMPLES or 150,
    derandomize=not _EXAMPLES,  # CI: the same examples every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LIMITS = (h2_rules.DEFAULT_MAX_HEADER_LIST_SIZE, h2_rules.DEFAULT_MAX_HEADER_COUNT)
REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"svc")]


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">HBBBL", len(payload) >> 8, len(payload) & 0xFF, kind, flags, stream_id) + payload


# ----------------------------------------------------------------------------------- strategies

_NAMES = st.sampled_from(
    [b":method", b":scheme", b":path", b":authority", b":status", b":protocol", b":bogus", b"host",
     b"content-length", b"te", b"connection", b"transfer-encoding", b"upgrade", b"keep-alive", b"cookie",
     b"x-a", b"X-A", b"x a", b"x:a", b"x\r\na", b"", b"grpc-status"]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from([b"GET", b"POST", b"CONNECT", b"OPTIONS", b"*", b"/", b"/a?b", b"http", b"svc", b"200",
                     b"204", b"100", b"trailers", b"chunked", b"0", b"5", b"12", b"-1", b"5, 5", b" v"]),
    st.binary(max_size=12),
)  # fmt: skip
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=8)


@st.composite
def header_lists(draw: st.DrawFn, pseudo: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Mostly well-formed blocks with hostile fields mixed in (so both verdicts are exercised)."""
    base = draw(st.sampled_from([pseudo, pseudo[:-1], []]))
    fields = draw(_FIELDS)
    at = draw(st.integers(0, len(base) + len(fields)))
    merged = base + fields
    return merged[:at] + merged[at:] if draw(st.booleans()) else base + fields


@st.composite
def exchanges(draw: st.DrawFn, client_side: bool) -> list[bytes]:
    """Bytes a peer sends, in reads: SETTINGS, then header blocks, DATA and raw frames on a few streams."""
    encoder = Encoder()
    pseudo = [(b":status", b"200")] if client_side else REQUEST
    out = [b"" if client_side else PREFACE, frame(4, 0, 0, b"")]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["headers", "data", "raw"]))
        sid = draw(st.sampled_from([1, 1, 3, 5, 2, 0]))
        flags = draw(st.sampled_from([0, 1, 4, 5, 0x25, 0x8]))
        if kind == "headers":
            block = encoder.encode(draw(header_lists(pseudo)), huffman=draw(st.booleans()))
            out.append(frame(1, (flags | 4) if draw(st.booleans()) else flags, sid, block))
        elif kind == "data":
            out.append(frame(0, flags & 1, sid, draw(st.binary(max_size=16))))
        else:
            out.append(frame(draw(st.integers(0, 12)), flags, sid, draw(st.binary(max_size=16))))
    data = b"".join(out)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@st.composite
def mutated(draw: st.DrawFn, client_side: bool) -> list[bytes]:
    """A valid exchange with bytes flipped, dropped or inserted."""
    encoder = Encoder()
    if client_side:
        valid = frame(4, 0, 0, b"") + frame(
            1, 4, 1, encoder.encode([(b":status", b"200"), (b"content-length", b"2")])
        )
        valid += frame(0, 1, 1, b"ok")
    else:
        valid = (
            PREFACE
            + frame(4, 0, 0, b"")
            + frame(1, 4, 1, encoder.encode([*REQUEST, (b"content-length", b"3")]))
        )
        valid += frame(0, 0, 1, b"ab") + frame(0, 1, 1, b"c") + frame(1, 5, 3, encoder.encode(REQUEST))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "drop":
            del data[at]
        else:
            data.insert(at, draw(st.integers(0, 255)))
    return [bytes(data)]


# ----------------------------------------------------------------------------------- codecs


def _run(codec: str, client_side: bool, reads: list[bytes]) -> list[Event]:
    conn = h2_codec.new_connection(client_side, codec)
    conn.initiate_connection()
    if client_side:
        for sid in (1, 3, 5):
            conn.send_headers(sid, REQUEST, end_stream=True)
    conn.data_to_send()
    events: list[Event] = []
    for chunk in reads:
        try:
            events += conn.receive_data(chunk)
        except H2Error:  # the codec's own protocol error: the connection ends, as it should
            break
    return events


def _check_invariants(events: list[Event]) -> None:
    expected: dict[int, int] = {}
    received: dict[int, int] = {}
    for event in events:
        if isinstance(event, RequestReceived):
            expected[event.stream_id] = h2_rules.check_request(event.headers, *LIMITS)
        elif isinstance(event, ResponseReceived):
            status, length = h2_rules.check_response(event.headers, *LIMITS)
            expected[event.stream_id] = 0 if status in (204, 304) else length
        elif isinstance(event, InformationalResponseReceived):
            h2_rules.check_response(event.headers, *LIMITS)
        elif isinstance(event, TrailersReceived):
            h2_rules.check_trailers(event.headers, *LIMITS)
        elif isinstance(event, DataReceived):
            received[event.stream_id] = received.get(event.stream_id, 0) + len(event.data)
            limit = expected.get(event.stream_id, -1)
            assert limit < 0 or received[event.stream_id] <= limit, (event, expected)
        elif isinstance(event, StreamEnded):
            limit = expected.get(event.stream_id, -1)
            assert limit < 0 or received.get(event.stream_id, 0) == limit, (event, expected, received)


@pytest.mark.parametrize("codec", h2_codec.HTTP2_CODECS)
@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
@FUZZ
@given(data=st.data())
def test_codecs_raise_only_protocol_errors_and_pass_on_only_valid_messages(
    codec: str, client_side: bool, data: st.DataObject
) -> None:
    reads = data.draw(st.one_of(exchanges(client_side), mutated(client_side)))
    _check_invariants(_run(codec, client_side, reads))


# ----------------------------------------------------------------------------------- translation

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1, max_size=10).map(
    str.encode
)
_VISIBLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12).map(
    str.encode
)
_FIELD_VALUE = st.builds(lambda a, b: a + b, _VISIBLE, st.sampled_from([b"", b" x", b"\tx"]))
_REGULAR = st.lists(st.tuples(_TOKEN.map(lambda n: b"x-" + n), _FIELD_VALUE), max_size=6)
_PATHS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%", max_size=20).map(
    lambda p: b"/" + p.encode()
)


def as_the_router_frames_it(head: RequestHead) -> RequestHead:
    """The router sends a body of unknown length chunked (router/forwarder.py)."""
    if head.body is BodyKind.CHUNKED:
        return head.replace(headers=[*head.headers, (b"transfer-encoding", b"chunked")])
    return head


@pytest.mark.parametrize("client_codec", [HttptoolsClientCodec, H11ClientCodec], ids=["httptools", "h11"])
@FUZZ
@given(
    method=st.sampled_from([b"GET", b"POST", b"PURGE", b"OPTIONS"]),
    path=_PATHS,
    fields=_REGULAR,
    extra=st.lists(st.tuples(_NAMES, _VALUES), max_size=4),
    ended=st.booleans(),
)
def test_h2_requests_become_one_http1_request_with_the_same_fields(
    client_codec: type[HttptoolsClientCodec | H11ClientCodec],
    method: bytes,
    path: bytes,
    fields: list[tuple[bytes, bytes]],
    extra: list[tuple[bytes, bytes]],
    ended: bool,
) -> None:
    raw = [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"svc"),
        *fields,
        *extra,
    ]
    try:
        h2_rules.check_request(raw, *LIMITS)
    except h2_rules.StreamRejected:
        return  # never reaches the translation: the codecs reset such streams
    head = h2_messages.request_head_from_h2(raw, ended)
    assert head is not None
    head = as_the_router_frames_it(head)
    encoded = client_codec().encode_request_head(head)
    lines = encoded.split(b"\r\n")
    assert b"\0" not in encoded and encoded.count(b"\n") == encoded.count(b"\r\n") == encoded.count(b"\r")
    assert lines[0].split(b" ") == [method, path, b"HTTP/1.1"] and encoded.endswith(b"\r\n\r\n")
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(encoded)
    request = parser.next_event()
    assert isinstance(request, h11.Request), request
    sent = {(n.lower(), v) for n, v in head.headers}
    assert {(bytes(n), bytes(v)) for n, v in request.headers} >= sent - {(b"transfer-encoding", b"chunked")}


@pytest.mark.parametrize("server_codec", [HttptoolsServerCodec, H11ServerCodec], ids=["httptools", "h11"])
@FUZZ
@given(
    status=st.sampled_from([b"200", b"204", b"404", b"503", b"299"]),
    fields=_REGULAR,
    extra=st.lists(st.tuples(_NAMES, _VALUES), max_size=4),
)
def test_h2_responses_become_one_http1_status_line_and_the_same_fields(
    server_codec: type[HttptoolsServerCodec | H11ServerCodec],
    status: bytes,
    fields: list[tuple[bytes, bytes]],
    extra: list[tuple[bytes, bytes]],
) -> None:
    raw = [(b":status", status), *fields, *extra]
    try:
        h2_rules.check_response(raw, *LIMITS)
    except h2_rules.StreamRejected:
        return
    head = h2_messages.response_head_from_h2(raw, stream_ended=True, head_request=False)
    assert head is not None
    codec = server_codec()
    codec.feed(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
    encoded = codec.encode_response_head(head)
    assert b"\0" not in encoded and encoded.count(b"\n") == encoded.count(b"\r\n") == encoded.count(b"\r")
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("host", "svc")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(encoded)
    response = parser.next_event()
    assert isinstance(response, h11.Response) and response.status_code == int(status), response
    assert {(bytes(n), bytes(v)) for n, v in response.headers} >= {(n.lower(), v) for n, v in head.headers}


_FRAMING = (b"host", b"content-length")
_H1_VALUE = st.builds(lambda a, b: a + b, _VISIBLE, st.sampled_from([b"", b" x", b"\tx y"]))


@FUZZ
@given(
    # host and content-length values are checked by the HTTP/1.1 parsers (framing, routing) before this
    fields=st.lists(st.tuples(_TOKEN.filter(lambda n: n not in _FRAMING), _H1_VALUE), max_size=8),
    hop=st.lists(
        st.sampled_from([(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"te", b"gzip"),
                         (b"transfer-encoding", b"chunked"), (b"upgrade", b"websocket"),
                         (b"proxy-connection", b"close"), (b"host", b"svc:8080")]),
        max_size=4,
    ),
    status=st.sampled_from([200, 204, 404, 503]),
)  # fmt: skip
def test_http1_messages_become_valid_http2_header_blocks(
    fields: list[tuple[bytes, bytes]], hop: list[tuple[bytes, bytes]], status: int
) -> None:
    """What HTTP/1.1 parsers hand over (lower-case token names, values without surrounding whitespace)
    becomes an HTTP/2 header block that meshproxy's rules and the h2 library's validation both accept."""
    headers = [*fields, *hop]
    request = RequestHead("POST", "/p?q=1", headers, "1.1", True, BodyKind.CHUNKED)
    block = h2_messages.h2_request_headers(request)
    h2_rules.check_request(block, *LIMITS)
    flags = HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
    )
    list(validate_headers(block, flags))
    response = ResponseHead(status, b"", headers, "1.1", True, BodyKind.CHUNKED)
    h2_rules.check_response(h2_messages.h2_response_headers(response, 3), *LIMITS)
    h2_rules.check_trailers(h2_messages.h2_trailers(headers), *LIMITS)


@pytest.mark.parametrize("codec", h2_codec.HTTP2_CODECS)
@FUZZ
@given(chunks=st.lists(st.binary(max_size=3000), max_size=8), pad=st.integers(0, 20), sized=st.booleans())
def test_body_bytes_are_conserved_through_the_codec_and_http1_framing(
    codec: str, chunks: list[bytes], pad: int, sized: bool
) -> None:
    body = b"".join(chunks)
    encoder = Encoder()
    request = [*REQUEST, (b"content-length", b"%d" % len(body))] if sized else REQUEST
    wire = PREFACE + frame(4, 0, 0, b"") + frame(1, 4 if chunks else 5, 1, encoder.encode(request))
    for i, chunk in enumerate(chunks):
        flags = (1 if i == len(chunks) - 1 else 0) | (8 if pad else 0)
        wire += frame(0, flags, 1, (bytes([pad]) + chunk + b"\0" * pad) if pad else chunk)
    events = _run(codec, False, [wire])
    received = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert received == body and any(isinstance(e, StreamEnded) for e in events)
    head = h2_messages.request_head_from_h2(REQUEST if not sized else request, not chunks)
    assert head is not None
    head = as_the_router_frames_it(head)
    client = HttptoolsClientCodec()
    encoded = client.encode_request_head(head) + b"".join(client.encode_data(c) for c in chunks if c)
    encoded += client.encode_end()
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(encoded)
    got = b""
    while not isinstance(event := parser.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA
        if isinstance(event, h11.Data):
            got += event.data
    assert got == body
