"""The egress sniffer (listeners/detect.py): what the first bytes of a connection say it speaks."""

from __future__ import annotations

import pytest

from meshproxy.listeners.detect import Detected, detect


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\n",  # WebDAV (RFC 4918)
        b"PURGE /cache HTTP/1.1\r\n",
        b"FOO-BAR / HTTP/1.1\r\nHost: a\r\n\r\n",  # any RFC 9110 token is a method
        b"get / HTTP/1.0\n",
        b"\r\nGET / HTTP/1.1\r\n",  # RFC 9112 §2.2: an empty line before the request line
        b"\r\n\r\nMKCALENDAR /c HTTP/1.1\r\n",
    ],
)
def test_request_lines_of_any_token_method_are_http1(first_bytes: bytes) -> None:
    assert detect(first_bytes).kind is Detected.HTTP1


@pytest.mark.parametrize("prefix", [b"\r\n", b"FOO-BAR", b"FOO-BAR /", b"FOO-BAR /x HTT", b"PROPF"])
def test_a_prefix_of_a_request_line_waits_for_more(prefix: bytes) -> None:
    assert detect(prefix).kind is Detected.NEED_MORE


@pytest.mark.parametrize(
    "first_bytes",
    [b"SET key value\r\n", b"EHLO mail.example\r\n", b"FOO-BAR /x SMTP/1.0\r\n", b"\x00\x01\x02", b"{}\n"],
)
def test_text_that_is_not_a_request_line_is_opaque(first_bytes: bytes) -> None:
    assert detect(first_bytes).kind is Detected.OPAQUE
