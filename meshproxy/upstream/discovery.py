"""Service discovery for a cluster's hosts: DNS refreshed on the record's TTL, and AWS Cloud Map.

A virtual node is found by `serviceDiscovery.dns` or `serviceDiscovery.awsCloudMap` (spec §4.2).
`discover(discovery, on_hosts, on_error)` runs for the life of a cluster: it looks the node up, hands the
addresses to `on_hosts`, waits as long as the answer stays valid, and looks again. A failed lookup goes to
`on_error` and the cluster keeps its last hosts (Envoy keeps serving the last good answer too).

DNS. Addresses come from the system resolver (`getaddrinfo`), so /etc/hosts, nsswitch, search domains and
the RFC 6724 address order behave as for every other process in the task or pod. `getaddrinfo` reports no
TTL, so the record's TTL is read with a DNS query of our own (dnspython, when installed) and the next
lookup is due when it expires, within [MIN_REFRESH_S, MAX_DNS_REFRESH_S]. A name /etc/hosts answers has no
TTL and is not sent to a DNS server; it, a failed TTL query, or a missing dnspython falls back to Envoy's
fixed `dns_refresh_rate` (DNS_REFRESH_S). `responseType` LOADBALANCER keeps one address (a LOGICAL_DNS
cluster), ENDPOINTS keeps them all, load balanced (a STRICT_DNS cluster); `ipPreference` filters and
orders them (spec §4.1).

Cloud Map. `DiscoverInstances` (boto3's servicediscovery client; needs `pip install 'meshproxy[export]'`)
with the node's attributes as query parameters (all must match), healthy instances or else all of them,
run off the event loop and repeated every CLOUD_MAP_REFRESH_S. Each instance gives one endpoint: its
AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 attribute as `ipPreference` picks (spec §4.1 table), on the virtual
node's listener port. AWS_INSTANCE_PORT is not used: App Mesh routes to a node on its listener port, and a
node with several listeners has one cluster per port while an instance registers one port.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshproxy.config.snapshot import CloudMapDiscovery, DnsDiscovery

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.message

log = logging.getLogger("meshproxy.upstream")

DNS_REFRESH_S = 5.0  # Envoy's dns_refresh_rate default: the refresh when no TTL is known, and after a failure
MIN_REFRESH_S = 1.0  # a TTL of 1 s or less still waits this long (no query storms on TTL-0 records)
MAX_DNS_REFRESH_S = 300.0  # a long TTL is looked at again at least this often
DNS_TTL_QUERY_TIMEOUT_S = 2.0
CLOUD_MAP_REFRESH_S = 5.0
CLOUD_MAP_MAX_RESULTS = 1000  # DiscoverInstances' largest page; the API has no next page
HOSTS_FILE = "/etc/hosts"

Address = tuple[str, int]


class DiscoveryError(Exception):
    """A lookup failed (no such name, no usable address, API error). The cluster keeps its last hosts."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a lookup found and how long it stays valid (seconds until the next lookup)."""

    addresses: tuple[Address, ...]
    refresh_s: float


# ------------------------------------------------------------------------------------------------ ordering


def order_addresses(infos: Iterable[tuple[int, str]], preference: str | None) -> list[str]:
    """Resolved (family, address) pairs in the order App Mesh's ipPreference asks for (spec §4.1).

    Duplicates (getaddrinfo repeats an address per socket type) are dropped. Unset keeps the resolver's own
    order: getaddrinfo already puts the family the host can reach first (RFC 6724), where a blanket
    "IPv6 first" would pick an unreachable address on an IPv4-only task.
    """
    infos = list(infos)
    v4 = [a for f, a in infos if f == socket.AF_INET]
    v6 = [a for f, a in infos if f == socket.AF_INET6]
    if preference == "IPv4_ONLY":
        ordered = v4
    elif preference == "IPv6_ONLY":
        ordered = v6
    elif preference == "IPv6_PREFERRED":
        ordered = v6 + v4
    elif preference == "IPv4_PREFERRED":
        ordered = v4 + v6
    else:
        ordered = [a for _, a in infos]
    return list(dict.fromkeys(ordered))


def select_dns_addresses(infos: Iterable[tuple[int, str]], discovery: DnsDiscovery) -> list[Address]:
    """The hosts a DNS answer gives the cluster: ordered by ipPreference; LOADBALANCER keeps the first."""
    addresses = order_addresses(infos, discovery.ip_preference)
    if discovery.response_type != "ENDPOINTS":
        addresses = addresses[:1]  # LOADBALANCER: one address, like a LOGICAL_DNS cluster
    return [(address, discovery.port) for address in addresses]


def refresh_after(ttl_s: float | None) -> float:
    """Seconds until the next DNS lookup for an answer with this TTL (None: no TTL known)."""
    if ttl_s is None or ttl_s <= 0:
        return DNS_REFRESH_S
    return max(MIN_REFRESH_S, min(float(ttl_s), MAX_DNS_REFRESH_S))


def _ip(text: str, version: int) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(address) if address.version == version else None


def cloud_map_addresses(
    instances: Iterable[Mapping[str, str]], port: int, preference: str | None
) -> list[Address]:
    """One endpoint per Cloud Map instance (its attributes), by ipPreference (spec §4.1 table).

    Unset and IPv4_PREFERRED: IPv4 if the instance has one, else IPv6. IPv6_PREFERRED: the other way round.
    IPv4_ONLY / IPv6_ONLY: that family or nothing. Malformed addresses are skipped; order is kept.
    """
    endpoints: dict[Address, None] = {}
    for attributes in instances:
        v4 = _ip(attributes.get("AWS_INSTANCE_IPV4", ""), 4)
        v6 = _ip(attributes.get("AWS_INSTANCE_IPV6", ""), 6)
        if preference == "IPv4_ONLY":
            chosen = v4
        elif preference == "IPv6_ONLY":
            chosen = v6
        elif preference == "IPv6_PREFERRED":
            chosen = v6 or v4
        else:
            chosen = v4 or v6
        if chosen is not None:
            endpoints.setdefault((chosen, port), None)
    return list(endpoints)


# ------------------------------------------------------------------------------------------------ DNS TTL


def hosts_file_names(text: str) -> frozenset[str]:
    """Every name an /etc/hosts text defines (lower case, no trailing dot)."""
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(name.lower().rstrip(".") for name in fields[1:])
    return frozenset(names)


class HostsFile:
    """/etc/hosts names, re-read when the file changes (it is tiny; stat per lookup is cheap)."""

    def __init__(self, path: str = HOSTS_FILE) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._names: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"<HostsFile {self.path} names={len(self._names)}>"

    def defines(self, hostname: str) -> bool:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size)
            if key != self._key:
                with open(self.path, encoding="utf-8", errors="replace") as handle:
                    self._names = hosts_file_names(handle.read())
                self._key = key
        except OSError:
            self._key, self._names = None, frozenset()
        return hostname.lower().rstrip(".") in self._names


def answer_ttl(response: dns.message.Message) -> int | None:
    """The smallest TTL in a response's answer section (the CNAME chain included), None if it is empty.

    The whole chain counts: the answer is only as fresh as its shortest-lived link (Envoy once used the
    last record's TTL and missed CNAME changes, envoyproxy/envoy#28925).
    """
    ttls = [rrset.ttl for rrset in response.answer]
    return min(ttls) if ttls else None


class DnsTtlResolver:
    """Reads a name's record TTL with dnspython (None when it cannot: not installed, no answer, timeout).

    `resolver` is a configured `dns.asyncresolver.Resolver` (tests point one at a loopback server); by
    default one is built from /etc/resolv.conf on first use. Names in /etc/hosts are never queried.
    """

    def __init__(self, resolver: dns.asyncresolver.Resolver | None = None, hosts: HostsFile | None = None):
        self._resolver = resolver
        self._hosts = hosts if hosts is not None else HostsFile()
        self._unavailable = False

    def __repr__(self) -> str:
        return f"<DnsTtlResolver unavailable={self._unavailable}>"

    def _get_resolver(self) -> dns.asyncresolver.Resolver | None:
        if self._resolver is None and not self._unavailable:
            try:
                import dns.asyncresolver

                self._resolver = dns.asyncresolver.Resolver()
            except ImportError:
                self._unavailable = True
            except Exception as exc:  # dnspython raises its own errors for an unusable resolv.conf
                log.info("DNS TTLs unavailable (%s); refreshing every %s s", exc, DNS_REFRESH_S)
                self._unavailable = True
        return self._resolver

    async def ttl(self, hostname: str, families: Iterable[int]) -> float | None:
        if self._hosts.defines(hostname):
            return None
        resolver = self._get_resolver()
        if resolver is None:
            return None
        import dns.exception

        rdtypes = sorted({"AAAA" if family == socket.AF_INET6 else "A" for family in families})
        ttls: list[int] = []
        for rdtype in rdtypes:
            try:
                answer = await resolver.resolve(
                    hostname,
                    rdtype,
                    search=True,
                    raise_on_no_answer=False,
                    lifetime=DNS_TTL_QUERY_TIMEOUT_S,
                )
            except (dns.exception.DNSException, OSError):
                continue
            ttl = answer_ttl(answer.response)
            if ttl is not None:
                ttls.append(ttl)
        return float(min(ttls)) if ttls else None


_DEFAULT_TTL_RESOLVER: DnsTtlResolver | None = None


def default_ttl_resolver() -> DnsTtlResolver:
    global _DEFAULT_TTL_RESOLVER
    if _DEFAULT_TTL_RESOLVER is None:
        _DEFAULT_TTL_RESOLVER = DnsTtlResolver()
    return _DEFAULT_TTL_RESOLVER


async def resolve_dns(discovery: DnsDiscovery, ttl_resolver: DnsTtlResolver | None = None) -> Resolution:
    """Look a DNS-discovered node up once. Raises DiscoveryError."""
    family = {"IPv4_ONLY": socket.AF_INET, "IPv6_ONLY": socket.AF_INET6}.get(
        discovery.ip_preference or "", socket.AF_UNSPEC
    )
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            discovery.hostname,
            discovery.port,
            family=family,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
        )
    except OSError as exc:
        raise DiscoveryError(f"{discovery.hostname}: {exc}") from None
    pairs = [(int(info[0]), str(info[4][0])) for info in infos]
    addresses = select_dns_addresses(pairs, discovery)
    if not addresses:
        raise DiscoveryError(f"{discovery.hostname}: no usable address for {discovery.ip_preference}")
    chosen = {address for address, _ in addresses}
    families = {family for family, address in pairs if address in chosen}
    resolver = ttl_resolver if ttl_resolver is not None else default_ttl_resolver()
    ttl = await resolver.ttl(discovery.hostname, families)
    return Resolution(tuple(addresses), refresh_after(ttl))


# ------------------------------------------------------------------------------------------------ Cloud Map


class CloudMapClient:
    """DiscoverInstances through one boto3 servicediscovery client per process; blocking (run it in a thread).

    Region and credentials come from the AWS chain plus AWS_REGION (App Mesh's variable, spec §1.5). With a
    custom endpoint (AWS_ENDPOINT_URL_SERVICEDISCOVERY or AWS_ENDPOINT_URL: a VPC endpoint, a test server)
    requests go to exactly that URL: botocore's `data-` host prefix for DiscoverInstances is not added.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CloudMapClient ready={self._client is not None}>"

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    boto3 = importlib.import_module("boto3")
                    config_module = importlib.import_module("botocore.config")
                except ImportError:
                    raise DiscoveryError(
                        "AWS Cloud Map discovery needs boto3, which is not installed: "
                        "pip install 'meshproxy[export]'"
                    ) from None
                custom = any(
                    self._environ.get(name, "").strip()
                    for name in ("AWS_ENDPOINT_URL_SERVICEDISCOVERY", "AWS_ENDPOINT_URL")
                )
                config = config_module.Config(
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=2,
                    read_timeout=5,
                    inject_host_prefix=not custom,
                )
                region = self._environ.get("AWS_REGION", "").strip() or None
                try:
                    session = boto3.session.Session(region_name=region)
                    self._client = session.client("servicediscovery", config=config)
                except Exception as exc:  # botocore: NoRegionError, bad endpoint URL, ...
                    raise DiscoveryError(f"AWS Cloud Map client: {exc}") from None
            return self._client

    def discover(
        self, namespace: str, service: str, attributes: Sequence[tuple[str, str]]
    ) -> list[dict[str, str]]:
        """Each matching instance's attributes: healthy instances, or all of them if none is healthy."""
        client = self._get()
        exceptions = importlib.import_module("botocore.exceptions")
        request: dict[str, Any] = {
            "NamespaceName": namespace,
            "ServiceName": service,
            "HealthStatus": "HEALTHY_OR_ELSE_ALL",
            "MaxResults": CLOUD_MAP_MAX_RESULTS,
        }
        if attributes:
            request["QueryParameters"] = dict(attributes)
        try:
            response = client.discover_instances(**request)
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise DiscoveryError(
                f"DiscoverInstances {namespace}/{service}: {error.get('Code')}: {error.get('Message')}"
            ) from None
        except exceptions.BotoCoreError as exc:
            raise DiscoveryError(f"DiscoverInstances {namespace}/{service}: {exc}") from None
        return [dict(instance.get("Attributes", {})) for instance in response.get("Instances", [])]


_DEFAULT_CLOUD_MAP: CloudMapClient | None = None


def default_cloud_map_client() -> CloudMapClient:
    global _DEFAULT_CLOUD_MAP
    if _DEFAULT_CLOUD_MAP is None:
        _DEFAULT_CLOUD_MAP = CloudMapClient()
    return _DEFAULT_CLOUD_MAP


async def resolve_cloud_map(
    discovery: CloudMapDiscovery,
    client: CloudMapClient | None = None,
    refresh_s: float = CLOUD_MAP_REFRESH_S,
) -> Resolution:
    """Discover a Cloud Map node's instances once, off the event loop. Raises DiscoveryError.

    No matching instance is an answer, not an error: the cluster then has no hosts (503 UH), as Envoy
    does with an empty EDS assignment.
    """
    cloud_map = client if client is not None else default_cloud_map_client()
    instances = await asyncio.to_thread(
        cloud_map.discover, discovery.namespace, discovery.service, discovery.attributes
    )
    addresses = cloud_map_addresses(instances, discovery.port, discovery.ip_preference)
    return Resolution(tuple(addresses), refresh_s)


# ------------------------------------------------------------------------------------------------ the loop


async def keep_discovering(
    resolve: Callable[[], Awaitable[Resolution]],
    on_hosts: Callable[[list[Address]], None],
    on_error: Callable[[str], None],
    *,
    failure_refresh_s: float = DNS_REFRESH_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Look up, hand over, wait as long as the answer is valid; again until cancelled.

    A failure goes to `on_error` (the last hosts stay) and is retried after `failure_refresh_s`.
    `sleep` is a seam for tests.
    """
    while True:
        try:
            resolution = await resolve()
        except DiscoveryError as exc:
            on_error(str(exc))
            await sleep(failure_refresh_s)
            continue
        except Exception as exc:  # a bug or a library surprise must not end discovery for good
            log.exception("service discovery failed unexpectedly")
            on_error(f"unexpected {type(exc).__name__}: {exc}")
            await sleep(failure_refresh_s)
            continue
        on_hosts(list(resolution.addresses))
        await sleep(resolution.refresh_s)


async def discover(
    discovery: DnsDiscovery | CloudMapDiscovery,
    on_hosts: Callable[[list[Address]], None],
    on_error: Callable[[str], None],
) -> None:
    """Keep a cluster's hosts current for its discovery config (runs until cancelled)."""
    resolve: Callable[[], Awaitable[Resolution]]
    if isinstance(discovery, CloudMapDiscovery):
        resolve = lambda: resolve_cloud_map(discovery)  # noqa: E731
        failure_refresh_s = CLOUD_MAP_REFRESH_S
    else:
        resolve = lambda: resolve_dns(discovery)  # noqa: E731
        failure_refresh_s = DNS_REFRESH_S
    await keep_discovering(resolve, on_hosts, on_error, failure_refresh_s=failure_refresh_s)
