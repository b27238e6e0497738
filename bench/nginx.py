"""The upstream: nginx (Debian nginx-light) as one foreground process with a throwaway prefix.

`master_process off` keeps nginx a single process, so stopping the child the harness started stops all of it,
and one worker keeps the upstream's share of the two cores fixed. Every path nginx would write to (pid, error
log, temp directories) is under the prefix, so no root-owned default path is touched.

Two servers share the process: HTTP/1.1 on `port`, and h2c (prior knowledge only: nginx 1.22 `listen ...
http2` without TLS) on `h2_port`, which also answers gRPC on `GRPC_PATH` with a fixed unary response: one
empty length-prefixed message and `grpc-status: 0` as an HTTP/2 trailer (nginx's `add_trailer`). nginx
refuses POST to a static file with 405; `error_page 405 =200 $uri` serves the file instead.
"""

from __future__ import annotations

from pathlib import Path

SMALL_PATH = "/"
SMALL_BODY = b"ok"
FILES_LOCATION = "/files/"

# name -> size of the static bodies served under /files/.
BODY_FILES = {"1k.bin": 1024, "64k.bin": 65536}

GRPC_PATH = "/bench.Bench/Unary"  # /<package.Service>/<Method> (gRPC over HTTP/2 "Path")
GRPC_RESPONSE = b"\x00\x00\x00\x00\x00"  # one uncompressed, empty message: flag 0, length 0
GRPC_RESPONSE_FILE = "grpc-empty.bin"


def body_path(name: str) -> str:
    return FILES_LOCATION + name


def prologue(p: Path) -> str:
    """The start of every bench nginx config up to the `http` block's own directives: one unprivileged
    process in the foreground, everything it writes under `p`, keep-alive without limits."""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;"""


def config(prefix: Path, port: int, h2_port: int) -> str:
    """nginx.conf for one worker: HTTP/1.1 on 127.0.0.1:`port` serving `return 200 "ok"` and the static
    bodies; the same plus the gRPC answer over h2c on 127.0.0.1:`h2_port`."""
    if port == h2_port:
        raise ValueError("the HTTP/1.1 and h2c servers need two ports")
    p = prefix.resolve()
    locations = f"""\
        location = {SMALL_PATH} {{
            default_type text/plain;
            return 200 "{SMALL_BODY.decode()}";
        }}
        location {FILES_LOCATION} {{
            alias {p}/files/;
        }}"""
    return f"""\
{prologue(p)}
    sendfile on;
    tcp_nodelay on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{locations}
    }}
    server {{
        listen 127.0.0.1:{h2_port} http2 backlog=4096;
{locations}
        location = {GRPC_PATH} {{
            alias {p}/files/{GRPC_RESPONSE_FILE};
            default_type application/grpc;
            etag off;
            add_trailer grpc-status 0;
            error_page 405 =200 $uri;
        }}
    }}
}}
"""


def prepare(prefix: Path, port: int, h2_port: int) -> Path:
    """Write the config, temp directories and body files under `prefix`; return the config path."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    files = prefix / "files"
    files.mkdir(parents=True, exist_ok=True)
    for name, size in BODY_FILES.items():
        # Deterministic printable bytes, so a truncated body is visible when debugging.
        (files / name).write_bytes((b"0123456789abcdef" * (size // 16 + 1))[:size])
    (files / GRPC_RESPONSE_FILE).write_bytes(GRPC_RESPONSE)
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, port, h2_port))
    return conf


def command(nginx: str, prefix: Path, conf: Path) -> list[str]:
    """`-e` sets the error log before the config is read (nginx >= 1.19.5), so no default path is opened."""
    p = str(prefix.resolve())
    return [nginx, "-p", p + "/", "-e", p + "/error.log", "-c", str(conf.resolve())]
