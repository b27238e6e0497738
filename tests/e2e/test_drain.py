"""Zero loss at exit (issue 14, defect 8): clients that honour `Connection: close` lose no request to a
SIGTERM, with one worker or several; and a connection accepted just before the listener closed gets its first
request served if it sends it within the grace (FRESH_GRACE_S), and a clean close (a FIN, never a reset) if it
sends it too late.

32 clients send requests back to back (the upstream takes 5 ms, so some are always in flight) and
reconnect when a response says `Connection: close`, as http.client does. SIGTERM starts the drain: every
response says close, listeners keep accepting for LISTENER_DRAIN_WAIT_TIME_S, then stop; requests in flight
and connections already accepted (or waiting in the listen backlog) are served, then the proxy exits 0. A
refused connect after the listeners closed is the end of the run, not a loss; anything else is (a reset,
a connection closed without a response). Before (issue 14), a run lost up to 22 requests: connections
waiting in the listen backlog were reset when the listening socket closed, and connections the loop had
just accepted were dropped at exit.
"""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from meshproxy.server import FRESH_GRACE_S

from .apps import AppLoop, ColourApp
from .harness import recv_until_closed, running_proxy, wait_for
from .resources import front_and_backend, node_arn

SERVICE = "slow.demo.local"
CLIENTS = 32
DRAIN_WAIT_S = 5
RUN_BOUND_S = DRAIN_WAIT_S + 15.0


@pytest.fixture(scope="module")
def slow(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("slow")


def client_loop(port: int, stop: threading.Event, outcomes: Counter[str], lock: threading.Lock) -> None:
    """Requests back to back until the proxy refuses the connection (or the bound): one outcome each."""
    connection: http.client.HTTPConnection | None = None
    deadline = time.monotonic() + RUN_BOUND_S
    while not stop.is_set() and time.monotonic() < deadline:
        fresh = connection is None or connection.sock is None  # this request opens a new connection
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        step = "connect"
        try:
            if fresh:
                connection.connect()
            step = "send"
            connection.request("GET", "/work", headers={"Host": SERVICE})
            step = "read"
            response = connection.getresponse()
            response.read()
            outcome = f"status {response.status}"
            if response.will_close:  # Connection: close honoured: http.client reconnects next time
                connection.close()
                connection = None
        except ConnectionRefusedError:
            outcome = "refused"
        except (OSError, http.client.HTTPException) as exc:
            outcome = f"lost: {type(exc).__name__} at {step} on a {'new' if fresh else 'kept'} connection"
            connection.close()
            connection = None
        with lock:
            outcomes[outcome] += 1
        if outcome == "refused":
            break
    if connection is not None:
        connection.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_client_honouring_connection_close_loses_nothing_at_exit(
    slow: ColourApp, tmp_path: Path, workers: int
) -> None:
    slow.reset()
    slow.configure(delay_s=0.005)
    resources = front_and_backend(SERVICE, "slow", slow.port)
    env = {"ENVOY_CONCURRENCY": str(workers)}
    outcomes: Counter[str] = Counter()
    lock, stop = threading.Lock(), threading.Event()
    with running_proxy(resources, node_arn("front"), tmp_path, drain_wait_s=DRAIN_WAIT_S, env=env) as proxy:
        threads = [
            threading.Thread(target=client_loop, args=(proxy.egress_port, stop, outcomes, lock))
            for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            assert proxy.process is not None
            proxy.process.send_signal(signal.SIGTERM)
            rc = proxy.wait_exit(RUN_BOUND_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(RUN_BOUND_S)
        tail = proxy.output_tail()
    lost = {outcome: n for outcome, n in outcomes.items() if outcome.startswith("lost")}
    assert rc == 0, tail
    assert not lost, (dict(outcomes), tail)
    assert outcomes["status 200"] > 100 and set(outcomes) <= {"status 200", "refused"}, dict(outcomes)


WITHIN_GRACE_S = 1.4  # after its connect: past the second the grace used to be, well inside FRESH_GRACE_S
REQUEST = f"GET /work HTTP/1.1\r\nHost: {SERVICE}\r\n\r\n".encode()


def refused(port: int) -> bool:
    """The listener is closed: a connect is refused. While it closes, a new connect is not answered (its SYN
    is dropped; the client's kernel sends it again a second later, and is refused then): never a reset."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_connection_accepted_last_is_served_within_the_grace_and_closed_cleanly_after(
    slow: ColourApp, tmp_path: Path
) -> None:
    """Both connect before the exit begins (/quitquitquit: the listener closes at once). `served` sends its
    request well after the exit began, within the grace: answered. `late` stays silent until the proxy
    closes it at the grace's end, then sends its request: the close is a FIN, and the request crossing it
    is read and dropped by the delayed close, not answered with a reset (what Envoy's delayed close does)."""
    assert WITHIN_GRACE_S < FRESH_GRACE_S - 0.4
    slow.reset()
    slow.configure(delay_s=0.0)
    resources = front_and_backend(SERVICE, "slow", slow.port)
    with running_proxy(resources, node_arn("front"), tmp_path, drain_wait_s=DRAIN_WAIT_S) as proxy:
        served, late = (socket.create_connection(("127.0.0.1", proxy.egress_port), timeout=10) for _ in "ab")
        connected = time.monotonic()
        try:
            assert proxy.admin("/quitquitquit", method="POST").status == 200
            assert wait_for(lambda: refused(proxy.egress_port), 2.0), "the listener did not close"
            time.sleep(max(0.0, connected + WITHIN_GRACE_S - time.monotonic()))
            served.sendall(REQUEST)
            reply, closed = recv_until_closed(served)
            assert reply.startswith(b"HTTP/1.1 200 ") and b"connection: close" in reply.lower(), reply
            assert closed

            assert late.recv(1) == b""  # the grace is over: a FIN
            late.sendall(REQUEST)  # crossing the close: dropped
            time.sleep(0.2)  # a reset, if the socket were closed, would be back by now...
            late.sendall(REQUEST)  # ...and this would fail with it
            assert late.recv(1) == b""
        finally:
            served.close()
            late.close()
        rc = proxy.wait_exit(10.0)
        tail = proxy.output_tail()
    assert rc == 0, tail
    assert slow.requests == 1, tail
