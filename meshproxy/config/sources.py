"""Where configuration comes from: App Mesh's control plane is gone, so the user's own source.

A source hands out configuration bytes when they change; the server compiles them and swaps the snapshot
(DESIGN decision 2). Two sources implement the `ConfigSource` protocol:

- `FileSource`: a local file, re-read when its modification time or size changes;
- `HttpSource`: an http(s) URL, polled with `If-None-Match` (the last ETag) so an unchanged configuration
  costs the server a 304 and us nothing.

`open_source(spec)` picks one from a `--config` / MESHPROXY_CONFIG value. `PollSchedule` says how long to
wait before the next poll: the refresh interval with jitter (many sidecars polling one server spread out)
and exponential backoff while the source fails. Whether the source is reachable is what the server reports
as `control_plane.connected_state` (spec §5.1, §6.5).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

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

    def __init__(self, url: str, *, timeout_s: float = HTTP_FETCH_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.fetches = 0
        self.not_modified = 0
        self._digest: bytes | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        counts = f"fetches={self.fetches} not_modified={self.not_modified}"
        return f"<HttpSource {self.url} etag={self.etag} {counts}>"

    @property
    def name(self) -> str:
        return self.url

    async def fetch(self) -> bytes | None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), trust_env=False
            )
        headers = {"Accept": "application/json, application/yaml;q=0.9, */*;q=0.5"}
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
                    raise SourceError(f"{self.url}: HTTP {response.status}{reason}")
                if (response.content_length or 0) > MAX_CONFIG_BYTES:
                    raise SourceError(f"{self.url}: larger than {MAX_CONFIG_BYTES} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_CONFIG_BYTES:
                        raise SourceError(f"{self.url}: larger than {MAX_CONFIG_BYTES} bytes")
                data = bytes(body)
                etag = response.headers.get("ETag")
                last_modified = response.headers.get("Last-Modified")
        except aiohttp.ClientError as exc:
            raise SourceError(f"{self.url}: {exc or type(exc).__name__}") from None
        except TimeoutError:
            raise SourceError(f"{self.url}: no complete answer within {self.timeout_s} s") from None
        # Validators are kept only with the body they describe; a server that drops them gets plain GETs.
        self.etag, self.last_modified = etag, last_modified
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_HTTP_SCHEMES = ("http", "https")


def source_problem(spec: str) -> str | None:
    """Why `spec` cannot name a configuration source, or None if it can (checked before start-up)."""
    if not spec.strip():
        return "empty configuration source"
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in _HTTP_SCHEMES:
        return None if parts.hostname else f"{spec!r}: the URL has no host"
    if scheme == "file":
        return None if parts.path else f"{spec!r}: the file URL has no path"
    if scheme and not os.path.exists(spec):
        return (
            f"{spec!r}: unsupported scheme {parts.scheme!r} (use a file path, file://, http:// or https://)"
        )
    return None


def open_source(spec: str) -> ConfigSource:
    """The source for a --config / MESHPROXY_CONFIG value: http(s) URL, file:// URL or file path.

    Raises SourceError when `source_problem(spec)` finds one.
    """
    problem = source_problem(spec)
    if problem is not None:
        raise SourceError(problem)
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in _HTTP_SCHEMES:
        return HttpSource(spec)
    if scheme == "file":
        return FileSource(unquote(parts.path))
    return FileSource(spec)
