"""Header rules for proxied messages (meshproxy/http/headers.py)."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from email.utils import formatdate, parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshproxy.codec.headers import (
    HOP_BY_HOP,
    HTTP_DATE,
    HttpDate,
    connection_tokens,
    http_date,
    new_request_id,
)
from meshproxy.core.events import Headers

# ------------------------------------------------------------------------------------------- x-request-id

UUID_TEXT = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_new_request_id_is_a_canonical_uuid4() -> None:
    for _ in range(1_000):
        raw = new_request_id()
        assert isinstance(raw, bytes)
        assert UUID_TEXT.fullmatch(raw), raw
        parsed = uuid.UUID(raw.decode("ascii"))
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed).encode() == raw  # lower-case, hyphenated: what Envoy and X-Ray tooling expect


def test_new_request_id_is_unique() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_new_request_id_random_bits_are_not_stuck() -> None:
    ids = [new_request_id() for _ in range(2_000)]
    variants = Counter(chr(i[19]) for i in ids)
    assert set(variants) == set("89ab")  # all four RFC 4122 variant nibbles occur
    for position in (0, 9, 15, 20, 35):  # hex digits around each fixed field
        assert len({i[position] for i in ids}) == 16, position


# -------------------------------------------------------------------------------------- connection_tokens


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], set()),
        ([(b"host", b"a"), (b"x-foo", b"1")], set()),
        ([(b"connection", b"close")], set()),
        ([(b"connection", b"keep-alive")], set()),
        ([(b"connection", b"Upgrade")], set()),
        ([(b"connection", b"keep-alive, X-Foo , Upgrade")], {b"x-foo"}),
        (
            [(b"connection", b"X-Foo"), (b"host", b"a"), (b"connection", b"x-bar, CLOSE")],
            {b"x-foo", b"x-bar"},
        ),
        ([(b"connection", b"te,trailers")], {b"te", b"trailers"}),
    ],
    ids=["none", "no-connection", "close", "keep-alive", "upgrade", "mixed", "repeated", "no-spaces"],
)
def test_connection_tokens(headers: Headers, expected: set[bytes]) -> None:
    # RFC 9110 §7.6.1: names listed in Connection are hop-by-hop for this message; the connection options
    # the proxy handles itself (close, keep-alive, upgrade) are not header names to strip.
    assert connection_tokens(headers) == frozenset(expected)


def test_connection_tokens_ignore_empty_list_elements() -> None:
    # RFC 9110 §5.6.1: recipients must accept and ignore empty list elements.
    assert connection_tokens([(b"connection", b"x-a,, x-b, ")]) == frozenset({b"x-a", b"x-b"})


def test_hop_by_hop_names_are_lower_case() -> None:
    assert all(name == name.lower() for name in HOP_BY_HOP)
    assert {b"connection", b"transfer-encoding", b"upgrade", b"keep-alive", b"te"} <= HOP_BY_HOP


# ------------------------------------------------------------------------------------------------ HttpDate

IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT"
)


def test_http_date_is_an_imf_fixdate_of_now() -> None:
    # RFC 9110 §5.6.7: Date is sent as IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    date = HttpDate()
    start = int(time.time())
    value = date.now()
    end = int(time.time())
    assert IMF_FIXDATE.fullmatch(value), value
    assert value in {formatdate(s, usegmt=True).encode() for s in range(start, end + 1)}
    assert start <= parsedate_to_datetime(value.decode()).timestamp() <= end


def test_http_date_is_reused_within_a_second() -> None:
    date = HttpDate()
    for _ in range(5):  # bounded: retry only when a second boundary fell between the two calls
        start = int(time.time())
        first, second = date.now(), date.now()
        if int(time.time()) == start:
            assert second is first  # formatted once per second, not per response
            return
    pytest.fail("the clock crossed a second boundary five times in a row")


def test_shared_http_date() -> None:
    assert IMF_FIXDATE.fullmatch(HTTP_DATE.now())


def test_imf_fixdate_pattern_rejects_other_date_formats() -> None:
    # the check above can fail: RFC 850 and asctime forms are obsolete (RFC 9110 §5.6.7)
    assert not IMF_FIXDATE.fullmatch(b"Sunday, 06-Nov-94 08:49:37 GMT")
    assert not IMF_FIXDATE.fullmatch(b"Sun Nov  6 08:49:37 1994")
    assert not IMF_FIXDATE.fullmatch(b"Sun, 06 Nov 1994 08:49:37 +0000")


@given(st.integers(min_value=0, max_value=253402300799))  # 1970 .. 9999-12-31T23:59:59
def test_http_date_is_what_email_utils_writes(seconds: int) -> None:
    assert http_date(seconds) == formatdate(seconds, usegmt=True).encode()
