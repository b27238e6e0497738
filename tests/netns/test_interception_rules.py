"""The interception rules in a real network namespace: apply / clean / status, SO_ORIGINAL_DST, the guard.

Run (as root): .venv/bin/pytest tests/netns -q
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .conftest import (
    APP_UID,
    MESHPROXY,
    NOWHERE_V4,
    PEER_V4,
    PEER_V4_ALT,
    PEER_V6,
    POD_V4,
    POD_V6,
    PROXY_UID,
    REPO_ROOT,
    PodPair,
    clean_environ,
    meshproxy_iptables,
    normalise_save,
    pod_pair_context,
)

INGRESS_PORT, EGRESS_PORT = 15000, 15001
APP_PORT, OTHER_APP_PORT = 9080, 9091
UPSTREAM_PORT, IGNORED_PORT = 8080, 8081

SETTINGS = {
    "APPMESH_IGNORE_UID": str(PROXY_UID),
    "APPMESH_ENVOY_INGRESS_PORT": str(INGRESS_PORT),
    "APPMESH_ENVOY_EGRESS_PORT": str(EGRESS_PORT),
    "APPMESH_APP_PORTS": str(APP_PORT),
    "APPMESH_EGRESS_IGNORED_IP": f"{PEER_V4_ALT},169.254.169.254",
    "APPMESH_EGRESS_IGNORED_PORTS": f"22,{IGNORED_PORT}",
}
SETTINGS_V6 = {
    **SETTINGS,
    "APPMESH_ENABLE_IPV6": "1",
    "APPMESH_EGRESS_IGNORED_IP": f"{PEER_V4_ALT},fd00:250:2::/64",
}
FOREIGN_RULES = (
    "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -d 10.99.0.0/16 -j RETURN\n-A OUTPUT -d 10.98.0.0/16 -j FOREIGN\n"
    "-A PREROUTING -p udp --dport 53 -j REDIRECT --to-ports 5353\nCOMMIT\n"
)


def rendered_rules(settings: dict[str, str], family: str = "ipv4") -> list[str]:
    """The `-A` lines `meshproxy iptables render` prints for these settings."""
    done = subprocess.run(
        [*MESHPROXY, "iptables", "render", "--family", family],
        env=clean_environ(settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line.startswith("-A ")]


# --- (a) apply / clean / status ---------------------------------------------------------------------------


def test_apply_is_idempotent_and_clean_restores_the_nat_table(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    before = normalise_save(pod.nat_save())

    applied = meshproxy_iptables(pod, "apply", SETTINGS)
    assert applied.returncode == 0, applied.stderr
    installed = pod.nat_save()
    for rule in rendered_rules(SETTINGS):
        assert rule in installed.splitlines(), f"{rule!r} not in\n{installed}"
    assert ":APPMESH_INGRESS - [0:0]" in installed and ":APPMESH_EGRESS - [0:0]" in installed

    again = meshproxy_iptables(pod, "apply", SETTINGS)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    assert normalise_save(pod.nat_save()) == normalise_save(installed)

    status = meshproxy_iptables(pod, "status", SETTINGS)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ipv4: matches" in status.stdout

    cleaned = meshproxy_iptables(pod, "clean", {})
    assert cleaned.returncode == 0, cleaned.stderr
    assert normalise_save(pod.nat_save()) == before
    assert meshproxy_iptables(pod, "status", {}).returncode == 3
    # clean is idempotent too
    assert meshproxy_iptables(pod, "clean", {}).returncode == 0
    assert normalise_save(pod.nat_save()) == before


def test_clean_leaves_every_other_rule_and_the_whole_save_output_as_it_was(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    pod.run(["iptables-restore", "--noflush"], stdin=FOREIGN_RULES)
    pod.run(
        ["ip6tables-restore", "--noflush"],
        stdin=FOREIGN_RULES.replace("10.99.0.0/16", "fd99::/16").replace("10.98.0.0/16", "fd98::/16"),
    )
    before = normalise_save(pod.full_save())

    assert meshproxy_iptables(pod, "apply", SETTINGS_V6).returncode == 0
    during = pod.full_save()
    assert "-A OUTPUT -d 10.98.0.0/16 -j FOREIGN" in during
    assert "-A APPMESH_EGRESS -d fd00:250:2::/64 -p tcp -j RETURN" in during
    # the jumps are appended after the rules already there (spec §2.1: -A at the end of PREROUTING / OUTPUT)
    output = [line for line in during.splitlines() if line.startswith("-A OUTPUT")]
    assert output[0] == "-A OUTPUT -d 10.98.0.0/16 -j FOREIGN"

    assert meshproxy_iptables(pod, "clean", {}).returncode == 0
    assert normalise_save(pod.full_save()) == before


def test_reapply_with_changed_settings_replaces_the_rules_without_duplicating_jumps(
    pod_pair: PodPair,
) -> None:
    pod = pod_pair.pod
    assert meshproxy_iptables(pod, "apply", SETTINGS).returncode == 0
    pod.run(["iptables", "-t", "nat", "-A", "OUTPUT", "-d", "10.97.0.0/16", "-j", "RETURN"])  # appended later
    changed = {**SETTINGS, "APPMESH_APP_PORTS": f"{APP_PORT},{OTHER_APP_PORT}"}
    assert meshproxy_iptables(pod, "status", changed).returncode == 4  # differs

    assert meshproxy_iptables(pod, "apply", changed).returncode == 0
    saved = pod.nat_save().splitlines()
    wanted = f"--dports {APP_PORT},{OTHER_APP_PORT} -j REDIRECT --to-ports 15000"
    assert f"-A APPMESH_INGRESS -p tcp -m multiport {wanted}" in saved
    assert sum(1 for line in saved if line.endswith("-j APPMESH_EGRESS")) == 1
    assert sum(1 for line in saved if line.endswith("-j APPMESH_INGRESS")) == 1
    output = [line for line in saved if line.startswith("-A OUTPUT")]
    assert output[-1] == "-A OUTPUT -d 10.97.0.0/16 -j RETURN"  # our jump kept its place

    egress_only = {
        k: v for k, v in changed.items() if k not in ("APPMESH_APP_PORTS", "APPMESH_ENVOY_INGRESS_PORT")
    }
    assert meshproxy_iptables(pod, "apply", egress_only).returncode == 0
    saved_text = pod.nat_save()
    assert "APPMESH_INGRESS" not in saved_text
    assert meshproxy_iptables(pod, "status", egress_only).returncode == 0


def test_many_ports_are_split_across_multiport_rules_in_the_kernel(pod_pair: PodPair) -> None:
    many = {**SETTINGS, "APPMESH_APP_PORTS": ",".join(str(p) for p in range(9000, 9020))}
    done = meshproxy_iptables(pod_pair.pod, "apply", many)
    assert done.returncode == 0, done.stderr
    ingress = [line for line in pod_pair.pod.nat_save().splitlines() if line.startswith("-A APPMESH_INGRESS")]
    assert len(ingress) == 2
    assert ingress[1].startswith("-A APPMESH_INGRESS -p tcp -m multiport --dports 9015,9016,9017,9018,9019 ")


def test_shell_entry_points_with_ecs_flag_names(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    before = normalise_save(pod.nat_save())
    flags = [
        "--IgnoredUID", str(PROXY_UID), "--ProxyIngressPort", "15000", "--ProxyEgressPort", "15001",
        "--AppPorts", str(APP_PORT), "--EgressIgnoredIPs", "169.254.170.2,169.254.169.254",
        "--EgressIgnoredPorts", "22",
    ]  # fmt: skip
    scripts = REPO_ROOT / "iptables"
    env = {"MESHPROXY": " ".join(MESHPROXY)}
    done = pod.run([str(scripts / "apply"), *flags], env=env)
    assert "ipv4:" in done.stdout
    saved = pod.nat_save()
    assert "-A APPMESH_EGRESS -d 169.254.170.2/32 -p tcp -j RETURN" in saved
    assert pod.run([str(scripts / "status"), *flags], env=env).returncode == 0
    pod.run([str(scripts / "clean")], env=env)
    assert normalise_save(pod.nat_save()) == before
    assert pod.run([str(scripts / "status")], env=env, check=False).returncode == 3


def test_invalid_settings_change_nothing_and_exit_2(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    before = normalise_save(pod.nat_save())
    done = meshproxy_iptables(pod, "apply", {**SETTINGS, "APPMESH_EGRESS_IGNORED_IP": "10.0.0.300"})
    assert done.returncode == 2
    assert "APPMESH_EGRESS_IGNORED_IP: '10.0.0.300' is not an IP address or CIDR" in done.stderr
    assert normalise_save(pod.nat_save()) == before


def test_apply_without_privileges_fails_clearly(pod_pair: PodPair) -> None:
    done = meshproxy_iptables(pod_pair.pod, "apply", SETTINGS, uid=PROXY_UID)
    assert done.returncode == 1
    assert "needs root or CAP_NET_ADMIN" in done.stderr


def test_ipv6_rules_when_enabled(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    assert meshproxy_iptables(pod, "apply", SETTINGS_V6).returncode == 0
    saved6 = pod.nat_save("ipv6").splitlines()
    for rule in rendered_rules(SETTINGS_V6, "ipv6"):
        assert rule in saved6
    assert not any(PEER_V4_ALT in line for line in saved6)
    # turning IPv6 off again removes the ip6tables rules
    assert meshproxy_iptables(pod, "apply", SETTINGS).returncode == 0
    assert "APPMESH" not in pod.nat_save("ipv6")


# --- the start-up guard -------------------------------------------------------------------------------------

GUARD = "import sys; from meshproxy.interception.guard import check_not_intercepted; " + (
    "print(check_not_intercepted(int(sys.argv[1])))"
)


def test_guard_refuses_an_identity_the_rules_redirect(pod_pair: PodPair) -> None:
    pod = pod_pair.pod
    assert pod.run(pod.python("-c", GUARD, "0")).stdout.strip() == "None"  # no rules yet
    assert meshproxy_iptables(pod, "apply", SETTINGS).returncode == 0
    refusal = pod.run(pod.python("-c", GUARD, "0")).stdout.strip()
    assert "running as UID 0" in refusal and "APPMESH_EGRESS" in refusal and "UID 1337" in refusal
    assert pod.run(pod.python("-c", GUARD, str(PROXY_UID))).stdout.strip() == "None"
    # unprivileged, iptables-save cannot read the table: the guard has nothing to go on and passes
    assert pod.run(pod.python("-c", GUARD, str(PROXY_UID)), uid=PROXY_UID).stdout.strip() == "None"
    assert pod.run(pod.python("-c", GUARD, str(APP_UID)), uid=APP_UID).stdout.strip() == "None"


# --- (b) where connections go, and SO_ORIGINAL_DST ---------------------------------------------------------


@pytest.fixture(scope="module")
def intercepted() -> Iterator[PodPair]:
    """A pod with the rules applied, probe listeners on the proxy ports (as 1337), an app, and upstreams."""
    with pod_pair_context() as pair:
        done = meshproxy_iptables(pair.pod, "apply", SETTINGS_V6)
        assert done.returncode == 0, done.stderr
        pair.serve(pair.pod, "egress-listener", [EGRESS_PORT], uid=PROXY_UID)
        pair.serve(pair.pod, "ingress-listener", [INGRESS_PORT], uid=PROXY_UID)
        pair.serve(pair.pod, "egress-listener-v6", [EGRESS_PORT], uid=PROXY_UID, host="::")
        pair.serve(pair.pod, "app", [APP_PORT, OTHER_APP_PORT], uid=APP_UID)
        pair.serve(pair.peer, "upstream", [UPSTREAM_PORT, IGNORED_PORT])
        pair.serve(pair.peer, "upstream-v6", [UPSTREAM_PORT], host="::")
        yield pair


def test_app_egress_is_redirected_and_the_listener_reads_the_original_destination(
    intercepted: PodPair,
) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V4, UPSTREAM_PORT, uid=APP_UID, send="hello")
    assert reply["server"] == "egress-listener", reply
    assert reply["original_dst"] == [PEER_V4, UPSTREAM_PORT]
    assert reply["local"] == ["127.0.0.1", EGRESS_PORT]  # REDIRECT in OUTPUT lands on loopback
    assert reply["received"] == "hello"
    assert reply["uid"] == PROXY_UID


def test_an_address_that_exists_nowhere_is_still_captured(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, NOWHERE_V4, 9090, uid=APP_UID)
    assert reply["server"] == "egress-listener", reply
    assert reply["original_dst"] == [NOWHERE_V4, 9090]


def test_root_in_the_pod_is_redirected_too(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V4, UPSTREAM_PORT, uid=0)
    assert reply["server"] == "egress-listener", reply


def test_the_proxy_uid_goes_straight_out(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V4, UPSTREAM_PORT, uid=PROXY_UID, send="direct")
    assert reply["server"] == "upstream", reply
    assert reply["peer"][0] == POD_V4
    assert reply["received"] == "direct"


def test_an_ignored_port_bypasses_the_proxy(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V4, IGNORED_PORT, uid=APP_UID)
    assert reply["server"] == "upstream", reply
    assert reply["local"] == [PEER_V4, IGNORED_PORT]


def test_an_ignored_address_bypasses_the_proxy(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V4_ALT, UPSTREAM_PORT, uid=APP_UID)
    assert reply["server"] == "upstream", reply
    assert reply["local"] == [PEER_V4_ALT, UPSTREAM_PORT]


def test_local_destinations_are_never_captured(intercepted: PodPair) -> None:
    # ! --dst-type LOCAL (spec §2.3): app -> localhost and app -> own pod IP stay direct
    for host in ("127.0.0.1", POD_V4):
        reply = intercepted.connect(intercepted.pod, host, APP_PORT, uid=APP_UID)
        assert reply["server"] == "app", (host, reply)
        assert reply["original_dst"] is None


def test_a_direct_connection_to_the_listener_has_no_original_destination(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, "127.0.0.1", EGRESS_PORT, uid=APP_UID)
    assert reply["server"] == "egress-listener"
    assert reply["original_dst"] is None


def test_inbound_to_an_app_port_is_redirected_to_the_ingress_port(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.peer, POD_V4, APP_PORT, send="inbound")
    assert reply["server"] == "ingress-listener", reply
    assert reply["original_dst"] == [POD_V4, APP_PORT]
    assert reply["local"] == [POD_V4, INGRESS_PORT]
    assert reply["peer"][0] == PEER_V4
    assert reply["received"] == "inbound"


def test_inbound_to_a_port_that_is_not_an_app_port_is_not_redirected(intercepted: PodPair) -> None:
    # only the listed app ports are captured inbound (spec §2.2, known side effect [ISSUE-166])
    reply = intercepted.connect(intercepted.peer, POD_V4, OTHER_APP_PORT)
    assert reply["server"] == "app", reply
    assert reply["original_dst"] is None


def test_ipv6_egress_is_redirected_with_ip6t_so_original_dst(intercepted: PodPair) -> None:
    reply = intercepted.connect(intercepted.pod, PEER_V6, UPSTREAM_PORT, uid=APP_UID)
    assert reply["server"] == "egress-listener-v6", reply
    assert reply["original_dst"] == [PEER_V6, UPSTREAM_PORT]
    assert reply["local"] == ["::1", EGRESS_PORT]
    direct = intercepted.connect(intercepted.pod, PEER_V6, UPSTREAM_PORT, uid=PROXY_UID)
    assert direct["server"] == "upstream-v6", direct
    assert direct["peer"][0] == POD_V6
