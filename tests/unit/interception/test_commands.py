"""`meshproxy iptables ...`: settings from variables and flags, render output, and exit status 2 on bad input.

apply / clean / status change or read real iptables and are tested in network namespaces (tests/netns).
"""

from __future__ import annotations

import io

from meshproxy.interception.commands import run

ENV = {
    "APPMESH_IGNORE_UID": "1337",
    "APPMESH_ENVOY_INGRESS_PORT": "15000",
    "APPMESH_ENVOY_EGRESS_PORT": "15001",
    "APPMESH_APP_PORTS": "9080",
    "APPMESH_EGRESS_IGNORED_IP": "169.254.170.2,169.254.169.254,fd00::/8",
    "APPMESH_EGRESS_IGNORED_PORTS": "22",
}


def call(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(argv, env, out, err)
    return status, out.getvalue(), err.getvalue()


def test_render_from_route_manager_variables() -> None:
    status, out, err = call(["render"], ENV)
    assert (status, err) == (0, "")
    assert out.startswith("# ipv4: iptables-restore --noflush\n*nat\n")
    assert "-A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-ports 15000\n" in out
    assert "# ipv6" not in out  # IPv6 off by default
    assert "fd00" not in out


def test_render_ipv6_and_one_family_for_piping() -> None:
    env = {**ENV, "APPMESH_ENABLE_IPV6": "1"}
    status, out, _ = call(["render"], env)
    assert status == 0
    assert "# ipv6: ip6tables-restore --noflush\n" in out
    assert "-A APPMESH_EGRESS -d fd00::/8 -p tcp -j RETURN\n" in out
    status, out, _ = call(["render", "--family", "ipv6"], env)
    assert status == 0
    assert out.startswith("*nat\n") and out.endswith("COMMIT\n")
    assert "169.254" not in out


def test_ecs_property_names_as_flags_win_over_variables() -> None:
    argv = ["render", "--IgnoredUID", "2000", "--AppPorts=8080,8081", "--EgressIgnoredPorts", "22,443"]
    status, out, _ = call(argv, ENV)
    assert status == 0
    assert "--uid-owner 2000 " in out and "--uid-owner 1337" not in out
    assert "--dports 8080,8081 -j REDIRECT" in out
    assert "--dports 22,443 -j RETURN" in out


def test_flags_alone_are_enough() -> None:
    status, out, _ = call(["render", "--IgnoredGID", "1338", "--ProxyEgressPort", "15001"], {})
    assert status == 0
    assert "--gid-owner 1338 -j RETURN" in out and "APPMESH_INGRESS" not in out


def test_invalid_settings_exit_2_naming_each_source() -> None:
    env = {**ENV, "APPMESH_APP_PORTS": "9080,http"}
    status, out, err = call(["apply", "--ProxyEgressPort", "0"], env)
    assert status == 2
    assert out == ""
    assert "APPMESH_APP_PORTS: 'http' is not a TCP port" in err
    assert "--ProxyEgressPort: '0' is not a TCP port" in err


def test_missing_settings_exit_2() -> None:
    status, _, err = call(["apply"], {})
    assert status == 2
    assert "APPMESH_ENVOY_EGRESS_PORT / --ProxyEgressPort: the proxy egress port is required" in err
    assert "APPMESH_IGNORE_UID / --IgnoredUID or APPMESH_IGNORE_GID / --IgnoredGID" in err


def test_usage_errors_exit_2() -> None:
    for argv in ([], ["frobnicate"], ["render", "--NoSuchFlag", "1"], ["render", "--family", "ipx"]):
        status, _, err = call(argv, ENV)
        assert status == 2, argv
        assert err.startswith("meshproxy iptables: "), argv
        assert "usage: meshproxy iptables" in err


def test_help_goes_to_stdout_and_names_every_variable() -> None:
    status, out, _ = call(["--help"], {})
    assert status == 0
    for name in ("APPMESH_APP_PORTS", "APPMESH_IGNORE_UID", "--EgressIgnoredIPs", "apply", "clean", "status"):
        assert name in out
