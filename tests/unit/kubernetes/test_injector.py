"""Sidecar injection decisions and containers (meshproxy/kubernetes/injector.py), against App Mesh's
controller's behaviour (pkg/inject, spec §1.12, §2.2) and meshproxy's own parsers of what it injects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from meshproxy.interception.spec import collect_values, parse_spec
from meshproxy.kubernetes.injector import (
    InjectError,
    InjectMode,
    InjectorConfig,
    MeshIndex,
    designate,
    init_image_for,
    inject_pod,
    selector_matches,
)
from meshproxy.settings import load_settings

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
CONFIG = InjectorConfig(image="repo/meshproxy:0.1.0", config_url="https://config.example/mesh.json")


@pytest.fixture(scope="module")
def index() -> MeshIndex:
    """The colour mesh as controller objects (podSelector app=front/blue/green in namespace colours)."""
    loaded, issues = MeshIndex.load([str(FIXTURES / "colour-kubernetes.yaml")])
    assert [i for i in issues if i.is_error] == []
    return loaded


@pytest.fixture(scope="module")
def exported() -> MeshIndex:
    """The same mesh exported with describe-* (no pod selectors): pods name their node by annotation."""
    return MeshIndex.load([str(FIXTURES / "colour-describe.json")])[0]


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels or {}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "colorapp", "ports": [{"containerPort": 9080}]}]},
    }


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def containers(result: dict[str, Any], key: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["spec"].get(key, [])}


# ------------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {"app": "a"}, False),  # no podSelector selects nothing (metav1.LabelSelectorAsSelector(nil))
        ({}, {"app": "a"}, True),  # an empty one selects everything
        ({"matchLabels": {"app": "a"}}, {"app": "a", "v": "1"}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "b"}, False),
        ({"matchExpressions": [{"key": "v", "operator": "In", "values": ["1", "2"]}]}, {"v": "2"}, True),
        ({"matchExpressions": [{"key": "v", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "v", "operator": "Exists"}]}, {"v": ""}, True),
        ({"matchExpressions": [{"key": "v", "operator": "DoesNotExist"}]}, {"v": "x"}, False),
    ],
)
def test_label_selectors(selector: dict[str, Any] | None, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_the_pod_selector_in_the_pods_namespace_designates_the_node(index: MeshIndex) -> None:
    decision = designate(index, "colours", {"labels": {"app": "blue"}}, InjectMode.UNSPECIFIED)
    assert decision.member is not None and decision.member.resource_id == "mesh/demo/virtualNode/blue"
    other = designate(index, "elsewhere", {"labels": {"app": "blue"}}, InjectMode.UNSPECIFIED)
    assert other.member is None and "no VirtualNode" in other.reason


def test_opt_out_opt_in_and_what_the_controller_refused(index: MeshIndex) -> None:
    disabled = {
        "labels": {"app": "blue"},
        "annotations": {"appmesh.k8s.aws/sidecarInjectorWebhook": "disabled"},
    }
    assert designate(index, "colours", disabled, InjectMode.ENABLED).member is None
    enabled = {
        "labels": {"app": "nobody"},
        "annotations": {"appmesh.k8s.aws/sidecarInjectorWebhook": "enabled"},
    }
    with pytest.raises(InjectError, match="no matching VirtualNode or VirtualGateway found"):
        designate(index, "colours", enabled, InjectMode.UNSPECIFIED)
    with pytest.raises(InjectError, match="no matching VirtualNode"):  # the webhook's namespaces default so
        designate(index, "colours", {"labels": {"app": "nobody"}}, InjectMode.ENABLED)
    with pytest.raises(InjectError, match="names no virtual node"):
        designate(
            index, "colours", {"annotations": {"appmesh.k8s.aws/virtualNode": "purple"}}, InjectMode.ENABLED
        )


def test_two_matching_virtual_nodes_are_an_error() -> None:
    from meshproxy.config.snapshot import ResourceKind
    from meshproxy.kubernetes.injector import MeshMember

    members = tuple(
        MeshMember(ResourceKind.VIRTUAL_NODE, "m", n, (80,), "ns", n, {"matchLabels": {"tier": "web"}})
        for n in "ab"
    )
    with pytest.raises(InjectError, match="found multiple matching virtualNodes: ns/a, ns/b"):
        designate(MeshIndex(members), "ns", {"labels": {"tier": "web"}}, InjectMode.UNSPECIFIED)


def test_an_exported_mesh_is_used_through_the_virtual_node_annotation(exported: MeshIndex) -> None:
    injected, decision = inject_pod(
        pod(annotations={"appmesh.k8s.aws/virtualNode": "green"}), "x", exported, CONFIG
    )
    assert decision.member is not None and decision.member.resource_id == "mesh/demo/virtualNode/green"
    assert env_of(containers(injected)["envoy"])["APPMESH_RESOURCE_ARN"] == "mesh/demo/virtualNode/green"


# ------------------------------------------------------------------------------------------------ containers


def test_the_sidecar_and_init_container_are_app_meshs_with_meshproxy(index: MeshIndex) -> None:
    original = pod({"app": "blue"})
    injected, _ = inject_pod(original, "colours", index, CONFIG)
    assert original == pod({"app": "blue"})  # the input is not changed
    sidecar = containers(injected)["envoy"]
    assert sidecar["image"] == "repo/meshproxy:0.1.0"
    assert sidecar["securityContext"]["runAsUser"] == 1337
    assert sidecar["ports"] == [{"name": "stats", "containerPort": 9901, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["exec"]["command"] == [
        "sh", "-c", "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE"
    ]  # fmt: skip
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/server_info", "port": 9901}
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "-c", "sleep 20"]
    assert sidecar["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}}
    env = env_of(sidecar)
    assert env["APPMESH_RESOURCE_ARN"] == env["APPMESH_VIRTUAL_NODE_NAME"] == "mesh/demo/virtualNode/blue"
    assert env["MESHPROXY_CONFIG"] == "https://config.example/mesh.json"
    settings = load_settings(env)  # the proxy accepts what it is given
    assert (settings.identity.name, settings.admin_port) == ("blue", 9901)
    init = containers(injected, "initContainers")["proxyinit"]
    assert init["image"] == "repo/meshproxy:0.1.0-init"
    assert init["command"] == ["meshproxy", "iptables", "apply"]
    assert "NET_ADMIN" in init["securityContext"]["capabilities"]["add"]
    spec = parse_spec(collect_values(env_of(init), {}))  # meshproxy iptables apply's own validation
    assert spec.ignored_uid == 1337 and (spec.proxy_ingress_port, spec.proxy_egress_port) == (15000, 15001)
    assert spec.app_ports == (9081,)  # blue's listener
    assert [p for p in spec.egress_ignored_ports] == [22]
    assert [str(n) for n in spec.egress_ignored_ips] == ["169.254.169.254/32"]
    assert spec.enable_ipv6


def test_app_mesh_pod_annotations_keep_their_meaning(index: MeshIndex) -> None:
    annotations = {
        "appmesh.k8s.aws/ports": "8080,8443",
        "appmesh.k8s.aws/egressIgnoredIPs": "169.254.169.254,169.254.170.2",
        "appmesh.k8s.aws/egressIgnoredPorts": "22,5432",
        "appmesh.k8s.aws/ipv6": "disabled",
        "appmesh.k8s.aws/preview": "enabled",
        "appmesh.k8s.aws/cpuRequest": "100m",
        "appmesh.k8s.aws/memoryRequest": "64Mi",
        "appmesh.k8s.aws/cpuLimit": "1",
        "appmesh.k8s.aws/memoryLimit": "128Mi",
        "appmesh.k8s.aws/secretMounts": "svc-certs:/certs",
        "appmesh.k8s.aws/volumeMounts": "shared:/shared",
        "appmesh.k8s.aws/sidecarEnv": "DD_ENV=qa, APPMESH_RESOURCE_ARN=ignored",
        "appmesh.k8s.aws/sidecarEnvJson": '[{"TEAM": "colours"}]',
    }
    injected, _ = inject_pod(pod({"app": "blue"}, annotations), "colours", index, CONFIG)
    sidecar = containers(injected)["envoy"]
    env = env_of(sidecar)
    assert env["APPMESH_PREVIEW"] == "1" and env["DD_ENV"] == "qa" and env["TEAM"] == "colours"
    assert env["APPMESH_RESOURCE_ARN"] == "mesh/demo/virtualNode/blue"  # managed keys are not overridden
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"cpu": "1", "memory": "128Mi"}}  # fmt: skip
    assert sidecar["volumeMounts"] == [
        {"name": "svc-certs", "mountPath": "/certs", "readOnly": True},
        {"name": "shared", "mountPath": "/shared", "readOnly": True},
    ]
    assert {"name": "svc-certs", "secret": {"secretName": "svc-certs"}} in injected["spec"]["volumes"]
    spec = parse_spec(collect_values(env_of(containers(injected, "initContainers")["proxyinit"]), {}))
    assert spec.app_ports == (8080, 8443) and [p for p in spec.egress_ignored_ports] == [22, 5432]
    assert not spec.enable_ipv6 and len(spec.egress_ignored_ips) == 2


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("appmesh.k8s.aws/cpuRequest", "lots", "'lots' is not a Kubernetes quantity"),
        ("appmesh.k8s.aws/secretMounts", "no-path", "expected format: secretName:mountPath"),
        ("appmesh.k8s.aws/sidecarEnv", "A=1=2", "expected format: EnvVariableKey=EnvVariableValue"),
        ("appmesh.k8s.aws/sidecarEnvJson", "{", "not JSON"),
    ],
)
def test_malformed_annotations_are_refused(
    index: MeshIndex, annotation: str, value: str, message: str
) -> None:
    with pytest.raises(InjectError, match=message):
        inject_pod(pod({"app": "blue"}, {annotation: value}), "colours", index, CONFIG)


def test_the_app_mesh_cni_gets_annotations_instead_of_an_init_container(index: MeshIndex) -> None:
    fargate = pod({"app": "blue", "eks.amazonaws.com/fargate-profile": "fp"})
    injected, _ = inject_pod(fargate, "colours", index, CONFIG)
    assert "initContainers" not in injected["spec"] or not injected["spec"]["initContainers"]
    annotations = injected["metadata"]["annotations"]
    assert annotations["appmesh.k8s.aws/ports"] == "9081"
    assert annotations["appmesh.k8s.aws/ignoredUID"] == "1337"
    assert annotations["appmesh.k8s.aws/sidecarInjectorWebhook"] == "enabled"
    assert "envoy" in containers(injected)


# ------------------------------------------------------------------------------------------------ idempotence


def test_injecting_twice_changes_nothing_and_app_meshs_containers_are_replaced(index: MeshIndex) -> None:
    once, _ = inject_pod(pod({"app": "blue"}), "colours", index, CONFIG)
    twice, _ = inject_pod(once, "colours", index, CONFIG)
    assert twice == once
    upgraded, _ = inject_pod(
        once, "colours", index, InjectorConfig(image="repo/meshproxy:0.2.0", config_url="x")
    )
    assert containers(upgraded)["envoy"]["image"] == "repo/meshproxy:0.2.0"  # a new image rolls out
    app_mesh = pod({"app": "blue"})
    app_mesh["spec"]["containers"].append(
        {"name": "envoy", "image": "public.ecr.aws/appmesh/aws-appmesh-envoy:v1"}
    )
    app_mesh["spec"]["initContainers"] = [
        {
            "name": "proxyinit",
            "image": "840364872350.dkr.ecr.us-west-2.amazonaws.com/aws-appmesh-proxy-route-manager:v7-prod",
        }
    ]
    migrated, _ = inject_pod(app_mesh, "colours", index, CONFIG)
    assert migrated == once  # App Mesh's sidecar is swapped for meshproxy's, in place


def test_a_users_own_envoy_container_is_left_alone(index: MeshIndex) -> None:
    own = pod({"app": "blue"})
    own["spec"]["containers"].append({"name": "envoy", "image": "envoyproxy/envoy:v1.30"})
    injected, _ = inject_pod(own, "colours", index, CONFIG)
    assert containers(injected)["envoy"] == {"name": "envoy", "image": "envoyproxy/envoy:v1.30"}


def test_a_gateway_pods_envoy_becomes_meshproxy() -> None:
    from meshproxy.config.snapshot import ResourceKind
    from meshproxy.kubernetes.injector import MeshMember

    gateway = MeshMember(
        ResourceKind.VIRTUAL_GATEWAY, "demo", "gw_ns", (), "ns", "gw", {"matchLabels": {"app": "gw"}}
    )
    template = {
        "metadata": {"labels": {"app": "gw"}},
        "spec": {"containers": [{"name": "envoy", "image": "aws-appmesh-envoy:v1", "env": [
            {"name": "ENVOY_LOG_LEVEL", "value": "debug"}, {"name": "KEEP", "value": "me"}]}]},
    }  # fmt: skip
    injected, decision = inject_pod(template, "ns", MeshIndex((gateway,)), CONFIG)
    envoy = containers(injected)["envoy"]
    assert decision.member == gateway and envoy["image"] == CONFIG.image
    env = env_of(envoy)
    assert env["APPMESH_RESOURCE_ARN"] == "mesh/demo/virtualGateway/gw_ns"
    assert env["ENVOY_LOG_LEVEL"] == "info" and env["KEEP"] == "me"
    assert [e["name"] for e in envoy["env"]][:2] == ["ENVOY_LOG_LEVEL", "KEEP"]  # updated in place
    assert "readinessProbe" in envoy and "initContainers" not in injected["spec"]
    assert inject_pod(injected, "ns", MeshIndex((gateway,)), CONFIG)[0] == injected
    skip = copy.deepcopy(template)
    skip["metadata"]["annotations"] = {"appmesh.k8s.aws/virtualGatewaySkipImageOverride": "enabled"}
    assert (
        containers(inject_pod(skip, "ns", MeshIndex((gateway,)), CONFIG)[0])["envoy"]["image"]
        == "aws-appmesh-envoy:v1"
    )


@pytest.mark.parametrize(
    ("image", "init"),
    [
        ("repo/meshproxy:0.1.0", "repo/meshproxy:0.1.0-init"),
        ("registry:5000/meshproxy", "registry:5000/meshproxy:init"),
        ("repo/meshproxy@sha256:abc", "repo/meshproxy:init"),
    ],
)
def test_the_init_image_follows_the_sidecar_image(image: str, init: str) -> None:
    assert init_image_for(image) == init
