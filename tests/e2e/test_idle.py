"""Idle timeouts (issue 2): a route's `idle` ends a request that moves no bytes (Envoy's stream idle timeout:
408 before the response starts), enforced by a once-a-second sweep; a listener `idle` of 0 disables the
connection idle timeout, so keep-alive connections stay open."""

from __future__ import annotations

import time
from pathlib import Path

from .apps import AppLoop
from .harness import Http1Client, MeshProxy, parse_stats
from .resources import (
    duration,
    listener,
    mesh,
    node_arn,
    route,
    service_via_router,
    virtual_node,
    virtual_router,
)

COLOR = "color.demo.local"


def test_route_idle_timeout_gives_408_and_listener_idle_zero_keeps_connections(
    app_loop: AppLoop, tmp_path: Path
) -> None:
    slow = app_loop.colour_app("slow-idle")
    idle_route = route("color-router", "idle", [("slow", 100)], timeout_s=30)
    idle_route["route"]["spec"]["httpRoute"]["timeout"]["idle"] = duration(1)
    front_listener = listener(18997)
    front_listener["timeout"] = {"http": {"idle": duration(0)}}
    resources = [
        mesh(),
        virtual_node("front", [front_listener], backends=[COLOR]),
        virtual_node("slow", slow.port),
        virtual_router("color-router"),
        idle_route,
        service_via_router(COLOR, "color-router"),
    ]
    proxy = MeshProxy(resources, node_arn("front"), tmp_path).start()
    try:
        slow.configure(delay_s=4.0, delay_first=1)
        with Http1Client(proxy.egress_port) as client:
            reply = client.get("/quiet", host=COLOR)
            assert reply.status == 408, reply  # the upstream would have answered 200 after 4 s
            assert reply.body == b"stream timeout"
            # The listener idle timeout is 0 (disabled): an idle keep-alive connection survives the sweeps.
            assert client.get("/", host=COLOR).status == 200
            sock = client.sock
            time.sleep(2.5)
            assert client.get("/", host=COLOR).status == 200
            assert client.sock is sock
        assert parse_stats(proxy.admin("/stats").body.decode())["http.egress.downstream_rq_4xx"] >= 1
    finally:
        proxy.stop()
