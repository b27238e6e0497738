"""moto's server for the tests that talk to AWS APIs (App Mesh export, Cloud Map): loopback only, dummy
credentials, nothing that could reach real AWS or the instance metadata service."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import REPO_ROOT, clean_environ, free_ports

MOTO_SERVER = REPO_ROOT / ".venv" / "bin" / "moto_server"
MOTO_START_TIMEOUT_S = 20.0
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def aws_environ(**extra: str) -> dict[str, str]:
    """A subprocess environment with dummy credentials and nothing that could reach real AWS or IMDS."""
    env = {k: v for k, v in clean_environ().items() if not k.startswith("AWS_")}
    env.update(CREDENTIALS)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    env.update(extra)
    return env


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's server on a free 127.0.0.1 port; yields its URL; always stopped."""
    port = free_ports(1)[0]
    log = workdir / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=aws_environ(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto_server exited with {process.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server not listening after {MOTO_START_TIMEOUT_S} s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


def cloud_map_service(url: str, namespace: str, service: str) -> tuple[Any, str]:
    """A boto3 servicediscovery client on moto's server at `url`, with an HTTP `namespace` holding
    `service`; returns the client and the service's id."""
    import boto3

    client = boto3.client(
        "servicediscovery",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_http_namespace(Name=namespace)
    namespace_id = next(n["Id"] for n in client.list_namespaces()["Namespaces"] if n["Name"] == namespace)
    service_id = client.create_service(Name=service, NamespaceId=namespace_id)["Service"]["Id"]
    return client, str(service_id)
