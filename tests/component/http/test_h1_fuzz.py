"""Property-based fuzzing of both HTTP/1.1 codecs, server and client side (issue 11), with hypothesis.

For any bytes, however split: nothing but ProtocolError escapes a codec, and httptools and h11 agree on
whether a request stream is valid. For any head the proxy may be asked to write: no CR, LF or NUL inside a
line ever reaches the encoded bytes (the encoder refuses instead). For any body: the bytes parsed from what
an encoder wrote are the bytes it was given, on every pair of implementations.

CI runs a fixed example budget (MESHPROXY_FUZZ_EXAMPLES, default 150 per property, a few seconds in all); a
longer run: `MESHPROXY_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/component/http/test_h1_fuzz.py`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshproxy.codec.h1 import ClientCodec, ProtocolError, ServerCodec
from meshproxy.core.events import BodyKind, Data, EndOfMessage, Event, RequestHead, ResponseHead
from meshproxy.dataplane import codec_factories
from meshproxy.settings import HTTP1_PARSERS

EXAMPLES = int(os.environ.get("MESHPROXY_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
HOST = b"Host: svc.local\r\n"

# Pieces requests are made of: valid ones, and the bytes smuggling research uses to confuse parsers.
TOKENS = [
    b"GET", b"POST", b"PUT", b"PROPFIND", b"FOO-BAR", b"get", b" ", b"  ", b"\t", b"/", b"/a?b=c", b"*",
    b"http://svc.local/x", b"#", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\n", b"\r", b"\x00",
    b"\x01", b"\x7f", b"\xff", b":", b" :", b"Host: svc.local", b"Content-Length: ", b"Transfer-Encoding: ",
    b"chunked", b"identity", b", ", b"0", b"5", b"-1", b"ffffffffffffffffff", b"hello", b";ext=1", b";",
    b"Connection: close", b"Expect: 100-continue", b"X-A: b", b" folded", b"\r\n\r\n",
]  # fmt: skip


def request_bytes() -> st.SearchStrategy[bytes]:
    """Mostly near-valid requests with hostile pieces spliced in, sometimes raw noise."""
    line = st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /p HTTP/1.1\r\n", b"FOO /x HTTP/1.1\r\n", b""])
    pieces = st.lists(st.sampled_from(TOKENS), max_size=24).map(b"".join)
    near_valid = st.tuples(line, st.just(HOST), pieces, st.sampled_from([b"\r\n", b"\r\n\r\n", b""])).map(
        b"".join
    )
    return st.one_of(near_valid, pieces, st.binary(max_size=200))


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


OK = ResponseHead(200, b"OK", [(b"content-length", b"0")], "1.1", True, BodyKind.LENGTH, 0)


def serve_all(new_server: Callable[[], ServerCodec], chunks: list[bytes]) -> tuple[list[Event], str | None]:
    """Feed chunks, answering each complete request; the events and the error (if any) that ended it."""
    server = new_server()
    delivered: list[Event] = []
    try:
        for chunk in chunks:
            queue = server.feed(chunk)
            while queue:
                event = queue.pop(0)
                delivered.append(event)
                if isinstance(event, EndOfMessage):
                    server.encode_response_head(OK)
                    server.encode_end()
                    queue.extend(server.next_cycle())
    except ProtocolError as exc:
        return delivered, str(exc)
    return delivered, None


def summary(events: list[Event]) -> list[object]:
    """What a proxy forwards of a request stream: heads (method, target, framing) and body bytes."""
    out: list[object] = []
    body = b""
    for event in events:
        if isinstance(event, RequestHead):
            out.append((event.method, event.target, event.body, event.content_length))
        elif isinstance(event, Data):
            body += event.data
        elif isinstance(event, EndOfMessage):
            out.append(body)
            body = b""
    if out and isinstance(out[-1], tuple):
        out.pop()  # a request still incomplete: one parser may wait where the other has refused it already
    return out


FACTORIES = {name: codec_factories(name) for name in HTTP1_PARSERS}


@FUZZ
@given(data=request_bytes(), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=4))
def test_server_codecs_raise_only_protocol_errors_and_agree(data: bytes, cuts: list[int]) -> None:
    outcomes = {}
    for name, (new_server, _) in FACTORIES.items():
        whole = serve_all(new_server, [data])
        split = serve_all(new_server, splits(data, cuts))
        # however the bytes arrive, the same requests are delivered
        assert summary(split[0]) == summary(whole[0]), (name, data)
        outcomes[name] = summary(whole[0])
    # the stricter parser wins everywhere: the same complete requests are delivered (those before an error
    # too); a message one refuses, the other refuses or is still waiting for
    assert outcomes["httptools"] == outcomes["h11"], (data, outcomes)


RESPONSE_PIECES = [
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 100 Continue\r\n",
    b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"\r\n", b"hello",
    b"5\r\nhello\r\n0\r\n\r\n", b"\x00", b"\n", b"X: a\x01b\r\n", b"garbage",
]  # fmt: skip


@FUZZ
@given(
    pieces=st.lists(st.sampled_from(RESPONSE_PIECES), max_size=12),
    noise=st.binary(max_size=40),
    eof=st.booleans(),
)
def test_client_codecs_raise_only_protocol_errors(pieces: list[bytes], noise: bytes, eof: bool) -> None:
    data = b"".join(pieces) + noise
    for _, new_client in FACTORIES.values():
        client = new_client()
        client.encode_request_head(RequestHead("GET", "/", [(b"host", b"svc")], "1.1", True, BodyKind.NONE))
        client.encode_end()
        try:
            client.feed(data)
            if eof:
                client.feed_eof()
        except ProtocolError:
            pass
        client.reusable()


FIELD_TEXT = st.tuples(
    st.binary(max_size=6), st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n"]), st.binary(max_size=6)
).map(b"".join)
SAFE_TEXT = st.from_regex(rb"[a-z0-9]{1,12}", fullmatch=True)


@FUZZ
@given(name=SAFE_TEXT, value=FIELD_TEXT, where=st.sampled_from(["name", "value", "target", "method"]))
def test_encoders_never_write_cr_lf_or_nul_inside_a_line(name: bytes, value: bytes, where: str) -> None:
    bad = value.decode("latin-1")
    headers = [(b"host", b"svc")]
    method, target = "GET", "/"
    if where == "name":
        headers.append((value or b"\r\n", b"v"))
    elif where == "value":
        headers.append((name.lower(), value))
    elif where == "target":
        target = "/" + bad
    else:
        method = "GET" + bad
    for new_server, new_client in FACTORIES.values():
        with pytest.raises(ProtocolError):
            new_client().encode_request_head(RequestHead(method, target, headers, "1.1", True, BodyKind.NONE))
        if where in ("name", "value"):
            server = new_server()
            server.feed(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            head = ResponseHead(200, b"OK", headers[1:], "1.1", True, BodyKind.NONE)
            with pytest.raises(ProtocolError):
                server.encode_response_head(head)


def _parse_request_body(new_server: Callable[[], ServerCodec], wire: bytes) -> bytes:
    events = new_server().feed(wire)
    assert isinstance(events[-1], EndOfMessage), events
    return b"".join(e.data for e in events if isinstance(e, Data))


def _parse_response_body(client: ClientCodec, wire: bytes) -> bytes:
    events = client.feed(wire) + client.feed_eof()
    return b"".join(e.data for e in events if isinstance(e, Data))


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=6), chunked=st.booleans())
def test_body_bytes_are_conserved_across_encode_and_parse(chunks: list[bytes], chunked: bool) -> None:
    body = b"".join(chunks)
    kind = BodyKind.CHUNKED if chunked else BodyKind.LENGTH
    framing = (b"transfer-encoding", b"chunked") if chunked else (b"content-length", b"%d" % len(body))
    for new_server_a, new_client_a in FACTORIES.values():
        for new_server_b, new_client_b in FACTORIES.values():
            client = new_client_a()
            head = RequestHead("POST", "/", [(b"host", b"svc"), framing], "1.1", True, kind, len(body))
            wire = client.encode_request_head(head)
            wire += b"".join(client.encode_data(c) for c in chunks) + client.encode_end()
            assert _parse_request_body(new_server_b, wire) == body
            server = new_server_a()
            server.feed(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            response = ResponseHead(200, b"OK", [framing], "1.1", True, kind, len(body))
            out = server.encode_response_head(response)
            out += b"".join(server.encode_data(c) for c in chunks) + server.encode_end()
            peer = new_client_b()
            peer.encode_request_head(RequestHead("GET", "/", [(b"host", b"svc")], "1.1", True, BodyKind.NONE))
            peer.encode_end()
            assert _parse_response_body(peer, out) == body
