"""The raw HTTP/1.1 corpus (tests/corpus/http1/, format in its README) and what runs it against a proxy.

`load_corpus()` reads the cases; `RecordingUpstream` is a strict upstream on loopback (h11 parses what the
proxy forwards, each request is recorded and answered `200` with an `x-seq` header); `send_case()` writes a
case's bytes on a fresh connection as a raw socket client and returns the `Verdict`: the statuses received
in order, which of them came from the upstream, and whether the proxy closed the connection.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httptools

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus" / "http1"
CORPUS_HOST = "corpus.mesh.local"
# Header fields a proxy adds or rewrites on the way up: anything else the upstream sees must have been sent
# by the client (a field that appears from nowhere was injected).
PROXY_FIELDS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "x-request-id", "x-forwarded-for",
        "x-forwarded-proto", "x-envoy-expected-rq-timeout-ms", "x-envoy-internal", "x-envoy-original-path",
    }
)  # fmt: skip
_REPEAT = re.compile(r"\{(\d+)\*(.)\}")


@dataclass(frozen=True, slots=True)
class EnvoyAnswer:
    """Where Envoy answers a case differently from meshproxy, and why (checked by the Envoy run)."""

    expect: tuple[int, ...]
    close: bool
    why: str


@dataclass(frozen=True, slots=True)
class CorpusCase:
    name: str
    raw: bytes
    expect: tuple[int, ...]  # statuses the client receives, in order
    close: bool  # the proxy closes the connection after them
    upstream: tuple[str, ...]  # "METHOD target body-bytes" of each request the upstream receives, in order
    source: str
    envoy: EnvoyAnswer | None = None

    def __repr__(self) -> str:
        return f"<CorpusCase {self.name}>"


def expand(text: str) -> bytes:
    """A corpus string as bytes: `{N*c}` is c repeated N times; every other character is one latin-1 byte."""
    return _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text).encode("latin-1")


def load_corpus(directory: Path = CORPUS_DIR) -> list[CorpusCase]:
    cases: list[CorpusCase] = []
    for path in sorted(directory.glob("*.toml")):
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        for entry in document["case"]:
            envoy = entry.get("envoy")
            cases.append(
                CorpusCase(
                    name=entry["name"],
                    raw=expand(entry["raw"]),
                    expect=tuple(entry["expect"]),
                    close=entry["close"],
                    upstream=tuple(entry.get("upstream", ())),
                    source=entry.get("source", path.stem),
                    envoy=None
                    if envoy is None
                    else EnvoyAnswer(tuple(envoy["expect"]), envoy["close"], envoy["why"]),
                )
            )
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases


# ----------------------------------------------------------------------------------------------- upstream


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the upstream parsed it (or the reason it could not)."""

    method: str
    target: str
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    error: str = ""

    @property
    def summary(self) -> str:
        """`METHOD target body-bytes host`, as a case's `upstream` list spells it."""
        host = b",".join(v for n, v in self.headers if n == "host").decode("latin-1")
        return self.error or f"{self.method} {self.target} {len(self.body)} {host}"


@dataclass
class _Record:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            return len(self.received)


class _UpstreamHandler(socketserver.BaseRequestHandler):
    server: _UpstreamServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        conn = h11.Connection(h11.SERVER)
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.server.record.add(Received("", "", (), b"", f"unparsable: {exc}"))
                return
            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(event, h11.Request):
                head, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = tuple((n.decode(), v) for n, v in head.headers)
                seq = self.server.record.add(
                    Received(head.method.decode(), head.target.decode("latin-1"), headers, bytes(body))
                )
                payload = b"seq=%d" % seq
                try:
                    sock.sendall(
                        conn.send(
                            h11.Response(
                                status_code=200,
                                headers=[(b"content-length", b"%d" % len(payload)), (b"x-seq", b"%d" % seq)],
                            )
                        )
                        + conn.send(h11.Data(data=payload))
                        + conn.send(h11.EndOfMessage())
                    )
                except OSError:
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:
                return


class _UpstreamServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.record = _Record()


class RecordingUpstream:
    """A strict HTTP/1.1 upstream on a free loopback port that records every request it parses."""

    def __init__(self) -> None:
        self._server = _UpstreamServer()
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-upstream")
        self._thread.start()

    def __repr__(self) -> str:
        return f"<RecordingUpstream :{self.port} received={len(self.received)}>"

    @property
    def received(self) -> list[Received]:
        record = self._server.record
        with record.lock:
            return list(record.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ client


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a client saw: statuses in order, which came from the upstream, and whether the proxy closed."""

    statuses: tuple[int, ...]
    from_upstream: tuple[bool, ...]
    closed: bool

    def __str__(self) -> str:
        marks = ",".join(
            f"{s}{'u' if u else ''}" for s, u in zip(self.statuses, self.from_upstream, strict=True)
        )
        return f"[{marks}] {'close' if self.closed else 'open'}"


class _Responses:
    """llhttp callbacks collecting each response's status and whether it carries the upstream's x-seq."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.statuses: list[int] = []
        self.upstream: list[bool] = []
        self._seq = False

    def on_message_begin(self) -> None:
        self._seq = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-seq":
            self._seq = True

    def on_headers_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.upstream.append(self._seq)


def _send(sock: socket.socket, raw: bytes) -> None:
    # The proxy may answer and close before reading everything (a refused head): its answer is still read.
    with contextlib.suppress(OSError):
        sock.sendall(raw)


def send_case(
    port: int, raw: bytes, expected: int, *, close: bool = False, timeout: float = 5.0, settle: float = 0.15
) -> Verdict:
    """Write `raw` on a new connection; read until the proxy closes, or (unless a `close` is expected)
    `expected` responses arrived and nothing more came for `settle` seconds, or `timeout`."""
    responses = _Responses()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        writer = threading.Thread(target=_send, args=(sock, raw), name="corpus-writer")
        writer.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            enough = len(responses.statuses) >= expected and not close
            sock.settimeout(settle if enough else max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if enough:
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            try:
                responses.parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise AssertionError(f"unparsable response bytes from the proxy: {exc}") from exc
        writer.join(timeout)
    return Verdict(tuple(responses.statuses), tuple(responses.upstream), closed)


def injected_fields(raw: bytes, request: Received) -> list[str]:
    """Names the upstream received that the client never sent and the proxy does not add."""
    sent = raw.lower()
    return [
        name
        for name, _ in request.headers
        if name not in PROXY_FIELDS
        and f"\n{name}:".encode() not in sent
        and f"\n{name} ".encode() not in sent
    ]


def iter_new(upstream: RecordingUpstream, before: int) -> Iterator[Received]:
    yield from upstream.received[before:]
