"""Opening one connection to an upstream host, with Envoy's counts: the one place the pools and the TCP
proxy count `upstream_cx_total`, `upstream_cx_connect_fail` / `_timeout` and `upstream_cx_active`."""

from __future__ import annotations

import asyncio

from meshproxy.net.connector import ConnectFailure, Connector
from meshproxy.telemetry.stats import ClusterStats
from meshproxy.upstream.host import Host


async def connect_host(
    connector: Connector, protocol: asyncio.Protocol, host: Host, stats: ClusterStats, timeout: float
) -> ConnectFailure | None:
    """Connect `protocol` to `host`; None when it is connected (and counted active), else the failure."""
    stats.upstream_cx_total += 1
    host.cx_total += 1
    try:
        await connector.connect(protocol, host.address, host.port, timeout)
    except ConnectFailure as exc:
        stats.upstream_cx_connect_fail += 1
        if exc.timed_out:
            stats.upstream_cx_connect_timeout += 1
        host.cx_connect_fail += 1
        return exc
    stats.upstream_cx_active += 1
    host.cx_active += 1
    return None
