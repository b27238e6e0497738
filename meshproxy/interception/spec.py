"""What to intercept: the App Mesh interception settings, parsed and validated once into `InterceptionSpec`.

The same values arrive under two spellings (spec §2.1, §2.2):

* the route manager's environment variables (`APPMESH_APP_PORTS`, `APPMESH_IGNORE_UID`, ...), which the
  Kubernetes injector passes to the `proxyinit` init container and `envoy-networking.sh` reads on EC2;
* the ECS task definition's `proxyConfiguration` property names (`IgnoredUID`, `AppPorts`, ...), taken here as
  command-line flags. A flag wins over the variable.

Validation follows the `aws-appmesh` CNI plugin's `validateConfig` (spec §2.1): one of UID/GID is required,
the egress port is required, the ingress port and the app ports come together or not at all, ports are
positive integers, and ignored addresses parse as an IP or a CIDR. Every problem names the variable or flag
it came from.
Values are whitespace-trimmed and an empty value counts as unset (spec §1.1); a list that is a single empty
string is an empty list, as in the CNI plugin.

Decisions (differences from one or the other App Mesh component, which disagree with each other):

* Port 22 is not added implicitly. The CNI plugin does not add it; the route-manager script does (spec §7).
  Our deployment examples list it explicitly.
* 169.254.170.2 / 169.254.169.254 are not added implicitly (the ECS agent adds them before calling the CNI
  plugin; the route manager does not). Our deployment examples list them explicitly.
* Duplicate ports and addresses are dropped, keeping the first occurrence, so the rendered rules are stable.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_PORT = 65535
# A UID/GID is a 32-bit value; (uid_t)-1 is "no change" in the kernel and cannot own a socket.
MAX_ID = 2**32 - 2

# Go strconv.ParseBool, which the App Mesh agent and scripts use for boolean variables (spec §1.1).
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class Family(enum.StrEnum):
    """An IP family; each has its own nat table (iptables / ip6tables)."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"


class InterceptionError(Exception):
    """Base of the interception failure domain."""


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One invalid or missing setting. `source` is the variable or flag name the user wrote."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class InvalidSpec(InterceptionError):
    """The interception settings cannot be used. Carries every problem found, each naming its source."""

    def __init__(self, problems: tuple[SpecProblem, ...]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SpecField:
    """One interception setting and its two spellings."""

    key: str  # InterceptionSpec attribute
    env: str  # route-manager environment variable
    flag: str  # ECS proxyConfiguration property name, as a flag


# The order is the order of the ECS ProxyConfiguration table (spec §2.1); `--EnableIPv6` is ours: ECS has no
# IPv6 property (the ECS agent never enables IPv6 rules), the route manager reads APPMESH_ENABLE_IPV6.
FIELDS: tuple[SpecField, ...] = (
    SpecField("ignored_uid", "APPMESH_IGNORE_UID", "--IgnoredUID"),
    SpecField("ignored_gid", "APPMESH_IGNORE_GID", "--IgnoredGID"),
    SpecField("proxy_ingress_port", "APPMESH_ENVOY_INGRESS_PORT", "--ProxyIngressPort"),
    SpecField("proxy_egress_port", "APPMESH_ENVOY_EGRESS_PORT", "--ProxyEgressPort"),
    SpecField("app_ports", "APPMESH_APP_PORTS", "--AppPorts"),
    SpecField("egress_ignored_ips", "APPMESH_EGRESS_IGNORED_IP", "--EgressIgnoredIPs"),
    SpecField("egress_ignored_ports", "APPMESH_EGRESS_IGNORED_PORTS", "--EgressIgnoredPorts"),
    SpecField("enable_ipv6", "APPMESH_ENABLE_IPV6", "--EnableIPv6"),
)
FIELD_BY_KEY: Mapping[str, SpecField] = {f.key: f for f in FIELDS}


@dataclass(frozen=True, slots=True)
class SourcedValue:
    """A raw, trimmed, non-empty setting and the name of the variable or flag it came from."""

    text: str
    source: str


@dataclass(frozen=True, slots=True)
class InterceptionSpec:
    """Validated interception settings for one workload network namespace.

    Ports are TCP ports (1-65535). `proxy_ingress_port` is None exactly when `app_ports` is empty: then no
    ingress chain is installed. At least one of `ignored_uid` / `ignored_gid` is set: the proxy runs as that
    identity, and its own connections must not be redirected back into it (spec §2.3).
    """

    proxy_egress_port: int
    ignored_uid: int | None = None
    ignored_gid: int | None = None
    proxy_ingress_port: int | None = None
    app_ports: tuple[int, ...] = ()
    egress_ignored_ports: tuple[int, ...] = ()
    egress_ignored_ips: tuple[IPNetwork, ...] = ()
    enable_ipv6: bool = False

    def __post_init__(self) -> None:
        # Guards specs built in code; `parse_spec` reports the same rules with the user's variable names.
        problems: list[SpecProblem] = []
        if self.ignored_uid is None and self.ignored_gid is None:
            problems.append(SpecProblem("ignored_uid/ignored_gid", "one of them is required"))
        if (self.proxy_ingress_port is None) != (not self.app_ports):
            problems.append(SpecProblem("proxy_ingress_port/app_ports", "give both or neither"))
        ports = (
            self.proxy_egress_port,
            self.proxy_ingress_port or 1,
            *self.app_ports,
            *self.egress_ignored_ports,
        )
        problems += [
            SpecProblem("port", f"{p} is not a TCP port (1-{MAX_PORT})")
            for p in ports
            if not 1 <= p <= MAX_PORT
        ]
        if problems:
            raise InvalidSpec(tuple(problems))

    @property
    def families(self) -> tuple[Family, ...]:
        """The IP families that get rules: IPv4 always, IPv6 only when enabled (spec §2.1)."""
        return (Family.IPV4, Family.IPV6) if self.enable_ipv6 else (Family.IPV4,)

    def ignored_networks(self, family: Family) -> tuple[IPNetwork, ...]:
        version = 4 if family is Family.IPV4 else 6
        return tuple(n for n in self.egress_ignored_ips if n.version == version)


def collect_values(environ: Mapping[str, str], flags: Mapping[str, str | None]) -> dict[str, SourcedValue]:
    """Pick each setting from its flag (keyed by attribute name) or else its environment variable.

    Values are trimmed; an empty value counts as unset (`APPMESH_IGNORE_GID=` is the same as no variable).
    """
    values: dict[str, SourcedValue] = {}
    for f in FIELDS:
        flag_value = flags.get(f.key)
        if flag_value is not None and flag_value.strip():
            values[f.key] = SourcedValue(flag_value.strip(), f.flag)
            continue
        env_value = environ.get(f.env, "").strip()
        if env_value:
            values[f.key] = SourcedValue(env_value, f.env)
    return values


def parse_spec(values: Mapping[str, SourcedValue]) -> InterceptionSpec:
    """Validate raw settings into a spec. Raises `InvalidSpec` listing every problem by its source name."""
    problems: list[SpecProblem] = []

    def sourced(key: str) -> SourcedValue | None:
        return values.get(key)

    def one_int(key: str, low: int, high: int, what: str) -> int | None:
        raw = sourced(key)
        if raw is None:
            return None
        number = _to_int(raw.text)
        if number is None or not low <= number <= high:
            problems.append(SpecProblem(raw.source, f"{raw.text!r} is not {what}"))
            return None
        return number

    def port_list(key: str) -> tuple[int, ...]:
        raw = sourced(key)
        if raw is None:
            return ()
        ports: list[int] = []
        for item in _split_list(raw.text):
            number = _to_int(item)
            if number is None or not 1 <= number <= MAX_PORT:
                shown = repr(item) if item else "an empty item"
                problems.append(SpecProblem(raw.source, f"{shown} is not a TCP port (1-{MAX_PORT})"))
            elif number not in ports:
                ports.append(number)
        return tuple(ports)

    def network_list(key: str) -> tuple[IPNetwork, ...]:
        raw = sourced(key)
        if raw is None:
            return ()
        networks: list[IPNetwork] = []
        for item in _split_list(raw.text):
            try:
                # strict=False: like Go's net.ParseCIDR, host bits are allowed and iptables masks them.
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                shown = repr(item) if item else "an empty item"
                problems.append(SpecProblem(raw.source, f"{shown} is not an IP address or CIDR"))
                continue
            if network not in networks:
                networks.append(network)
        return tuple(networks)

    def boolean(key: str) -> bool:
        raw = sourced(key)
        if raw is None:
            return False
        if raw.text in _TRUE:
            return True
        if raw.text not in _FALSE:
            problems.append(SpecProblem(raw.source, f"{raw.text!r} is not a boolean (1/0, true/false)"))
        return False

    ignored_uid = one_int("ignored_uid", 0, MAX_ID, "a UID (a non-negative integer)")
    ignored_gid = one_int("ignored_gid", 0, MAX_ID, "a GID (a non-negative integer)")
    ingress = one_int("proxy_ingress_port", 1, MAX_PORT, f"a TCP port (1-{MAX_PORT})")
    egress = one_int("proxy_egress_port", 1, MAX_PORT, f"a TCP port (1-{MAX_PORT})")
    app_ports = port_list("app_ports")
    ignored_ports = port_list("egress_ignored_ports")
    ignored_ips = network_list("egress_ignored_ips")
    enable_ipv6 = boolean("enable_ipv6")

    def label(key: str) -> str:
        raw = sourced(key)
        f = FIELD_BY_KEY[key]
        return raw.source if raw is not None else f"{f.env} / {f.flag}"

    if sourced("proxy_egress_port") is None:
        problems.append(SpecProblem(label("proxy_egress_port"), "the proxy egress port is required"))
    # Cross-field rules look at what was given, so one mistake gives one message.
    if sourced("ignored_uid") is None and sourced("ignored_gid") is None:
        problems.append(
            SpecProblem(
                f"{label('ignored_uid')} or {label('ignored_gid')}",
                "one of the ignored UID or GID is required (the identity the proxy runs as, whose own "
                "connections must not be redirected)",
            )
        )
    ingress_given = sourced("proxy_ingress_port") is not None
    apps_given = sourced("app_ports") is not None
    if apps_given and not ingress_given:
        problems.append(
            SpecProblem(label("proxy_ingress_port"), f"required when {label('app_ports')} is set")
        )
    if ingress_given and not apps_given:
        problems.append(
            SpecProblem(label("app_ports"), f"required when {label('proxy_ingress_port')} is set")
        )
    if problems:
        raise InvalidSpec(tuple(problems))
    assert egress is not None  # a missing or invalid egress port is a problem above
    return InterceptionSpec(
        proxy_egress_port=egress,
        ignored_uid=ignored_uid,
        ignored_gid=ignored_gid,
        proxy_ingress_port=ingress,
        app_ports=app_ports,
        egress_ignored_ports=ignored_ports,
        egress_ignored_ips=ignored_ips,
        enable_ipv6=enable_ipv6,
    )


def _split_list(text: str) -> list[str]:
    """A comma list; a single empty string is the empty list (CNI plugin), other empty items are kept."""
    if not text.strip():
        return []
    return [item.strip() for item in text.split(",")]


def _to_int(text: str) -> int | None:
    # Decimal digits only: int() would also accept "+5", " 5", "5_000" and non-ASCII digits.
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)
