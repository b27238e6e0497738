"""The upstream: nginx (Debian nginx-light) as one foreground process with a throwaway prefix.

`master_process off` keeps nginx a single process, so stopping the child the harness started stops all of it,
and one worker keeps the upstream's share of the two cores fixed. Every path nginx would write to (pid, error
log, temp directories) is under the prefix, so no root-owned default path is touched.
"""

from __future__ import annotations

from pathlib import Path

SMALL_PATH = "/"
SMALL_BODY = b"ok"
FILES_LOCATION = "/files/"

# name -> size of the static bodies served under /files/.
BODY_FILES = {"1k.bin": 1024, "64k.bin": 65536}


def body_path(name: str) -> str:
    return FILES_LOCATION + name


def config(prefix: Path, port: int) -> str:
    """nginx.conf for one worker on 127.0.0.1:`port` serving `return 200 "ok"` and the static bodies."""
    p = prefix.resolve()
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
    keepalive_timeout 300s;
    sendfile on;
    tcp_nodelay on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {SMALL_PATH} {{
            default_type text/plain;
            return 200 "{SMALL_BODY.decode()}";
        }}
        location {FILES_LOCATION} {{
            alias {p}/files/;
        }}
    }}
}}
"""


def prepare(prefix: Path, port: int) -> Path:
    """Write the config, temp directories and body files under `prefix`; return the config path."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    files = prefix / "files"
    files.mkdir(parents=True, exist_ok=True)
    for name, size in BODY_FILES.items():
        # Deterministic printable bytes, so a truncated body is visible when debugging.
        (files / name).write_bytes((b"0123456789abcdef" * (size // 16 + 1))[:size])
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, port))
    return conf


def command(nginx: str, prefix: Path, conf: Path) -> list[str]:
    """`-e` sets the error log before the config is read (nginx >= 1.19.5), so no default path is opened."""
    p = str(prefix.resolve())
    return [nginx, "-p", p + "/", "-e", p + "/error.log", "-c", str(conf.resolve())]
