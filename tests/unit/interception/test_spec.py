"""Interception settings: the CNI plugin's validation rules, with errors that name the variable or flag."""

from __future__ import annotations

import ipaddress

import pytest

from meshproxy.interception.spec import (
    Family,
    InterceptionSpec,
    InvalidSpec,
    collect_values,
    parse_spec,
)

ECS_DEFAULTS = {
    "APPMESH_IGNORE_UID": "1337",
    "APPMESH_ENVOY_INGRESS_PORT": "15000",
    "APPMESH_ENVOY_EGRESS_PORT": "15001",
    "APPMESH_APP_PORTS": "9080",
    "APPMESH_EGRESS_IGNORED_IP": "169.254.170.2,169.254.169.254",
    "APPMESH_EGRESS_IGNORED_PORTS": "22",
}


def spec_from(env: dict[str, str], **flags: str) -> InterceptionSpec:
    return parse_spec(collect_values(env, flags))


def problems(env: dict[str, str], **flags: str) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        spec_from(env, **flags)
    return [str(p) for p in info.value.problems]


def test_route_manager_variables_parse() -> None:
    spec = spec_from(ECS_DEFAULTS)
    assert spec == InterceptionSpec(
        proxy_egress_port=15001,
        ignored_uid=1337,
        proxy_ingress_port=15000,
        app_ports=(9080,),
        egress_ignored_ports=(22,),
        egress_ignored_ips=(
            ipaddress.ip_network("169.254.170.2/32"),
            ipaddress.ip_network("169.254.169.254/32"),
        ),
    )
    assert spec.families == (Family.IPV4,)


def test_flags_win_over_variables_and_name_themselves_in_errors() -> None:
    spec = spec_from(ECS_DEFAULTS, ignored_uid="1500", app_ports="8080,8081")
    assert spec.ignored_uid == 1500
    assert spec.app_ports == (8080, 8081)
    assert problems(ECS_DEFAULTS, proxy_egress_port="x") == [
        "--ProxyEgressPort: 'x' is not a TCP port (1-65535)"
    ]


def test_values_are_trimmed_and_empty_means_unset() -> None:
    env = {**ECS_DEFAULTS, "APPMESH_IGNORE_GID": "  ", "APPMESH_APP_PORTS": " 9080 , 9081 "}
    spec = spec_from(env)
    assert spec.ignored_gid is None
    assert spec.app_ports == (9080, 9081)
    # an empty flag does not hide the variable
    assert spec_from(ECS_DEFAULTS, ignored_uid="").ignored_uid == 1337


def test_one_of_uid_gid_is_required() -> None:
    env = {k: v for k, v in ECS_DEFAULTS.items() if k != "APPMESH_IGNORE_UID"}
    (message,) = problems(env)
    assert "APPMESH_IGNORE_UID / --IgnoredUID or APPMESH_IGNORE_GID / --IgnoredGID" in message
    assert spec_from({**env, "APPMESH_IGNORE_GID": "1338"}).ignored_gid == 1338


def test_egress_port_is_required() -> None:
    env = {k: v for k, v in ECS_DEFAULTS.items() if k != "APPMESH_ENVOY_EGRESS_PORT"}
    assert problems(env) == [
        "APPMESH_ENVOY_EGRESS_PORT / --ProxyEgressPort: the proxy egress port is required"
    ]


def test_ingress_port_and_app_ports_come_together() -> None:
    no_apps = {k: v for k, v in ECS_DEFAULTS.items() if k != "APPMESH_APP_PORTS"}
    assert problems(no_apps) == [
        "APPMESH_APP_PORTS / --AppPorts: required when APPMESH_ENVOY_INGRESS_PORT is set"
    ]
    no_ingress = {k: v for k, v in ECS_DEFAULTS.items() if k != "APPMESH_ENVOY_INGRESS_PORT"}
    assert problems(no_ingress) == [
        "APPMESH_ENVOY_INGRESS_PORT / --ProxyIngressPort: required when APPMESH_APP_PORTS is set"
    ]
    neither = {k: v for k, v in no_apps.items() if k != "APPMESH_ENVOY_INGRESS_PORT"}
    spec = spec_from(neither)
    assert spec.proxy_ingress_port is None and spec.app_ports == ()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("APPMESH_APP_PORTS", "80,0", "APPMESH_APP_PORTS: '0' is not a TCP port (1-65535)"),
        ("APPMESH_APP_PORTS", "80,,81", "APPMESH_APP_PORTS: an empty item is not a TCP port (1-65535)"),
        (
            "APPMESH_EGRESS_IGNORED_PORTS",
            "-1",
            "APPMESH_EGRESS_IGNORED_PORTS: '-1' is not a TCP port (1-65535)",
        ),
        ("APPMESH_EGRESS_IGNORED_PORTS", "65536", "'65536' is not a TCP port"),
        ("APPMESH_EGRESS_IGNORED_PORTS", "22:80", "'22:80' is not a TCP port"),
        ("APPMESH_ENVOY_INGRESS_PORT", "1e3", "APPMESH_ENVOY_INGRESS_PORT: '1e3' is not a TCP port"),
        ("APPMESH_IGNORE_UID", "root", "APPMESH_IGNORE_UID: 'root' is not a UID"),
        ("APPMESH_IGNORE_UID", "+1337", "'+1337' is not a UID"),
        ("APPMESH_EGRESS_IGNORED_IP", "10.0.0.0/33", "APPMESH_EGRESS_IGNORED_IP: '10.0.0.0/33' is not an IP"),
        ("APPMESH_EGRESS_IGNORED_IP", "example.com", "'example.com' is not an IP address or CIDR"),
        ("APPMESH_ENABLE_IPV6", "yes", "APPMESH_ENABLE_IPV6: 'yes' is not a boolean"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str, expected: str) -> None:
    (message,) = problems({**ECS_DEFAULTS, variable: value})
    assert expected in message


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"APPMESH_APP_PORTS": "x", "APPMESH_EGRESS_IGNORED_IP": "nope"})
    assert len(found) == 5  # bad app port, bad IP, no egress port, no UID/GID, no ingress port
    assert any(m.startswith("APPMESH_APP_PORTS:") for m in found)
    assert any(m.startswith("APPMESH_EGRESS_IGNORED_IP:") for m in found)


def test_addresses_and_cidrs_split_by_family_and_duplicates_drop() -> None:
    env = {
        **ECS_DEFAULTS,
        "APPMESH_EGRESS_IGNORED_IP": "10.1.2.3/8,fd00::1,10.0.0.0/8,169.254.169.254",
        "APPMESH_EGRESS_IGNORED_PORTS": "22,443,22",
        "APPMESH_ENABLE_IPV6": "true",
    }
    spec = spec_from(env)
    assert [str(n) for n in spec.ignored_networks(Family.IPV4)] == ["10.0.0.0/8", "169.254.169.254/32"]
    assert [str(n) for n in spec.ignored_networks(Family.IPV6)] == ["fd00::1/128"]
    assert spec.egress_ignored_ports == (22, 443)
    assert spec.families == (Family.IPV4, Family.IPV6)


@pytest.mark.parametrize(
    ("value", "enabled"), [("1", True), ("TRUE", True), ("t", True), ("0", False), ("F", False)]
)
def test_ipv6_flag_uses_go_bool_parsing(value: str, enabled: bool) -> None:
    assert spec_from({**ECS_DEFAULTS, "APPMESH_ENABLE_IPV6": value}).enable_ipv6 is enabled


def test_spec_built_in_code_is_checked_too() -> None:
    with pytest.raises(InvalidSpec):
        InterceptionSpec(proxy_egress_port=15001)  # no UID/GID
    with pytest.raises(InvalidSpec):
        InterceptionSpec(proxy_egress_port=15001, ignored_uid=1337, app_ports=(80,))  # no ingress port
    with pytest.raises(InvalidSpec):
        InterceptionSpec(proxy_egress_port=70000, ignored_uid=1337)
