"""Totals across worker processes (ENVOY_CONCURRENCY > 1): the admin endpoint reports one store.

Counters and histograms add up. Gauges add up too (active connections, active requests), except the ones
that describe the process as a whole (and the supervisor's own counters), which take the supervisor's value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import TypeVar

from meshproxy.telemetry.stats import Histogram, StatsStore, TlsStats, gauge_names

_PROCESS_GAUGES = frozenset(
    {"server_live", "server_state", "server_uptime", "server_concurrency", "control_plane_connected_state",
     "cluster_manager_active_clusters", "cluster_manager_warming_clusters",
     "listener_manager_total_listeners_active", "worker_restarts"}
)  # fmt: skip

S = TypeVar("S")


def _add_histogram(into: Histogram, other: Histogram) -> None:
    if len(into.counts) != len(other.counts):
        return
    for i, c in enumerate(other.counts):
        into.counts[i] += c
    into.count += other.count
    into.sum += other.sum
    if into.recent_limit or other.recent:
        room = max(0, max(into.recent_limit, other.recent_limit) - len(into.recent))
        into.recent.extend(other.recent[:room])
        into.recent_dropped += other.recent_dropped + max(0, len(other.recent) - room)


def _add_scope(into: S, other: S, skip: frozenset[str] = frozenset()) -> None:
    for f in fields(into):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        mine = getattr(into, f.name)
        theirs = getattr(other, f.name)
        if isinstance(mine, bool):
            continue
        if isinstance(mine, int):
            setattr(into, f.name, mine + theirs)
        elif isinstance(mine, Histogram):
            _add_histogram(mine, theirs)
        elif isinstance(mine, dict):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        elif isinstance(theirs, TlsStats):  # a nested `ssl` scope (listeners, clusters speaking TLS)
            if mine is None:
                mine = TlsStats()
                setattr(into, f.name, mine)
            _add_scope(mine, theirs)


def merge_stores(process: StatsStore, workers: Iterable[StatsStore]) -> StatsStore:
    """A new store: `process`'s process-wide gauges plus the sum of every worker's stats."""
    total = StatsStore()
    for name in _PROCESS_GAUGES:
        setattr(total.server, name, getattr(process.server, name))
    for worker in workers:
        _add_scope(total.server, worker.server, _PROCESS_GAUGES)
        for name, cluster in worker.clusters.items():
            _add_scope(total.cluster(name), cluster)
        for address, listener in worker.listeners.items():
            _add_scope(total.listener(address), listener)
        for prefix, http in worker.http.items():
            _add_scope(total.http_conn_manager(prefix), http)
        for prefix, tcp in worker.tcp.items():
            _add_scope(total.tcp_proxy(prefix), tcp)
        for (service, node), target in worker.targets.items():
            _add_scope(total.target(service, node), target)
        total.http_protocols.update(worker.http_protocols)
    return total


def retire(store: StatsStore) -> StatsStore:
    """A dead worker's last store, kept so totals never go backwards: its gauges no longer hold."""
    groups: list[Iterable[object]] = [
        [store.server],
        store.clusters.values(),
        store.listeners.values(),
        store.http.values(),
        store.tcp.values(),
        store.targets.values(),
    ]
    for group in groups:
        for scope in group:
            for name in gauge_names(type(scope)):
                setattr(scope, name, 0)
    for histogram in store.histograms():
        histogram.recent.clear()
    return store
