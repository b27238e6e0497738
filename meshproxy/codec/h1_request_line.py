"""Request lines as llhttp does not check them (RFC 9112 §3), for the httptools codec. No I/O.

llhttp knows a fixed list of methods, where RFC 9110 §9.1 allows any token, and it accepts several spaces
between the parts of a request line, where h11 (and RFC 9112 §3's grammar) want one. The codec shows llhttp a
stand-in for an unknown method, and refuses a line with extra spaces, so that both HTTP/1.1 parsers give the
same verdict (the stricter one). llhttp reports no offsets, so where a pipelined request starts is found by
re-parsing prefixes (`message_end`), only on these rare paths.
"""

from __future__ import annotations

import contextlib
import re

import httptools

# RFC 9110 §5.6.2 tchar: any token is a method (§9.1), registered or not.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
MAX_METHOD = 64  # bytes of an unknown method llhttp would refuse, before its end must have arrived
STAND_IN_METHOD = b"GET"  # what llhttp is shown in place of a method it does not know (same framing rules)


class _MessageCounter:
    """llhttp callbacks that only count complete messages (finds where a pipelined request starts)."""

    __slots__ = ("complete",)

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def message_end(data: bytes, messages: int) -> int:
    """The offset in `data` (which starts between two requests) just after its first `messages` requests.

    Only used when a pipelined request has a method llhttp does not know: a bisection over prefixes, each
    parsed by a fresh counting parser (llhttp reports no offsets).
    """
    low, high = 0, len(data)
    while low < high:
        middle = (low + high) // 2
        counter = _MessageCounter()
        with contextlib.suppress(httptools.HttpParserError):
            httptools.HttpRequestParser(counter).feed_data(data[:middle])
        if counter.complete >= messages:
            high = middle
        else:
            low = middle + 1
    return low


_LINE_SCAN = 16 * 1024  # a request line is looked for this far; a longer one is llhttp's to refuse


def request_line_ok(data: bytes, start: int = 0) -> bool:
    """False if the request line that starts at `start` (after empty lines, RFC 9112 §2.2) holds two spaces
    in a row or starts with one. True when the line has not fully arrived: it is checked again later."""
    while data[start : start + 1] in (b"\r", b"\n") and start < len(data):
        start += 1
    end = data.find(b"\n", start, start + _LINE_SCAN)
    if end < 0:
        return True
    line = data[start:end]
    return line.find(b"  ") < 0 and not line.startswith(b" ")  # not `in`: ARCHITECTURE.md, "bytes in bytes"


def pipelined_lines_ok(data: bytes, requests: int) -> int:
    """Of `requests` requests that began in `data` (which starts between two requests), the number whose
    request lines are fine before the first that is not (`requests` when all are)."""
    for index in range(1, requests):
        if not request_line_ok(data, message_end(data, index)):
            return index
    return requests
