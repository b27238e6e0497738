"""The HTTP/1.1 codec contract, run on every implementation (`h1` fixture) with real bytes in memory.

What the connection manager and the upstream connections rely on (meshproxy/http/codec.py): heads with
lower-cased headers in arrival order, framing reported as a `BodyKind`, bodies as `Data` events whose
concatenation is the body however the bytes were split, `EndOfMessage` after each message, every pipelined
request eventually delivered (from `feed()` or from `next_cycle()` after the response), `ProtocolError` and
nothing else for malformed input, and bytes that the other implementation parses the same way.

A test that exposes a bug stays here with a strict xfail naming it (`known_bug`): the mark fails once fixed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

import pytest

from meshproxy.codec.h1 import ClientCodec, ProtocolError, ServerCodec
from meshproxy.core.events import (
    BodyKind,
    Data,
    EndOfMessage,
    Event,
    Headers,
    RequestHead,
    ResponseHead,
    Upgraded,
)

CodecPair = tuple[Callable[[], ServerCodec], Callable[[], ClientCodec]]  # the `h1` / `h1_peer` fixtures


# --------------------------------------------------------------------------------------------------- helpers


def known_bug(request: pytest.FixtureRequest, affected: bool, reason: str) -> None:
    """Mark the running test as a strict xfail when it runs on an implementation that has the bug."""
    if affected:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def merged(events: Iterable[Event]) -> list[Event]:
    """Events with adjacent `Data` joined (and empty ones dropped): the same message however it was split."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data):
            if not event.data:
                continue
            last = out[-1] if out else None
            if isinstance(last, Data):
                out[-1] = Data(last.data + event.data)
                continue
        out.append(event)
    return out


def request_head(events: Sequence[Event], index: int = 0) -> RequestHead:
    event = events[index]
    assert isinstance(event, RequestHead), events
    return event


def response_head(events: Sequence[Event], index: int = 0) -> ResponseHead:
    event = events[index]
    assert isinstance(event, ResponseHead), events
    return event


def body_of(events: Iterable[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def kinds(events: Iterable[Event]) -> list[type]:
    return [type(e) for e in events]


EMPTY_OK = ResponseHead(200, b"OK", [(b"content-length", b"0")], "1.1", True, BodyKind.LENGTH, 0)


def answer(server: ServerCodec, events: Iterable[Event]) -> list[Event]:
    """Deliver `events` as the connection manager does: each complete request gets a response, then
    `next_cycle()` hands over whatever pipelined request the codec was holding back."""
    delivered: list[Event] = []
    queue = list(events)
    while queue:
        event = queue.pop(0)
        delivered.append(event)
        if isinstance(event, EndOfMessage):
            server.encode_response_head(EMPTY_OK)
            server.encode_end()
            queue.extend(server.next_cycle())
    return delivered


def serve(server: ServerCodec, chunks: Iterable[bytes]) -> list[Event]:
    """Feed request bytes chunk by chunk, answering each request as soon as it is complete."""
    delivered: list[Event] = []
    for chunk in chunks:
        delivered += answer(server, server.feed(chunk))
    return merged(delivered)


def serve_without_answer(server: ServerCodec, raw: bytes) -> list[Event]:
    """Parse a request and leave it unanswered (the test writes the response itself)."""
    return merged(server.feed(raw))


def one_byte_at_a_time(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def sent_request(client: ClientCodec, method: str = "GET", headers: Headers | None = None) -> bytes:
    head = RequestHead(method, "/", headers or [(b"host", b"svc.local")], "1.1", True, BodyKind.NONE)
    return client.encode_request_head(head) + client.encode_end()


def receive(client: ClientCodec, chunks: Iterable[bytes], eof: bool = False) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += client.feed(chunk)
    if eof:
        events += client.feed_eof()
    return merged(events)


def random_chunks(raw: bytes, rng: random.Random, largest: int) -> list[bytes]:
    chunks: list[bytes] = []
    at = 0
    while at < len(raw):
        size = rng.randint(1, largest)
        chunks.append(raw[at : at + size])
        at += size
    return chunks


# ------------------------------------------------------------------------------------------ request parsing

GET_ORIGIN = (
    b"GET /api/items?limit=10&q=a%20b HTTP/1.1\r\nHost: svc.local:8080\r\nX-Trace: one\r\n"
    b"ACCEPT: */*\r\nx-trace: two\r\nUser-Agent: curl/8\r\n\r\n"
)
POST_LENGTH = b"POST /upload HTTP/1.1\r\nHost: svc.local\r\nContent-Length: 11\r\n\r\nhello world"
POST_CHUNKED = (
    b"POST /upload HTTP/1.1\r\nHost: svc.local\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\nworld, bye\r\n0\r\n\r\n"
)
WEBSOCKET_FRAME = b"\x81\x05hello"
WEBSOCKET_UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: svc.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_origin_form_request_head(h1: CodecPair) -> None:
    events = serve(h1[0](), [GET_ORIGIN])
    assert kinds(events) == [RequestHead, EndOfMessage]
    head = request_head(events)
    assert (head.method, head.target, head.http_version) == ("GET", "/api/items?limit=10&q=a%20b", "1.1")
    # lower-cased names, original values, arrival order, repeated names kept apart
    assert head.headers == [
        (b"host", b"svc.local:8080"),
        (b"x-trace", b"one"),
        (b"accept", b"*/*"),
        (b"x-trace", b"two"),
        (b"user-agent", b"curl/8"),
    ]
    assert (head.body, head.content_length, head.upgrade, head.expect_continue) == (
        BodyKind.NONE,
        -1,
        False,
        False,
    )


def test_absolute_form_target_is_kept_as_received(h1: CodecPair) -> None:
    # HTTP_PROXY-style clients send absolute-form; the router takes the authority from it (split_target).
    raw = b"GET http://svc.local:8080/p/q?x=1 HTTP/1.1\r\nHost: svc.local:8080\r\n\r\n"
    head = request_head(serve(h1[0](), [raw]))
    assert head.target == "http://svc.local:8080/p/q?x=1"


@pytest.mark.parametrize(
    ("raw", "version", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "1.1", True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "1.1", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", "1.1", False),
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", "1.0", False),
        (b"GET / HTTP/1.0\r\n\r\n", "1.0", False),
    ],
    ids=["1.1-default", "1.1-close", "1.1-close-among-tokens", "1.0-default", "1.0-no-host"],
)
def test_keep_alive_rules(h1: CodecPair, raw: bytes, version: str, keep_alive: bool) -> None:
    head = request_head(serve(h1[0](), [raw]))
    assert (head.http_version, head.keep_alive) == (version, keep_alive)


def test_http10_keep_alive_request(h1: CodecPair) -> None:
    # RFC 9112 §9.3 makes HTTP/1.0 persistence optional. h11's state machine always closes after an HTTP/1.0
    # exchange, so both parsers give that (stricter) verdict: the connection closes after the response.
    head = request_head(serve(h1[0](), [b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"]))
    assert head.keep_alive is False


@pytest.mark.parametrize(
    ("raw", "kind", "length"),
    [(POST_LENGTH, BodyKind.LENGTH, 11), (POST_CHUNKED, BodyKind.CHUNKED, -1)],
    ids=["content-length", "chunked"],
)
def test_body_split_at_every_byte_boundary(h1: CodecPair, raw: bytes, kind: BodyKind, length: int) -> None:
    new_server = h1[0]
    whole = serve(new_server(), [raw])
    assert kinds(whole) == [RequestHead, Data, EndOfMessage]
    head = request_head(whole)
    assert (head.body, head.content_length) == (kind, length)
    expected_body = b"hello world" if kind is BodyKind.LENGTH else b"hello world, bye"
    assert body_of(whole) == expected_body
    for cut in range(1, len(raw)):
        assert serve(new_server(), [raw[:cut], raw[cut:]]) == whole, f"split at byte {cut}"
    assert serve(new_server(), one_byte_at_a_time(raw)) == whole


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue"])
def test_expect_100_continue_is_flagged_before_the_body(h1: CodecPair, value: bytes) -> None:
    server = h1[0]()
    head_only = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: " + value + b"\r\n\r\n"
    events = server.feed(head_only)
    assert kinds(events) == [RequestHead]  # the client waits for 100 Continue before sending the body
    assert request_head(events).expect_continue is True
    assert merged(server.feed(b"hello")) == [Data(b"hello"), EndOfMessage()]


def test_no_expect_header_means_no_continue(h1: CodecPair) -> None:
    assert request_head(serve(h1[0](), [POST_LENGTH])).expect_continue is False


def test_websocket_upgrade_request_and_tunnel_bytes(h1: CodecPair) -> None:
    # The tunnel's first bytes arrive with the request. The connection manager collects them from the
    # Upgraded events and, once the upstream said 101, from upgrade_trailing() (http/connection.py).
    server = h1[0]()
    events = server.feed(WEBSOCKET_UPGRADE + WEBSOCKET_FRAME)
    head = request_head(events)
    assert head.upgrade is True
    assert (b"upgrade", b"websocket") in head.headers
    assert EndOfMessage() in events
    assert not any(isinstance(e, Data) for e in events)  # tunnel bytes are not request body
    tunnel = b"".join(e.trailing for e in events if isinstance(e, Upgraded))
    server.encode_informational(101, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
    tunnel += server.upgrade_trailing()
    assert tunnel == WEBSOCKET_FRAME


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade(h1: CodecPair) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"
    assert request_head(serve(h1[0](), [raw])).upgrade is False


# ---------------------------------------------------------------------------------------------- pipelining


PIPELINED = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n" + POST_LENGTH.replace(b"/upload", b"/two")


def test_pipelined_requests_are_all_delivered_in_order(h1: CodecPair, http1_parser: str) -> None:
    server = h1[0]()
    first = server.feed(PIPELINED)
    # httptools parses both heads at once; h11 holds the second back until the first response is done.
    assert kinds(first[:2]) == [RequestHead, EndOfMessage]
    if http1_parser == "httptools":
        assert kinds(first) == [RequestHead, EndOfMessage, RequestHead, Data, EndOfMessage]
    events = merged(answer(server, first))
    assert kinds(events) == [RequestHead, EndOfMessage, RequestHead, Data, EndOfMessage]
    assert [request_head(events, 0).target, request_head(events, 2).target] == ["/one", "/two"]
    assert body_of(events) == b"hello world"


def test_pipelined_request_arriving_before_the_first_response(h1: CodecPair) -> None:
    # The second request lands in a later read, while the first is still being answered.
    server = h1[0]()
    received = server.feed(PIPELINED[:40]) + server.feed(PIPELINED[40:])
    events = merged(answer(server, received))
    assert kinds(events) == [RequestHead, EndOfMessage, RequestHead, Data, EndOfMessage]
    assert request_head(events, 2).target == "/two"


# -------------------------------------------------------------------------------------------- malformed input

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
MALFORMED_REQUESTS = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),
    "extra-token-in-request-line": b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    # llhttp accepts these; the httptools codec's own checks refuse them, whole or split across reads
    "two-spaces-before-target": b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
    "two-spaces-before-version": b"GET /a  HTTP/1.1\r\nHost: a\r\n\r\n",
    "fragment-in-target": b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-header-name": b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "control-char-in-header-name": b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: 1\r\n\r\n",
    "nul-in-header-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "bad-chunk-size": CHUNKED_HEAD + b"zz\r\nhello\r\n0\r\n\r\n",
    "negative-chunk-size": CHUNKED_HEAD + b"-1\r\nx\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED_HEAD + b"fffffffffffffffffffff\r\nx\r\n",
    "chunk-data-without-crlf": CHUNKED_HEAD + b"3\r\nabcXX0\r\n\r\n",
    "unknown-transfer-coding": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "chunked-not-last": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "conflicting-content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "content-length-not-a-number": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\nhello",
    "content-length-negative": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nhello",
    "content-length-signed": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    "content-length-empty": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nhello",
    "content-length-overflow": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"
    ),
}


@pytest.mark.parametrize("raw", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
@pytest.mark.parametrize("split", ["whole", "byte-by-byte"])
def test_malformed_request_is_a_protocol_error(h1: CodecPair, raw: bytes, split: str) -> None:
    chunks = [raw] if split == "whole" else one_byte_at_a_time(raw)
    with pytest.raises(ProtocolError) as caught:
        serve(h1[0](), chunks)
    assert str(caught.value)  # a reason for the debug log, not an empty message


@pytest.mark.parametrize(
    ("method", "target"),
    [("GET", "/a b"), ("G T", "/a"), ("", "/a"), ("GET", "")],
    ids=["target", "method", "no-method", "no-target"],
)
def test_a_request_line_that_would_not_parse_as_sent_is_not_encoded(
    h1: CodecPair, method: str, target: str
) -> None:
    # a space (or nothing) where the request line's parts meet: the upstream would read other parts than ours
    with pytest.raises(ProtocolError):
        h1[1]().encode_request_head(
            RequestHead(method, target, [(b"host", b"a")], "1.1", True, BodyKind.NONE)
        )


def test_transfer_encoding_with_content_length_is_rejected(h1: CodecPair) -> None:
    # RFC 9112 §6.3 (3): both framings at once is the request-smuggling shape; Envoy answers 400 by default.
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    with pytest.raises(ProtocolError):
        serve(h1[0](), [raw])


@pytest.mark.parametrize(
    ("raw", "accepted_by"),
    [
        (b"GET /\r\nHost: a\r\n\r\n", "httptools"),  # an HTTP/0.9 simple request: llhttp reports version 0.9
        (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", "h11"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h11"),  # the h2 preface on an HTTP/1.1-only listener
    ],
    ids=["http-0.9", "http-9.9", "h2-preface"],
)
def test_request_that_is_not_http_1x_is_a_protocol_error(
    h1: CodecPair, http1_parser: str, raw: bytes, accepted_by: str, request: pytest.FixtureRequest
) -> None:
    # codec.py: ProtocolError = "not valid HTTP/1.x". Accepted, the request is routed and answered in 1.1.
    with pytest.raises(ProtocolError):
        h1[0]().feed(raw)


def test_trailer_fields_do_not_become_request_headers(
    h1: CodecPair, http1_parser: str, request: pytest.FixtureRequest
) -> None:
    raw = (
        b"POST / HTTP/1.1\r\nHost: svc.local\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Injected: 1\r\nHost: evil.example\r\n\r\n"
    )
    events = serve(h1[0](), [raw])
    assert kinds(events) == [RequestHead, Data, EndOfMessage]
    assert request_head(events).headers == [(b"host", b"svc.local"), (b"transfer-encoding", b"chunked")]


# ------------------------------------------------------------------------------ request encoding round trip


@pytest.mark.parametrize(
    ("headers", "kind", "chunks"),
    [
        ([(b"host", b"svc"), (b"x-custom", b"1")], BodyKind.NONE, []),
        (
            [(b"host", b"svc"), (b"content-length", b"11"), (b"x-custom", b"1")],
            BodyKind.LENGTH,
            [b"hello", b" world"],
        ),
        (
            [(b"host", b"svc"), (b"transfer-encoding", b"chunked"), (b"x-custom", b"1")],
            BodyKind.CHUNKED,
            [b"hello", b"", b" world"],
        ),
    ],
    ids=["none", "length", "chunked"],
)
def test_request_encoding_parses_on_both_implementations(
    h1: CodecPair, h1_peer: CodecPair, headers: Headers, kind: BodyKind, chunks: list[bytes]
) -> None:
    client, server = h1[1](), h1_peer[0]()
    method = "GET" if kind is BodyKind.NONE else "POST"
    wire = client.encode_request_head(RequestHead(method, "/r?a=1", headers, "1.1", True, kind))
    wire += b"".join(client.encode_data(c) for c in chunks) + client.encode_end()
    events = serve(server, [wire])
    head = request_head(events)
    assert (head.method, head.target, head.body) == (method, "/r?a=1", kind)
    assert (b"x-custom", b"1") in head.headers
    assert body_of(events) == b"".join(chunks)
    assert isinstance(events[-1], EndOfMessage)


# ----------------------------------------------------------------------------- response encoding round trip


def response(status: int, headers: Headers, kind: BodyKind, length: int = -1) -> ResponseHead:
    reasons = {200: b"OK", 204: b"No Content", 304: b"Not Modified", 503: b"Service Unavailable"}
    return ResponseHead(status, reasons[status], [*headers, (b"x-custom", b"1")], "1.1", True, kind, length)


# (request method, response head, body chunks written, body kind the reader must report)
RESPONSES = {
    "length": ("GET", response(200, [(b"content-length", b"11")], BodyKind.LENGTH, 11), [b"hello", b" world"],
               BodyKind.LENGTH),
    "chunked": ("GET", response(200, [(b"transfer-encoding", b"chunked")], BodyKind.CHUNKED),
                [b"hello", b"", b" world"], BodyKind.CHUNKED),
    "none-204": ("GET", response(204, [], BodyKind.NONE), [], BodyKind.NONE),
    "none-304": ("GET", response(304, [(b"etag", b'"v1"')], BodyKind.NONE), [], BodyKind.NONE),
    "none-head": ("HEAD", response(200, [(b"content-length", b"11")], BodyKind.NONE), [], BodyKind.NONE),
}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "head", "chunks", "parsed_kind"), RESPONSES.values(), ids=RESPONSES.keys()
)
def test_response_encoding_parses_on_both_implementations(
    h1: CodecPair,
    h1_peer: CodecPair,
    method: str,
    head: ResponseHead,
    chunks: list[bytes],
    parsed_kind: BodyKind,
) -> None:
    """Two exchanges on one connection: the server codec under test writes, each client codec reads."""
    server, client = h1[0](), h1_peer[1]()
    for _ in range(2):
        assert kinds(serve_without_answer(server, sent_request(client, method))) == [
            RequestHead,
            EndOfMessage,
        ]
        wire = server.encode_response_head(head)
        wire += b"".join(server.encode_data(c) for c in chunks) + server.encode_end()
        events = receive(client, [wire])
        parsed = response_head(events)
        assert (parsed.status, parsed.body, parsed.keep_alive) == (head.status, parsed_kind, True)
        assert (b"x-custom", b"1") in parsed.headers
        assert body_of(events) == b"".join(chunks)
        assert isinstance(events[-1], EndOfMessage)
        assert client.reusable()
        assert server.next_cycle() == []


def test_close_delimited_response_ends_at_eof(h1: CodecPair, h1_peer: CodecPair) -> None:
    # An HTTP/1.0-style body (no framing header, Connection: close). httptools writes it raw and the reader
    # needs EOF to end it; h11 chunks it. Either way the reader gets the whole body and a closed connection.
    server, client = h1[0](), h1_peer[1]()
    serve_without_answer(server, sent_request(client))
    head = ResponseHead(200, b"OK", [(b"connection", b"close")], "1.1", False, BodyKind.UNTIL_CLOSE)
    wire = server.encode_response_head(head) + server.encode_data(b"abc") + server.encode_data(b"def")
    wire += server.encode_end()
    events = receive(client, [wire], eof=True)
    parsed = response_head(events)
    assert parsed.keep_alive is False
    assert parsed.body in (BodyKind.UNTIL_CLOSE, BodyKind.CHUNKED)
    assert body_of(events) == b"abcdef"
    assert kinds(events)[-1] is EndOfMessage
    assert not client.reusable()


def test_100_continue_from_the_server_is_swallowed_by_the_client(h1: CodecPair, h1_peer: CodecPair) -> None:
    server, client = h1[0](), h1_peer[1]()
    request_wire = client.encode_request_head(
        RequestHead(
            "POST",
            "/upload",
            [(b"host", b"a"), (b"content-length", b"5"), (b"expect", b"100-continue")],
            "1.1",
            True,
            BodyKind.LENGTH,
            5,
        )
    )
    assert request_head(server.feed(request_wire)).expect_continue
    assert client.feed(server.encode_informational(100, [])) == []
    assert merged(server.feed(client.encode_data(b"hello") + client.encode_end())) == [
        Data(b"hello"),
        EndOfMessage(),
    ]
    wire = server.encode_response_head(EMPTY_OK) + server.encode_end()
    events = receive(client, [wire])
    assert kinds(events) == [ResponseHead, EndOfMessage]
    assert response_head(events).status == 200


def test_101_from_the_server_opens_a_tunnel_on_the_client(h1: CodecPair, h1_peer: CodecPair) -> None:
    # Nothing between the 101 head and Upgraded: the forwarder (on_response_events) stops at EndOfMessage.
    server, client = h1[0](), h1_peer[1]()
    upgrade = [(b"host", b"a"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
    wire = client.encode_request_head(
        RequestHead("GET", "/chat", upgrade, "1.1", True, BodyKind.NONE, upgrade=True)
    )
    wire += client.encode_end()
    assert request_head(server.feed(wire)).upgrade
    reply = server.encode_informational(101, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
    events = client.feed(reply + WEBSOCKET_FRAME)
    assert kinds(events) == [ResponseHead, Upgraded]
    assert response_head(events).status == 101
    assert events[1] == Upgraded(WEBSOCKET_FRAME)


def test_response_to_head_sends_no_body(
    h1: CodecPair, http1_parser: str, request: pytest.FixtureRequest
) -> None:
    # Local replies (http/connection.py _write_local_reply) always encode their body, also for HEAD requests:
    # a HEAD health check to a failing upstream gets `503 ... no healthy upstream`. RFC 9110 §9.3.2: a
    # response to HEAD carries no content, or a keep-alive client reads the body as the next response.
    server = h1[0]()
    server.feed(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n")
    body = b"no healthy upstream"
    head = ResponseHead(
        503, b"Service Unavailable", [(b"content-length", b"19")], "1.1", True, BodyKind.LENGTH, 19
    )
    wire = server.encode_response_head(head) + server.encode_data(body) + server.encode_end()
    assert wire.endswith(b"\r\n\r\n") and body not in wire


# ------------------------------------------------------------------------------------- response parsing


def test_response_to_head_has_no_body_and_the_connection_is_reused(h1: CodecPair) -> None:
    new_client = h1[1]
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\n\r\n"
    whole: list[Event] | None = None
    for cut in range(1, len(raw) + 1):
        client = new_client()
        sent_request(client, "HEAD")
        events = receive(client, [raw[:cut], raw[cut:]] if cut < len(raw) else [raw])
        assert kinds(events) == [ResponseHead, EndOfMessage], f"split at byte {cut}"
        assert response_head(events).body is BodyKind.NONE
        assert client.reusable()
        whole = whole or events
        assert events == whole
        # the next exchange on the same connection parses from a clean state
        sent_request(client, "GET")
        events = receive(client, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        assert (response_head(events).body, body_of(events)) == (BodyKind.LENGTH, b"ok")
        assert client.reusable()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: "v"\r\n\r\n',
    ],
    ids=["204", "304"],
)
def test_204_and_304_have_no_body(h1: CodecPair, raw: bytes) -> None:
    client = h1[1]()
    sent_request(client)
    events = receive(client, [raw])
    assert kinds(events) == [ResponseHead, EndOfMessage]
    assert response_head(events).body is BodyKind.NONE
    assert client.reusable()


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"],
    ids=["100", "103"],
)
def test_informational_responses_are_swallowed(h1: CodecPair, interim: bytes) -> None:
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    client = h1[1]()
    sent_request(client)
    assert client.feed(interim) == []
    events = receive(client, [final])
    assert kinds(events) == [ResponseHead, Data, EndOfMessage]
    client = h1[1]()
    sent_request(client)
    assert receive(client, [interim + final]) == events


def test_101_is_a_response_head_then_upgraded(h1: CodecPair) -> None:
    client = h1[1]()
    sent_request(client, "GET", [(b"host", b"a"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")])
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    events = client.feed(raw + WEBSOCKET_FRAME)
    assert kinds(events) == [ResponseHead, Upgraded]
    assert response_head(events).status == 101
    assert events[1] == Upgraded(WEBSOCKET_FRAME)


def test_101_without_tunnel_bytes_yet(h1: CodecPair) -> None:
    client = h1[1]()
    sent_request(client, "GET", [(b"host", b"a"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")])
    events = client.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert response_head(events).status == 101
    upgraded = [e for e in events if isinstance(e, Upgraded)]
    assert upgraded == [Upgraded(b"")]


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_close_delimited_body_is_ended_by_eof(h1: CodecPair, version: bytes) -> None:
    client = h1[1]()
    sent_request(client)
    events = client.feed(b"HTTP/" + version + b" 200 OK\r\nX-A: 1\r\n\r\nabc")
    events += client.feed(b"def")
    assert not any(isinstance(e, EndOfMessage) for e in events)  # only the close ends this body
    events = merged(events + client.feed_eof())
    assert kinds(events) == [ResponseHead, Data, EndOfMessage]
    head = response_head(events)
    assert (head.body, head.keep_alive, head.http_version) == (BodyKind.UNTIL_CLOSE, False, version.decode())
    assert body_of(events) == b"abcdef"
    assert not client.reusable()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    ],
    ids=["length", "chunked", "head"],
)
def test_truncated_response_is_a_protocol_error_at_eof(h1: CodecPair, raw: bytes) -> None:
    client = h1[1]()
    sent_request(client)
    client.feed(raw)
    with pytest.raises(ProtocolError):
        client.feed_eof()


@pytest.mark.parametrize(
    ("raw", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Close\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ],
    ids=["keep-alive", "connection-close", "connection-close-mixed-case", "http-1.0"],
)
def test_reusable_after_the_exchange(h1: CodecPair, raw: bytes, reusable: bool) -> None:
    client = h1[1]()
    sent_request(client)
    events = receive(client, [raw])
    assert kinds(events) == [ResponseHead, Data, EndOfMessage]
    assert response_head(events).keep_alive is reusable
    assert client.reusable() is reusable


MALFORMED_RESPONSES = {
    "bad-status-code": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "content-length-not-a-number": b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
    "conflicting-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED_RESPONSES.values(), ids=MALFORMED_RESPONSES.keys())
def test_malformed_response_is_a_protocol_error(h1: CodecPair, raw: bytes) -> None:
    client = h1[1]()
    sent_request(client)
    with pytest.raises(ProtocolError):
        client.feed(raw)


def test_response_with_transfer_encoding_and_content_length_is_rejected(
    h1: CodecPair, http1_parser: str, request: pytest.FixtureRequest
) -> None:
    # RFC 9112 §6.3 (3): response-splitting shape. Accepted, the connection manager would pass the
    # content-length on and add its own transfer-encoding: chunked downstream.
    client = h1[1]()
    sent_request(client)
    with pytest.raises(ProtocolError):
        client.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_trailer_fields_do_not_become_response_headers(
    h1: CodecPair, http1_parser: str, request: pytest.FixtureRequest
) -> None:
    # A small chunked response arrives in one read, so the forwarder encodes the head only after the trailers
    # were parsed: a mutated head list sends trailer fields downstream as headers.
    client = h1[1]()
    sent_request(client)
    events = receive(
        client,
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nSet-Cookie: x=1\r\n\r\n"],
    )
    assert kinds(events) == [ResponseHead, Data, EndOfMessage]
    assert response_head(events).headers == [(b"transfer-encoding", b"chunked")]


# ------------------------------------------------------------------------------------------ random splits

SERVER_STREAM = (
    GET_ORIGIN
    + POST_CHUNKED
    + POST_LENGTH
    + b"DELETE /items/7 HTTP/1.1\r\nHost: svc.local\r\nContent-Length: 0\r\n\r\n"
)
CLIENT_STREAM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    b"4\r\nwiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"
)


def test_random_splits_of_a_pipelined_request_stream(h1: CodecPair) -> None:
    new_server = h1[0]
    expected = serve(new_server(), [SERVER_STREAM])
    methods = [e.method for e in expected if isinstance(e, RequestHead)]
    assert methods == ["GET", "POST", "POST", "DELETE"]
    rng = random.Random(20240611)
    for round_ in range(150):
        chunks = random_chunks(SERVER_STREAM, rng, largest=rng.choice((3, 17, 64)))
        assert serve(new_server(), chunks) == expected, f"round {round_}: {[len(c) for c in chunks]}"


def test_random_splits_of_a_response(h1: CodecPair) -> None:
    new_client = h1[1]

    def parse(chunks: list[bytes]) -> list[Event]:
        client = new_client()
        sent_request(client)
        return receive(client, chunks)

    expected = parse([CLIENT_STREAM])
    assert kinds(expected) == [ResponseHead, Data, EndOfMessage]
    assert body_of(expected) == b"wikipedia in\r\n\r\nchunks."
    rng = random.Random(7)
    for round_ in range(150):
        chunks = random_chunks(CLIENT_STREAM, rng, largest=rng.choice((2, 11, 40)))
        assert parse(chunks) == expected, f"round {round_}: {[len(c) for c in chunks]}"
