"""Where configuration comes from: App Mesh's control plane is gone, so the user's own source.

A source hands out configuration bytes when they change; the server compiles them and swaps the snapshot
(DESIGN decision 2). Three sources implement the `ConfigSource` protocol:

- `FileSource`: a local file, re-read when its modification time or size changes;
- `HttpSource`: an http(s) URL, polled with `If-None-Match` (the last ETag) so an unchanged configuration
  costs the server a 304 and us nothing; it can send headers (`Authorization: Bearer ...`) and trust a
  custom CA bundle;
- `S3Source`: an `s3://bucket/key` object, polled the same way (`GetObject` with `IfNoneMatch`), with boto3's
  standard credential chain: environment, shared config/SSO, web identity (EKS IRSA), the ECS task role,
  the EC2 instance profile. `AWS_ENDPOINT_URL_S3` / `AWS_CA_BUNDLE` work as boto3 documents them.

`open_source(spec, options)` picks one from a `--config` / MESHPROXY_CONFIG value. `PollSchedule` says how
long to wait before the next poll: the refresh interval with jitter (many sidecars polling one server spread
out) and exponential backoff while the source fails. Whether the source is reachable is what the server
reports as `control_plane.connected_state` (spec §5.1, §6.5).

Secrets stay out of logs: a source's `name` (what every message uses) is its URL with the password and the
query values replaced by `***` (a presigned URL's signature, a token parameter), header values are never
printed, and errors from the HTTP client are rewritten to use the redacted name.

A file path whose directory does not exist (or is not a directory, or cannot be searched) is refused before
start-up: no volume mount can make it appear. A path whose directory exists is waited for, as a volume
being filled (an init container, a ConfigMap projection) is normal at start.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib.util
import os
import random
import re
import ssl
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import aiohttp

# A configuration larger than this is refused rather than held in memory (a whole exported mesh at App
# Mesh's quotas is a few MiB).
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# How long one HTTP fetch may take, connect to last body byte.
HTTP_FETCH_TIMEOUT_S = 10.0
# Polls land uniformly within +-JITTER of the refresh interval.
JITTER = 0.1
# While the source fails, the wait doubles from the refresh interval up to this (Envoy's xDS retry cap);
# an interval longer than the cap is kept as is: backoff never polls faster than asked.
MAX_BACKOFF_S = 30.0
# The retry base when the refresh interval is 0 ("read once"): the first fetch must still be retried.
RETRY_BASE_S = 1.0


class SourceError(Exception):
    """The source could not be read (unreachable, unreadable). The last good configuration keeps serving."""


# RFC 9110 §5.6.2 token characters: a header name is one token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What a field value may not contain (RFC 9110 §5.5): CR, LF, NUL.
_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` -> (name, value). Raises ValueError with a reason that never repeats the value."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ValueError("expected 'Name: value'")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if _VALUE_FORBIDDEN.search(value):
        raise ValueError(f"the value of {name} contains a line break or NUL")
    return name, value


def parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    """MESHPROXY_CONFIG_HEADERS: one `Name: value` per line, blank lines ignored; ValueError names a line."""
    headers = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            headers.append(parse_header(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return tuple(headers)


def redact_url(url: str) -> str:
    """`url` fit for a log line: the password and every query value replaced by `***`, no fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, "***") for key, _ in pairs], safe="*") if pairs else "***"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def header_names(headers: Iterable[tuple[str, str]]) -> str:
    """For logs: which headers are sent, never their values."""
    return ", ".join(name for name, _ in headers) or "none"


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to reach a remote source: extra request headers (http/https only) and a CA bundle file that
    replaces the system trust store (https and s3). Header values are secrets: never in a repr or a log."""

    headers: tuple[tuple[str, str], ...] = ()
    ca_bundle: str | None = None
    timeout_s: float = HTTP_FETCH_TIMEOUT_S

    def __repr__(self) -> str:
        return f"<SourceOptions headers=[{header_names(self.headers)}] ca_bundle={self.ca_bundle}>"


class ContentDigest:
    """Remembers the last body a source returned: an identical one is reported as unchanged (None)."""

    __slots__ = ("_digest",)

    def __init__(self) -> None:
        self._digest: bytes | None = None

    def changed(self, data: bytes) -> bytes | None:
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        return data


class ConfigSource(Protocol):
    @property
    def name(self) -> str:
        """What to call the source in logs and errors (a path or URL)."""
        ...

    async def fetch(self) -> bytes | None:
        """New configuration bytes, or None when nothing changed since the last fetch. Raises SourceError."""
        ...

    async def close(self) -> None: ...


class PollSchedule:
    """When to poll a source next: every `interval_s` with +-`jitter`, backing off while it fails.

    `next_delay(failed)` is called after every fetch. After `n` consecutive failures the base wait is
    `interval_s * 2**(n-1)`, capped at max(`interval_s`, `max_backoff_s`); one success resets it. `interval_s`
    0 (read once) still retries failures, from `RETRY_BASE_S`. `uniform` returns a float in [0, 1) (a seam for
    tests).
    """

    def __init__(
        self,
        interval_s: float,
        *,
        jitter: float = JITTER,
        max_backoff_s: float = MAX_BACKOFF_S,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        self._uniform = uniform

    def __repr__(self) -> str:
        return f"<PollSchedule every={self.interval_s}s failures={self.failures}>"

    def next_delay(self, failed: bool) -> float:
        if not failed:
            self.failures = 0
            base = self.interval_s
        else:
            self.failures += 1
            start = self.interval_s if self.interval_s > 0 else RETRY_BASE_S
            cap = max(start, self.max_backoff_s)
            base = min(cap, start * 2.0 ** min(self.failures - 1, 30))
        return base * (1.0 + self.jitter * (2.0 * self._uniform() - 1.0))


class FileSource:
    """A file, re-read when its modification time or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<FileSource {self.path} seen={self._seen}>"

    @property
    def name(self) -> str:
        return self.path

    async def fetch(self) -> bytes | None:
        return await asyncio.to_thread(self._read_if_changed)

    def _read_if_changed(self) -> bytes | None:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size)
            if key == self._seen:
                return None
            if st.st_size > MAX_CONFIG_BYTES:
                raise SourceError(f"{self.path}: larger than {MAX_CONFIG_BYTES} bytes")
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"{self.path}: {exc.strerror or exc}") from None
        self._seen = key
        return data

    async def close(self) -> None:
        return None


class HttpSource:
    """An http(s) URL polled with a conditional GET.

    The request carries `If-None-Match` with the last ETag (and `If-Modified-Since` with the last
    `Last-Modified`); 304 means unchanged (`None`), 200 gives the body. A 200 whose body equals the last one
    is also `None`, so a server without validators costs a download but no recompile. Any other status, a
    connection error, a timeout (`timeout_s` for the whole exchange) or a body over `MAX_CONFIG_BYTES` raises
    `SourceError`. Environment proxy settings are not used: the sidecar's own traffic goes direct (UID 1337
    is not intercepted, spec §6.4). The aiohttp session is created on the first fetch, in the running loop.
    """

    def __init__(self, url: str, options: SourceOptions | None = None) -> None:
        self.url = url
        self.options = options or SourceOptions()
        self.timeout_s = self.options.timeout_s
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.fetches = 0
        self.not_modified = 0
        self._name = redact_url(url)
        self._content = ContentDigest()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        counts = f"fetches={self.fetches} not_modified={self.not_modified}"
        return f"<HttpSource {self._name} etag={self.etag} {counts}>"

    @property
    def name(self) -> str:
        return self._name

    def _redacted(self, exc: BaseException) -> str:
        """The client's error text, with the URL as `name` shows it (query values may be secrets)."""
        text = str(exc) or type(exc).__name__
        return text.replace(self.url, self._name)

    async def fetch(self) -> bytes | None:
        import aiohttp

        if self._session is None:
            ca_bundle = self.options.ca_bundle
            tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                trust_env=False,
                connector=aiohttp.TCPConnector(ssl=tls),
            )
        headers = {"Accept": "application/json, application/yaml;q=0.9, */*;q=0.5"}
        headers.update(self.options.headers)
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        self.fetches += 1
        try:
            async with self._session.get(self.url, headers=headers) as response:
                if response.status == 304:
                    self.not_modified += 1
                    return None
                if response.status != 200:
                    reason = f" {response.reason}" if response.reason else ""
                    raise SourceError(f"{self._name}: HTTP {response.status}{reason}")
                if (response.content_length or 0) > MAX_CONFIG_BYTES:
                    raise SourceError(f"{self._name}: larger than {MAX_CONFIG_BYTES} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_CONFIG_BYTES:
                        raise SourceError(f"{self._name}: larger than {MAX_CONFIG_BYTES} bytes")
                data = bytes(body)
                etag = response.headers.get("ETag")
                last_modified = response.headers.get("Last-Modified")
        except aiohttp.ClientError as exc:
            raise SourceError(f"{self._name}: {self._redacted(exc)}") from None
        except TimeoutError:
            raise SourceError(f"{self._name}: no complete answer within {self.timeout_s} s") from None
        # Validators are kept only with the body they describe; a server that drops them gets plain GETs.
        self.etag, self.last_modified = etag, last_modified
        return self._content.changed(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class S3Source:
    """An `s3://bucket/key` object polled with `GetObject` + `IfNoneMatch` (the last ETag).

    S3 answers 304 when the object is unchanged (`None`); a new ETag with the same bytes is also `None`.
    boto3 is imported on the first fetch and its calls run in a worker thread: the event loop never waits
    on them. Credentials come from boto3's standard chain (module docstring); `ca_bundle` replaces the trust
    store as `AWS_CA_BUNDLE` would. A missing object, a denied request, missing credentials or an unreachable
    endpoint raise `SourceError` naming the cause (never a credential).
    """

    def __init__(self, bucket: str, key: str, options: SourceOptions | None = None) -> None:
        self.bucket = bucket
        self.key = key
        self.options = options or SourceOptions()
        self.etag: str | None = None
        self.fetches = 0
        self.not_modified = 0
        self._content = ContentDigest()
        self._client: Any = None

    def __repr__(self) -> str:
        counts = f"fetches={self.fetches} not_modified={self.not_modified}"
        return f"<S3Source {self.name} etag={self.etag} {counts}>"

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    async def fetch(self) -> bytes | None:
        return await asyncio.to_thread(self._get)

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            timeout = self.options.timeout_s
            config = Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"}
            )
            self._client = boto3.session.Session().client(
                "s3", config=config, verify=self.options.ca_bundle or None
            )
        return self._client

    def _get(self) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        self.fetches += 1
        request: dict[str, str] = {"Bucket": self.bucket, "Key": self.key}
        if self.etag is not None:
            request["IfNoneMatch"] = self.etag
        try:
            response = self._s3().get_object(**request)
            size = int(response.get("ContentLength") or 0)
            if size > MAX_CONFIG_BYTES:
                response["Body"].close()
                raise SourceError(f"{self.name}: larger than {MAX_CONFIG_BYTES} bytes")
            with response["Body"] as body:
                data = body.read(MAX_CONFIG_BYTES + 1)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 or error.get("Code") in ("304", "NotModified"):
                self.not_modified += 1
                return None
            code = error.get("Code") or f"HTTP {status}"
            message = error.get("Message") or ""
            raise SourceError(f"{self.name}: {code}{': ' + message if message else ''}") from None
        except NoCredentialsError:
            raise SourceError(
                f"{self.name}: no AWS credentials (environment, shared config, web identity / IRSA, "
                "ECS task role or instance profile)"
            ) from None
        except BotoCoreError as exc:
            raise SourceError(f"{self.name}: {exc}") from None
        if len(data) > MAX_CONFIG_BYTES:
            raise SourceError(f"{self.name}: larger than {MAX_CONFIG_BYTES} bytes")
        self.etag = response.get("ETag")
        return self._content.changed(data)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


_HTTP_SCHEMES = ("http", "https")


def _directory_problem(path: str) -> str | None:
    """Why a file at `path` can never appear (its directory is missing or unusable), or None."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        info = os.stat(directory)
    except OSError as exc:
        reason = {errno.ENOENT: "does not exist", errno.ENOTDIR: "is not a directory"}.get(
            exc.errno or 0, exc.strerror or str(exc)
        )
        return f"{path!r}: directory {directory} {reason}; no file can appear there"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path!r}: {directory} is not a directory; no file can appear there"
    if not os.access(directory, os.X_OK):
        return f"{path!r}: directory {directory} cannot be searched by UID {os.getuid()}"
    if os.path.isdir(path):
        return f"{path!r} is a directory; name the file in it"
    return None


def source_problem(spec: str, options: SourceOptions | None = None) -> str | None:
    """Why `spec` cannot name a configuration source, or None if it can (checked before start-up).

    A file path whose directory does not exist is a problem; a missing file in an existing directory is not
    (the server waits for it). `s3://` needs boto3; a CA bundle must be a readable file.
    """
    if not spec.strip():
        return "empty configuration source"
    if options is not None and options.ca_bundle and not os.access(options.ca_bundle, os.R_OK):
        return f"CA bundle {options.ca_bundle!r} cannot be read"
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in _HTTP_SCHEMES:
        return None if parts.hostname else f"{redact_url(spec)!r}: the URL has no host"
    if scheme == "s3":
        if not parts.netloc or not parts.path.lstrip("/"):
            return f"{spec!r}: expected s3://bucket/key"
        if importlib.util.find_spec("boto3") is None:
            return "s3:// sources need boto3: pip install 'meshproxy[aws]'"
        return None
    if scheme == "file":
        if not parts.path:
            return f"{spec!r}: the file URL has no path"
        return _directory_problem(unquote(parts.path))
    if scheme and not os.path.exists(spec):
        return (
            f"{spec!r}: unsupported scheme {parts.scheme!r} "
            "(use a file path, file://, http://, https:// or s3://)"
        )
    return _directory_problem(spec)


def open_source(spec: str, options: SourceOptions | None = None) -> ConfigSource:
    """The source for a --config / MESHPROXY_CONFIG value: http(s) URL, s3:// URL, file:// URL or file path.

    Raises SourceError when `source_problem(spec, options)` finds one.
    """
    problem = source_problem(spec, options)
    if problem is not None:
        raise SourceError(problem)
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in _HTTP_SCHEMES:
        return HttpSource(spec, options)
    if scheme == "s3":
        return S3Source(parts.netloc, unquote(parts.path.lstrip("/")), options)
    if scheme == "file":
        return FileSource(unquote(parts.path))
    return FileSource(spec)
