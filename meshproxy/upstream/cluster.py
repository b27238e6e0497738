"""Clusters at run time: discovery, host selection, pools, and the manager that keeps them across swaps."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
from collections.abc import Callable, Iterable

from meshproxy.codec.h1 import ClientCodec
from meshproxy.config.snapshot import (
    APP_MESH_LIMITS,
    CloudMapDiscovery,
    Cluster,
    ConnectionPoolLimits,
    DnsDiscovery,
    ListenerProtocol,
    RetryBudget,
    Snapshot,
    StaticDiscovery,
)
from meshproxy.core.clock import LOOP_CLOCK, Clock
from meshproxy.net.connector import LOOP_CONNECTOR, Connector
from meshproxy.net.tls_connector import TlsConnector
from meshproxy.net.tls_contexts import TlsContexts, TlsKey, cluster_alpn
from meshproxy.telemetry.stats import ClusterStats, StatsStore
from meshproxy.upstream.discovery import discover
from meshproxy.upstream.h1_connection import Http1UpstreamConnection
from meshproxy.upstream.h2_connection import STREAMS_PER_CONNECTION, H2UpstreamConnection
from meshproxy.upstream.health import ejection_seconds, in_panic, may_eject
from meshproxy.upstream.health_check import HealthChecker
from meshproxy.upstream.host import Host
from meshproxy.upstream.limits import CircuitBreakers, RetryBudgetState
from meshproxy.upstream.pool import HostPool
from meshproxy.upstream.ports import ConnectionOwner, PooledConnection

log = logging.getLogger("meshproxy.upstream")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class ClusterRuntime:
    """One cluster of the current snapshot: its hosts, their pools, its circuit breakers and its stats."""

    def __init__(
        self,
        config: Cluster,
        stats: ClusterStats,
        codec_factory: Callable[[], ClientCodec],
        connector: Connector = LOOP_CONNECTOR,
        clock: Clock = LOOP_CLOCK,
        retry_budget: RetryBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.codec_factory = codec_factory
        self.connector = connector
        self.clock = clock
        self.breakers = CircuitBreakers(config.limits, stats)
        self.retry_budget = RetryBudgetState(retry_budget, clock.now()) if retry_budget is not None else None
        self.hosts: list[Host] = []
        self.pools: dict[tuple[str, int], HostPool] = {}
        self.healthy = 0  # hosts in the pick set (see refresh_health)
        self._next_return = math.inf  # when the next ejected host comes back (clock time)
        self.checker = (
            HealthChecker(config.health_check, config.name, connector, clock, stats, self.refresh_health, rng)
            if config.health_check is not None
            else None
        )
        self._rr = 0
        self.resolved = False  # discovery has answered once (hosts, or a failure)
        self._resolve_waiters: list[Callable[[], None]] = []
        self._refresh_task: asyncio.Task[None] | None = None
        self.resolve_error: str | None = None
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<Cluster {self.config.name} hosts={len(self.hosts)} connections={self.breakers.connections} "
            f"pending={self.breakers.pending}>"
        )

    # discovery
    def start(self) -> None:
        discovery = self.config.discovery
        if isinstance(discovery, StaticDiscovery):
            self.set_hosts(discovery.addresses)
        elif isinstance(discovery, DnsDiscovery) and is_ip_literal(discovery.hostname):
            self.set_hosts([(discovery.hostname, discovery.port)])
        elif isinstance(discovery, DnsDiscovery | CloudMapDiscovery):
            # Hook into upstream/discovery.py: DNS refreshed on the record's TTL (LOADBALANCER / ENDPOINTS,
            # ipPreference) and Cloud Map DiscoverInstances; it calls back with hosts or a failure.
            self._refresh_task = asyncio.get_running_loop().create_task(
                discover(discovery, self._discovered, self._discovery_failed)
            )

    def _discovered(self, addresses: list[tuple[str, int]]) -> None:
        if self.resolve_error is not None:
            log.warning("cluster %s: discovery answers again", self.config.name)
        self.resolve_error = None
        self.set_hosts(addresses)

    def _discovery_failed(self, reason: str) -> None:
        # the last hosts stay; requests waiting for a first answer stop waiting (and get no host: 503 UH).
        # Logged once per episode (and when the reason changes), not at every retry.
        if reason != self.resolve_error:
            log.warning("cluster %s: discovery failed: %s", self.config.name, reason)
        self.resolve_error = reason
        self._mark_resolved()

    def set_hosts(self, addresses: Iterable[tuple[str, int]]) -> None:
        """The hosts discovery found. A host that is gone leaves the pick set at once, whatever its health
        checks said (App Mesh roadmap #213: Envoy kept routing to removed endpoints until they failed
        their checks); its pool drains. A new host is health checked before it takes traffic."""
        current = {(h.address, h.port): h for h in self.hosts}
        hosts: list[Host] = []
        for address, port in addresses:
            known = current.pop((address, port), None)
            if known is None:
                known = Host(address, port)
                if self.checker is not None:
                    known.hc_failed = known.hc_pending = True  # out until its first check passes
            hosts.append(known)
        for key in current:  # hosts that left: drain their pools
            pool = self.pools.pop(key, None)
            if pool is not None:
                pool.shutdown()
        self.hosts = hosts
        if self.checker is not None and not self.closed:
            self.checker.set_hosts(hosts)
        self.refresh_health()
        self._mark_resolved()

    def _mark_resolved(self) -> None:
        self.resolved = True
        waiters, self._resolve_waiters = self._resolve_waiters, []
        for waiter in waiters:
            waiter()

    def when_resolved(self, callback: Callable[[], None]) -> None:
        """Call `callback` once discovery has answered (with hosts, or with a failure)."""
        if self.resolved:
            callback()
        else:
            self._resolve_waiters.append(callback)

    async def wait_resolved(self) -> None:
        if self.resolved:
            return
        future = asyncio.get_running_loop().create_future()
        self.when_resolved(lambda: None if future.done() else future.set_result(None))
        await future

    # selection
    def pick_host(self, exclude: tuple[Host, ...] = ()) -> Host | None:
        """Round robin over healthy hosts, avoiding `exclude` (previously tried hosts) when possible.

        Below Envoy's panic threshold (fewer than 50 % of hosts healthy) every host is eligible, so load
        spreads over all of them instead of piling onto the few healthy ones (counted lb_healthy_panic).
        """
        hosts = self.hosts
        if self.healthy == 1 and len(hosts) == 1:
            return hosts[0]  # the common case (one DNS host, healthy): no clock read, no panic to weigh
        host = self._choose(hosts, exclude)
        if host is None:
            self.stats.upstream_cx_none_healthy += 1
        return host

    def _choose(self, hosts: list[Host], exclude: tuple[Host, ...]) -> Host | None:
        n = len(hosts)
        if n == 0:
            return None
        next_return = self._next_return
        if next_return < math.inf and self.clock.now() >= next_return:
            self.refresh_health()  # an ejection is over
        panic = self.healthy < n and in_panic(self.healthy, n)
        if panic:
            self.stats.lb_healthy_panic += 1
        if n == 1:
            return hosts[0] if panic or hosts[0].healthy else None
        fallback: Host | None = None
        for _ in range(n):
            self._rr = (self._rr + 1) % n
            host = hosts[self._rr]
            if not panic and not host.healthy:
                continue
            if host in exclude:
                fallback = fallback or host
                continue
            return host
        return fallback

    # health
    def refresh_health(self) -> None:
        """Bring ejections that are over back, and recount the healthy hosts and Envoy's gauges (after a
        health check, an ejection, a discovery answer, and once the next ejection ends)."""
        now = self.clock.now()
        healthy = ejected = checked_healthy = 0
        next_return = math.inf
        for host in self.hosts:
            until = host.ejected_until
            if until:
                if now >= until:
                    host.ejected_until = 0.0  # the ejection is over: back in the pick set
                else:
                    ejected += 1
                    next_return = min(next_return, until)
            if not host.hc_failed:
                checked_healthy += 1
            if host.healthy:
                healthy += 1
        self.healthy = healthy
        self._next_return = next_return
        stats = self.stats
        stats.membership_total = len(self.hosts)
        stats.membership_healthy = healthy
        stats.outlier_detection_ejections_active = ejected
        if self.checker is not None:
            stats.health_check_healthy = checked_healthy

    def pool_for(self, host: Host) -> HostPool:
        key = (host.address, host.port)
        pool = self.pools.get(key)
        if pool is None:
            http2 = self.config.protocol in (ListenerProtocol.HTTP2, ListenerProtocol.GRPC)
            pool = self.pools[key] = HostPool(
                host,
                self.breakers,
                self.stats,
                self._h2_connection if http2 else self._h1_connection,
                streams_per_connection=STREAMS_PER_CONNECTION if http2 else 1,
                connector=self.connector,
                connect_timeout=self.config.connect_timeout,
                clock=self.clock,
            )
        return pool

    def _h1_connection(self, owner: ConnectionOwner) -> PooledConnection:
        return Http1UpstreamConnection(owner, self.codec_factory(), self.clock)

    def _h2_connection(self, owner: ConnectionOwner) -> PooledConnection:
        return H2UpstreamConnection(owner, self.clock)

    def record_response(self, host: Host, status: int) -> None:
        """A response from `host`: a 5xx counts toward its ejection (outlier detection's consecutive_5xx)."""
        self._record(host, status >= 500)

    def record_failure(self, host: Host) -> None:
        """An attempt on `host` failed without a response (connect failure, reset, timeout): Envoy counts
        these local-origin errors as 5xx for outlier detection."""
        self._record(host, True)

    def _record(self, host: Host, failed: bool) -> None:
        consecutive = host.count_result(failed)
        outlier = self.config.outlier
        if outlier is None or consecutive < outlier.max_server_errors or host.ejected_until:
            return
        self.refresh_health()
        if not may_eject(outlier, self.stats.outlier_detection_ejections_active, len(self.hosts)):
            return  # maxEjectionPercent: it is ejected on a later error, once another host is back
        host.consecutive_5xx = 0
        host.ejections += 1
        host.ejected_until = self.clock.now() + ejection_seconds(outlier, host.ejections)
        self.stats.outlier_detection_ejections_enforced_total += 1
        log.info("cluster %s: host %s ejected for %ss (5xx in a row)", self.config.name, host.label,
                 ejection_seconds(outlier, host.ejections))  # fmt: skip
        self.refresh_health()

    def close_idle(self, older_than: float) -> None:
        for pool in self.pools.values():
            pool.close_idle(older_than)

    def shutdown(self) -> None:
        self.closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self.checker is not None:
            self.checker.stop()
        for pool in self.pools.values():
            pool.shutdown()


class ClusterManager:
    """Owns the runtime clusters. On a snapshot swap, clusters whose config did not change keep their hosts
    and pools; changed or removed ones stop pooling and finish their in-flight requests."""

    def __init__(
        self,
        store: StatsStore,
        codec_factory: Callable[[], ClientCodec],
        connector: Connector = LOOP_CONNECTOR,
        clock: Clock = LOOP_CLOCK,
        tls: TlsContexts | None = None,
        *,
        retry_budget: RetryBudget | None = None,
        egress_limits: ConnectionPoolLimits = APP_MESH_LIMITS,
    ) -> None:
        """`retry_budget`: every cluster's (None: retries bounded by their policies only); `egress_limits`:
        the circuit breakers of ALLOW_ALL passthrough clusters (the snapshot carries the others')."""
        self.store = store
        self.codec_factory = codec_factory
        self.connector = connector
        self.clock = clock
        self.tls = tls  # the TLS contexts of clusters that originate TLS (net/tls_contexts.py)
        self.retry_budget = retry_budget
        self.egress_limits = egress_limits
        self.clusters: dict[str, ClusterRuntime] = {}
        self._passthrough: dict[tuple[str, int, bool], ClusterRuntime] = {}
        self._passthrough_name = "cds_egress_passthrough"
        self._janitor: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ClusterManager clusters={len(self.clusters)} passthrough={len(self._passthrough)}>"

    def apply(self, snapshot: Snapshot) -> None:
        old = self.clusters
        new: dict[str, ClusterRuntime] = {}
        for name, config in snapshot.clusters.items():
            runtime = old.get(name)
            if runtime is not None and runtime.config == config:
                new[name] = runtime
                continue
            runtime = self._runtime(config, name)
            runtime.start()
            new[name] = runtime
        for name, runtime in old.items():
            if new.get(name) is not runtime:
                runtime.shutdown()
        self.clusters = new
        self._passthrough_name = f"cds_egress_{snapshot.identity.mesh_name}_passthrough"
        self.store.server.cluster_manager_active_clusters = len(new)
        if self._janitor is None:
            self._janitor = asyncio.get_running_loop().create_task(self._close_idle_connections())

    def _runtime(self, config: Cluster, stats_name: str) -> ClusterRuntime:
        stats = self.store.cluster(stats_name)
        return ClusterRuntime(
            config,
            stats,
            self.codec_factory,
            self._connector_for(config, stats),
            self.clock,
            retry_budget=self.retry_budget,
        )

    def _connector_for(self, config: Cluster, stats: ClusterStats) -> Connector:
        """The pool's connector: TLS originated on top of the plain one when the cluster's policy says so
        (the seam for TLS to upstreams, net/tls_connector.py)."""
        if config.tls is None:
            return self.connector
        source = (
            None
            if self.tls is None
            else self.tls.source(TlsKey.client(config.tls, cluster_alpn(config.protocol)))
        )
        if source is None:  # apply() without prepare(): a programming error, never a plaintext fallback
            raise RuntimeError(f"cluster {config.name}: no TLS context prepared")
        return TlsConnector(self.connector, source, stats.tls())

    def get(self, name: str) -> ClusterRuntime | None:
        return self.clusters.get(name)

    def passthrough(self, address: str, port: int, http2: bool = False) -> ClusterRuntime:
        """ALLOW_ALL egress to a destination outside the mesh: one host, the original destination.
        `http2`: the client spoke HTTP/2 (h2c), so the destination is reached over HTTP/2 too."""
        key = (address, port, http2)
        runtime = self._passthrough.get(key)
        if runtime is None:
            if len(self._passthrough) > 1024:  # bound the cache of one-off destinations
                for stale in list(self._passthrough.values())[:256]:
                    stale.shutdown()
                self._passthrough = dict(list(self._passthrough.items())[256:])
            config = Cluster(
                name=self._passthrough_name,
                discovery=DnsDiscovery(address, port)
                if not is_ip_literal(address)
                else StaticDiscovery(((address, port),)),
                protocol=ListenerProtocol.HTTP2 if http2 else ListenerProtocol.HTTP,
                virtual_node="",
                limits=self.egress_limits,
            )
            runtime = self._runtime(config, self._passthrough_name)
            runtime.start()
            self._passthrough[key] = runtime
        return runtime

    async def _close_idle_connections(self) -> None:
        # One sweep for all pools instead of a timer per connection (hot-path notes: no per-request timers).
        while True:
            await asyncio.sleep(5.0)
            for runtime in self.clusters.values():
                runtime.close_idle(older_than=60.0)
                runtime.refresh_health()  # gauges settle even on a cluster no request picks from
            for runtime in self._passthrough.values():
                runtime.close_idle(older_than=60.0)

    def shutdown(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            self._janitor = None
        for runtime in list(self.clusters.values()) + list(self._passthrough.values()):
            runtime.shutdown()
