"""Access logs (spec §5.5): Envoy format strings compiled once into getters, written by a background thread.

A format is compiled once, per snapshot, into a tuple of small callables `RequestSummary -> str`; formatting a
record is one call per operator and one join. Supported operators (Envoy's names):

- `%START_TIME%`, `%START_TIME(<strftime>)%` (UTC; plus Envoy's `%s`, `%f`, `%1f`..`%9f`);
- `%REQ(X?Y):Z%`, `%REQUEST_HEADER(...)%`, `%REQ_WITHOUT_QUERY(X?Y):Z%`, `%RESP(X?Y):Z%`,
  `%RESPONSE_HEADER(...)%`, `%TRAILER(X?Y):Z%`, `%RESPONSE_TRAILER(...)%` (`:METHOD`, `:PATH`,
  `:AUTHORITY`, `:SCHEME` are the request's pseudo-headers; `X-ENVOY-ORIGINAL-PATH` is the path before a
  rewrite);
- `%RESPONSE_CODE%`, `%RESPONSE_FLAGS%`, `%RESPONSE_CODE_DETAILS%`, `%BYTES_RECEIVED%`, `%BYTES_SENT%`,
  `%DURATION%`, `%PROTOCOL%`, `%UPSTREAM_HOST%`, `%UPSTREAM_CLUSTER%`, `%ROUTE_NAME%`,
  `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_LOCAL_ADDRESS%` (and their `_WITHOUT_PORT` forms, and
  `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`), `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`, `%LOCAL_REPLY_BODY%`,
  `%HOSTNAME%`, `%ENVIRONMENT(X):Z%`, `%TRACE_ID%`;
- operators meshproxy does not measure (`%REQUEST_DURATION%`, `%UPSTREAM_LOCAL_ADDRESS%`, ... see `_UNSET`)
  are accepted and print `-`, so formats written for Envoy keep loading.

Unset or empty values print `-`. An optional `:Z` truncates any value to Z characters. Anything else between
`%` signs is an `AccessLogFormatError`, as Envoy rejects it.

Text formats are written as given (Envoy adds no newline), except that meshproxy appends `\\n` to a format
that has none, so lines never run together. JSON formats (`format.json`, key -> format string) write one
compact JSON object per line with string values, `-` for unset, as Envoy's `json_format`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from meshproxy.config.snapshot import AccessLogConfig
from meshproxy.core.summary import RequestSummary
from meshproxy.telemetry.errors import AccessLogFormatError
from meshproxy.telemetry.stats import ServerStats
from meshproxy.telemetry.tracing import TraceContext

log = logging.getLogger(__name__)

DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)
MAX_FORMAT = 1000  # App Mesh's limit on format.text (spec §5.5)

Getter = Callable[[RequestSummary], str]

_OPERATOR = re.compile(r"%([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?(?::([0-9]+))?%")

# Operators Envoy supports that meshproxy does not measure: accepted, always `-`.
_UNSET = frozenset(
    {
        "REQUEST_DURATION", "REQUEST_TX_DURATION", "RESPONSE_DURATION", "RESPONSE_TX_DURATION",
        "UPSTREAM_LOCAL_ADDRESS", "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "UPSTREAM_TRANSPORT_FAILURE_REASON",
        "UPSTREAM_PROTOCOL", "REQUESTED_SERVER_NAME", "CONNECTION_ID", "CONNECTION_TERMINATION_DETAILS",
        "VIRTUAL_CLUSTER_NAME", "DYNAMIC_METADATA", "CLUSTER_METADATA", "UPSTREAM_METADATA", "FILTER_STATE",
        "DOWNSTREAM_PEER_SUBJECT", "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_LOCAL_URI_SAN",
        "DOWNSTREAM_TLS_VERSION", "DOWNSTREAM_TLS_CIPHER", "DOWNSTREAM_TLS_SESSION_ID",
        "DOWNSTREAM_PEER_FINGERPRINT_256", "DOWNSTREAM_PEER_CERT", "REQUEST_HEADERS_BYTES",
        "RESPONSE_HEADERS_BYTES", "RESPONSE_TRAILERS_BYTES", "GRPC_STATUS", "GRPC_STATUS_NUMBER",
        "UPSTREAM_WIRE_BYTES_SENT", "UPSTREAM_WIRE_BYTES_RECEIVED", "DOWNSTREAM_WIRE_BYTES_SENT",
        "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    }
)  # fmt: skip
_HEADER_OPERATORS = {
    "REQ": "req",
    "REQUEST_HEADER": "req",
    "REQ_WITHOUT_QUERY": "req_nq",
    "RESP": "resp",
    "RESPONSE_HEADER": "resp",
    "TRAILER": "trailer",
    "RESPONSE_TRAILER": "trailer",
}


def _dash(value: str | None) -> str:
    return value if value else "-"


def _port_less(address: str | None) -> str | None:
    if not address:
        return None
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


# -- START_TIME --------------------------------------------------------------------------------------------


def _start_time(fmt: str | None) -> Getter:
    """START_TIME getter: Envoy's default `%Y-%m-%dT%H:%M:%S.%3fZ` in UTC, or a strftime with %s / %Nf.

    The strftime parts are cached per whole second: consecutive records in one second format once.
    """
    if not fmt:
        fmt = "%Y-%m-%dT%H:%M:%S.%3fZ"
    # Split into strftime chunks (digits 0), `%s` (digits -1) and `%f`/`%Nf` (digits N), once.
    parts: list[tuple[str, int]] = []
    chunk: list[str] = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        nxt = fmt[i + 1] if i + 1 < len(fmt) else ""
        token: tuple[str, int] | None = None
        if c == "%" and nxt == "s":
            token, i = ("", -1), i + 2
        elif c == "%" and nxt == "f":
            token, i = ("", 9), i + 2
        elif c == "%" and nxt in "123456789" and nxt and fmt[i + 2 : i + 3] == "f":
            token, i = ("", int(nxt)), i + 3
        elif c == "%" and nxt:
            chunk.append(c + nxt)  # a strftime directive, or `%%`
            i += 2
        else:
            chunk.append(c)
            i += 1
        if token is not None:
            if chunk:
                parts.append(("".join(chunk), 0))
                chunk = []
            parts.append(token)
    if chunk:
        parts.append(("".join(chunk), 0))
    cache: list[object] = [None, None]  # [second, list of formatted second-level chunks]

    def get(r: RequestSummary) -> str:
        t = r.start_time
        second = int(t)
        if cache[0] != second:
            tm = time.gmtime(second)
            cache[0] = second
            cache[1] = [time.strftime(chunk, tm) if digits == 0 else None for chunk, digits in parts]
        chunks = cache[1]
        assert isinstance(chunks, list)
        out = []
        for i, (_, digits) in enumerate(parts):
            if digits == 0:
                out.append(chunks[i])
            elif digits == -1:
                out.append(str(second))
            else:
                # Round to microseconds first: a float epoch cannot hold nanoseconds, and truncating
                # 0.12299990654 would print .122 for a start at .123.
                micros = min(round((t - second) * 1_000_000), 999_999)
                out.append(str(micros * 1000).zfill(9)[:digits])
        return "".join(out)

    return get


# -- header operators --------------------------------------------------------------------------------------


def _request_value(r: RequestSummary, name: str) -> str | None:
    if name == ":method":
        return r.method
    if name == ":path":
        return r.path
    if name == ":authority" or name == "host":
        return r.authority or r.request_headers.get("host")
    if name == ":scheme":
        return r.scheme
    if name == "x-envoy-original-path":
        return r.original_path or r.request_headers.get(name)
    return r.request_headers.get(name)


def _header_getter(kind: str, args: str, max_len: int | None, operator: str) -> Getter:
    primary, _, alternative = args.partition("?")
    primary, alternative = primary.strip().lower(), alternative.strip().lower()
    if not primary:
        raise AccessLogFormatError(f"%{operator}(...)% needs a header name")

    def lookup(r: RequestSummary, name: str) -> str | None:
        if kind in ("req", "req_nq"):
            return _request_value(r, name)
        if kind == "resp":
            value = r.response_headers.get(name)
            if (
                value is None
                and name == "x-envoy-upstream-service-time"
                and r.upstream_service_time_ms is not None
            ):
                return str(r.upstream_service_time_ms)
            return value
        return r.response_trailers.get(name)

    def get(r: RequestSummary) -> str:
        value = lookup(r, primary)
        if not value and alternative:
            value = lookup(r, alternative)
        if not value:
            return "-"
        if kind == "req_nq":
            value = value.split("?", 1)[0]
        return value[:max_len] if max_len is not None else value

    return get


# -- everything else ---------------------------------------------------------------------------------------


def _trace_id(r: RequestSummary) -> str:
    ctx = r.trace
    if isinstance(ctx, TraceContext):
        return ctx.w3c_trace_id
    return "-"


def _code_details(r: RequestSummary) -> str:
    # Envoy's "via_upstream" when the response came from the upstream untouched; meshproxy does not track the
    # other details, so they print "-".
    return "via_upstream" if r.response_code and r.upstream_host and r.response_flags == "-" else "-"


_SIMPLE: dict[str, Getter] = {
    "RESPONSE_CODE": lambda r: str(r.response_code),
    "RESPONSE_FLAGS": lambda r: _dash(r.response_flags),
    "RESPONSE_CODE_DETAILS": _code_details,
    "BYTES_RECEIVED": lambda r: str(r.bytes_received),
    "BYTES_SENT": lambda r: str(r.bytes_sent),
    "DURATION": lambda r: str(r.duration_ms),
    "PROTOCOL": lambda r: _dash(r.protocol),
    "UPSTREAM_HOST": lambda r: _dash(r.upstream_host),
    "UPSTREAM_CLUSTER": lambda r: _dash(r.upstream_cluster),
    "ROUTE_NAME": lambda r: _dash(r.route_name),
    "DOWNSTREAM_REMOTE_ADDRESS": lambda r: _dash(r.downstream_remote_address),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": lambda r: _dash(r.downstream_remote_address),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda r: _dash(_port_less(r.downstream_remote_address)),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": lambda r: _dash(_port_less(r.downstream_remote_address)),
    "DOWNSTREAM_LOCAL_ADDRESS": lambda r: _dash(r.downstream_local_address),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": lambda r: _dash(_port_less(r.downstream_local_address)),
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda r: str(r.attempts),
    "LOCAL_REPLY_BODY": lambda r: _dash(r.local_reply_body),
    "TRACE_ID": _trace_id,
}


def _constant(value: str) -> Getter:
    return lambda r: value


def _truncated(getter: Getter, max_len: int) -> Getter:
    def get(r: RequestSummary) -> str:
        value = getter(r)
        return value if value == "-" else value[:max_len]

    return get


def _operator(name: str, args: str | None, max_len: int | None, env: Mapping[str, str]) -> Getter:
    if name in _HEADER_OPERATORS:
        if args is None:
            raise AccessLogFormatError(f"%{name}% needs a header name: %{name}(X?Y):Z%")
        return _header_getter(_HEADER_OPERATORS[name], args, max_len, name)
    if name == "START_TIME":
        getter = _start_time(args)
    elif name == "HOSTNAME":
        getter = _constant(socket.gethostname() or "-")
    elif name == "ENVIRONMENT":
        if not args:
            raise AccessLogFormatError("%ENVIRONMENT(X)% needs a variable name")
        getter = _constant(env.get(args) or "-")
    elif name in _SIMPLE:
        if args is not None:
            raise AccessLogFormatError(f"%{name}% takes no arguments")
        getter = _SIMPLE[name]
    elif name in _UNSET:
        getter = _constant("-")
    else:
        raise AccessLogFormatError(f"unsupported access-log operator %{name}%")
    return _truncated(getter, max_len) if max_len is not None else getter


def compile_text(fmt: str, env: Mapping[str, str] | None = None) -> tuple[Getter, ...]:
    """Compile an Envoy format string into getters (literal text becomes constant getters)."""
    env = os.environ if env is None else env
    getters: list[Getter] = []
    pos = 0
    while pos < len(fmt):
        start = fmt.find("%", pos)
        if start < 0:
            getters.append(_constant(fmt[pos:]))
            break
        if start > pos:
            getters.append(_constant(fmt[pos:start]))
        m = _OPERATOR.match(fmt, start)
        if m is None:
            raise AccessLogFormatError(
                f"invalid access-log format at character {start}: {fmt[start : start + 30]!r} is not an "
                "operator like %RESPONSE_CODE% or %REQ(X?Y):Z%"
            )
        max_len = int(m.group(3)) if m.group(3) is not None else None
        getters.append(_operator(m.group(1), m.group(2), max_len, env))
        pos = m.end()
    return tuple(getters)


@dataclass(frozen=True, slots=True)
class AccessLogFormat:
    """A compiled access-log format: `render(record)` gives one complete line (with its newline)."""

    text_getters: tuple[Getter, ...] | None
    json_fields: tuple[tuple[str, tuple[Getter, ...]], ...] | None

    def render(self, record: RequestSummary) -> str:
        if self.text_getters is not None:
            return "".join([g(record) for g in self.text_getters])
        assert self.json_fields is not None
        obj = {key: "".join([g(record) for g in getters]) for key, getters in self.json_fields}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


def compile_format(config: AccessLogConfig, env: Mapping[str, str] | None = None) -> AccessLogFormat:
    """Compile a virtual node's access-log format; raises AccessLogFormatError for what Envoy would reject.

    The config compiler can call this to reject a snapshot with a bad format before it is applied.
    """
    if config.json_format is not None:
        if config.text_format is not None:
            raise AccessLogFormatError("exactly one of format.text and format.json may be given")
        if not config.json_format:
            raise AccessLogFormatError("format.json needs at least one key/value pair")
        fields = []
        for key, value in config.json_format:
            try:
                fields.append((key, compile_text(value, env)))
            except AccessLogFormatError as exc:
                raise AccessLogFormatError(f"format.json key {key!r}: {exc}") from None
        return AccessLogFormat(None, tuple(fields))
    fmt = DEFAULT_FORMAT if config.text_format is None else config.text_format
    if not fmt:
        raise AccessLogFormatError("format.text must not be empty")
    if len(fmt) > MAX_FORMAT and config.text_format is not None:
        raise AccessLogFormatError(f"format.text is {len(fmt)} characters, App Mesh allows {MAX_FORMAT}")
    if not fmt.endswith("\n"):
        fmt += "\n"  # meshproxy: never let lines run together (Envoy would)
    return AccessLogFormat(compile_text(fmt, env), None)


# -- the writer --------------------------------------------------------------------------------------------


_STD_STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}


class AccessLogWriter:
    """Writes formatted chunks to one file from a background thread.

    `submit` never blocks: the queue of chunks is bounded and a chunk that does not fit is dropped, its
    lines counted in `server.telemetry_dropped_total`. The file (often `/dev/stdout`, a pipe) is opened by the
    thread, in append mode, so a slow or blocked pipe only ever stalls the thread. Lines the thread fails to
    write are counted in `failed_lines`, which only the thread writes (the hub folds it into the server stat).
    """

    def __init__(self, path: str, server: ServerStats, *, max_chunks: int = 256) -> None:
        self.path = path
        self.server = server
        self._queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(maxsize=max_chunks)
        # not `_thread`: compiled by mypyc that becomes the C field `__thread`, a GCC keyword
        self._writer_thread: threading.Thread | None = None
        self._retired = False
        self.lines_written = 0
        self.failed_lines = 0

    def __repr__(self) -> str:
        alive = self._writer_thread is not None and self._writer_thread.is_alive()
        return f"<AccessLogWriter {self.path} running={alive} written={self.lines_written}>"

    def start(self) -> None:
        if self._writer_thread is None and not self._retired:
            self._writer_thread = threading.Thread(target=self._run, name="meshproxy-accesslog", daemon=True)
            self._writer_thread.start()

    def submit(self, chunk: bytes, lines: int) -> None:
        try:
            self._queue.put_nowait((chunk, lines))
        except queue.Full:
            self.server.telemetry_dropped_total += lines

    def retire(self) -> None:
        """Stop after writing what is queued, without waiting (a snapshot swap changed the path)."""
        self._retired = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop the thread (bounded wait; blocking, so call it off the loop)."""
        self._retired = True
        if self._writer_thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._writer_thread.join(timeout)
        self._writer_thread = None

    def _open(self) -> BinaryIO | None:
        try:
            # /dev/stdout and /dev/stderr: duplicate the descriptor, which also works when it is a socket
            # (journald), where opening the path fails.
            if self.path in _STD_STREAMS:
                return os.fdopen(os.dup(_STD_STREAMS[self.path]), "ab")
            return open(self.path, "ab")  # owned by the thread, closed in _run
        except OSError as exc:
            log.error("access log: cannot open %s: %s", self.path, exc)
            return None

    def _run(self) -> None:
        f = self._open()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if self._retired:  # retire() found the queue full: stop once it has drained
                        return
                    continue
                if item is None:
                    return
                chunk, lines = item
                if f is None:
                    self.failed_lines += lines
                    continue
                try:
                    f.write(chunk)
                    if self._queue.empty():
                        f.flush()
                    self.lines_written += lines
                except (OSError, ValueError) as exc:
                    self.failed_lines += lines
                    log.error("access log: write to %s failed: %s", self.path, exc)
        finally:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
