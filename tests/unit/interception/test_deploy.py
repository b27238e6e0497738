"""deploy/: the ECS task definition and Kubernetes manifests parse, and keep App Mesh's promises.

The task definition is checked against the ECS API model (botocore), the mesh specs against the App Mesh API
model, and the interception settings in both against our own validation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
import yaml
from botocore.validate import ParamValidator  # type: ignore[import-untyped]

from meshproxy.interception.spec import FIELDS, collect_values, parse_spec
from meshproxy.kubernetes.injector import init_image_for

REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY = REPO_ROOT / "deploy"
MESHPROXY = [sys.executable, "-m", "meshproxy.cli"]
HEALTH_COMMAND = "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE"


def validate_shape(service: str, shape_name: str, params: Any) -> None:
    model = botocore.session.get_session().get_service_model(service)
    shape = (
        model.operation_model(shape_name).input_shape
        if shape_name in model.operation_names
        else model.shape_for(shape_name)
    )
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def yaml_docs(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d is not None]
    assert docs, name
    return docs


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "ecs" / "task-definition.json").read_text())
    return data


def container(task: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in task["containerDefinitions"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def test_task_definition_is_a_valid_register_task_definition_request(task: dict[str, Any]) -> None:
    validate_shape("ecs", "RegisterTaskDefinition", task)
    assert task["networkMode"] == "awsvpc"  # required for proxyConfiguration (spec §2.1)


def test_proxy_configuration_is_app_mesh_and_valid_for_meshproxy(task: dict[str, Any]) -> None:
    proxy_config = task["proxyConfiguration"]
    assert proxy_config["type"] == "APPMESH"
    proxy = container(task, proxy_config["containerName"])
    properties = {p["name"]: p["value"] for p in proxy_config["properties"]}
    flags = {f.key: properties.get(f.flag[2:]) for f in FIELDS}
    spec = parse_spec(collect_values({}, flags))  # the same validation `meshproxy iptables` applies
    assert spec.ignored_uid == int(proxy["user"]) == 1337  # IgnoredUID must equal the proxy's user (§6.4)
    assert spec.proxy_ingress_port == 15000 and spec.proxy_egress_port == 15001
    app_ports = {
        m["containerPort"] for c in task["containerDefinitions"] if c is not proxy for m in c["portMappings"]
    }
    assert set(spec.app_ports) == app_ports
    assert {str(n.network_address) for n in spec.egress_ignored_ips} >= {"169.254.170.2", "169.254.169.254"}


def test_meshproxy_container_replaces_envoy(task: dict[str, Any]) -> None:
    proxy = container(task, "meshproxy")
    assert "appmesh-envoy" not in proxy["image"] and "meshproxy" in proxy["image"]
    assert proxy["essential"] is True
    assert proxy["user"] == "1337"
    assert {"name": "nofile", "softLimit": 15000, "hardLimit": 15000} in proxy["ulimits"]
    environment = {e["name"]: e["value"] for e in proxy["environment"]}
    assert environment["APPMESH_RESOURCE_ARN"].endswith(":mesh/colormesh/virtualNode/colorapp-blue")
    assert environment["MESHPROXY_CONFIG"].startswith("https://")
    # the drain (LISTENER_DRAIN_WAIT_TIME_S) must finish before ECS kills the container (spec §6.2)
    assert proxy["stopTimeout"] == 30 > int(environment["LISTENER_DRAIN_WAIT_TIME_S"])
    assert proxy["healthCheck"]["command"] == ["CMD-SHELL", HEALTH_COMMAND]
    health = proxy["healthCheck"]
    assert (health["startPeriod"], health["interval"], health["timeout"], health["retries"]) == (10, 5, 2, 3)
    assert {m["containerPort"] for m in proxy["portMappings"]} == {9901, 15000, 15001}


def test_app_waits_for_a_healthy_proxy(task: dict[str, Any]) -> None:
    app = container(task, "app")
    assert {"containerName": "meshproxy", "condition": "HEALTHY"} in app["dependsOn"]
    assert "user" not in app or app["user"] != "1337"  # the app must not share the proxy's exempt UID


@pytest.fixture(scope="module")
def mesh_config() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (config_map,) = yaml_docs("mesh-config.yaml")
    assert config_map["kind"] == "ConfigMap"
    resources: list[dict[str, Any]] = json.loads(config_map["data"]["mesh.json"])
    return config_map, resources


SPEC_SHAPES = {
    "mesh": "MeshSpec",
    "virtualNode": "VirtualNodeSpec",
    "virtualService": "VirtualServiceSpec",
    "virtualGateway": "VirtualGatewaySpec",
    "gatewayRoute": "GatewayRouteSpec",
}


def test_mesh_specs_are_valid_app_mesh_shapes(
    mesh_config: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, resources = mesh_config
    kinds = set()
    for resource in resources:
        ((kind, body),) = resource.items()
        kinds.add(kind)
        validate_shape("appmesh", SPEC_SHAPES[kind], body["spec"])
        assert body["meshName"] == "colormesh" or kind == "mesh"
    assert kinds == set(SPEC_SHAPES)


def test_pod_init_container_installs_valid_rules_and_the_sidecar_runs_as_the_ignored_uid(
    mesh_config: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    (pod,) = yaml_docs("pod.yaml")
    assert pod["kind"] == "Pod"
    (init,) = pod["spec"]["initContainers"]
    sidecar_image = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == "envoy")
    assert init["image"] == init_image_for(sidecar_image)  # the tag convention `meshproxy inject` assumes
    assert "NET_ADMIN" in init["securityContext"]["capabilities"]["add"]
    spec = parse_spec(collect_values(env_of(init), {}))  # the route manager's variables, validated
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    sidecar = containers["envoy"]
    assert spec.ignored_uid == sidecar["securityContext"]["runAsUser"] == 1337
    app_ports = {p["containerPort"] for p in containers["app"]["ports"]}
    assert set(spec.app_ports) == app_ports
    assert "runAsUser" not in containers["app"].get("securityContext", {})

    probe = sidecar["readinessProbe"]
    assert probe["exec"]["command"] == ["sh", "-c", HEALTH_COMMAND]
    assert (probe["initialDelaySeconds"], probe["periodSeconds"], probe["timeoutSeconds"]) == (1, 10, 1)
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "-c", "sleep 20"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 20

    env = env_of(sidecar)
    assert env["APPMESH_RESOURCE_ARN"] == "mesh/colormesh/virtualNode/colorapp-blue"
    _check_config_mount(pod["spec"], sidecar, env, mesh_config)
    node_names = {r["virtualNode"]["virtualNodeName"] for r in mesh_config[1] if "virtualNode" in r}
    assert env["APPMESH_RESOURCE_ARN"].rsplit("/", 1)[1] in node_names


def _check_config_mount(
    pod_spec: dict[str, Any],
    proxy: dict[str, Any],
    env: dict[str, str],
    mesh_config: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    config_map, _ = mesh_config
    (mount,) = proxy["volumeMounts"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    directory, _, key = env["MESHPROXY_CONFIG"].rpartition("/")
    assert directory == mount["mountPath"] and key in config_map["data"]


def test_virtual_gateway_deployment(mesh_config: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    docs = {d["kind"]: d for d in yaml_docs("virtual-gateway.yaml")}
    deployment, service = docs["Deployment"], docs["Service"]
    pod_spec = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod_spec  # a gateway intercepts nothing
    (proxy,) = pod_spec["containers"]
    env = env_of(proxy)
    mesh, kind, name = env["APPMESH_RESOURCE_ARN"].split("/")[1:]
    assert kind == "virtualGateway"
    (gateway,) = [r["virtualGateway"] for r in mesh_config[1] if "virtualGateway" in r]
    assert (gateway["meshName"], gateway["virtualGatewayName"]) == (mesh, name)
    listener_port = gateway["spec"]["listeners"][0]["portMapping"]["port"]
    assert listener_port > 1024  # unprivileged (spec: VGW ports <= 1024 fail as non-root)
    assert listener_port in {p["containerPort"] for p in proxy["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] == listener_port
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert proxy["readinessProbe"]["exec"]["command"] == ["sh", "-c", HEALTH_COMMAND]
    _check_config_mount(pod_spec, proxy, env, mesh_config)


def test_readme_says_what_changes() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "the image, and where the mesh configuration comes from" in text
    for name in ("MESHPROXY_CONFIG", "APPMESH_RESOURCE_ARN", "1337", "task-definition.json", "pod.yaml"):
        assert name in text


def test_readme_builds_both_images_for_both_architectures() -> None:
    """The README's build commands: buildx for amd64 and arm64, the init image tagged as `inject` expects."""
    text = (REPO_ROOT / "README.md").read_text()
    builds = [line for line in text.splitlines() if line.startswith("docker buildx build")]
    assert len(builds) == 2, builds
    for line in builds:
        assert "--platform linux/amd64,linux/arm64" in line and "--push" in line
    sidecar, init = builds
    assert "--target init" in init and "--target" not in sidecar
    sidecar_tag = sidecar.split(" -t ")[1].split()[0]
    init_tag = init.split(" -t ")[1].split()[0]
    assert init_tag == init_image_for(sidecar_tag)
    for heading in (
        "Moving an ECS service off aws-appmesh-envoy",
        "Moving an EKS cluster off aws-appmesh-envoy",
    ):
        assert heading in text


def test_readme_commands_name_real_flags() -> None:
    """Every `meshproxy inject|webhook|run ...` line of the READMEs uses flags the commands have."""
    import re
    import subprocess

    text = (REPO_ROOT / "README.md").read_text() + (DEPLOY / "README.md").read_text()
    for command in ("inject", "webhook", "run"):
        flags = set(re.findall(rf"meshproxy {command}\b[^`\n]*", text))
        used = {flag for line in flags for flag in re.findall(r"(--[a-z][a-z-]+)", line)}
        done = subprocess.run(
            [*MESHPROXY, command, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        unknown = {flag for flag in used if flag not in done.stdout}
        assert not unknown, (command, unknown)


# --- mTLS examples (issue 13) ----------------------------------------------------------------------------


def _tls_paths(value: Any) -> list[str]:
    """Every file path a mesh's TLS members name (certificateChain, privateKey)."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in ("certificateChain", "privateKey")]
        return found + [p for v in value.values() for p in _tls_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _tls_paths(v)]
    return []


def _compiled(resources: list[dict[str, Any]], node: str) -> Any:
    from meshproxy.config.load import snapshot_from_bytes
    from meshproxy.settings import parse_identity

    identity = parse_identity({"APPMESH_RESOURCE_ARN": f"mesh/colormesh/virtualNode/{node}"})
    return snapshot_from_bytes(json.dumps(resources).encode(), identity)


def test_ecs_mtls_example_reads_certificates_from_a_volume() -> None:
    task: dict[str, Any] = json.loads((DEPLOY / "ecs" / "mtls-task-definition.json").read_text())
    validate_shape("ecs", "RegisterTaskDefinition", task)
    proxy = container(task, task["proxyConfiguration"]["containerName"])
    (mount,) = proxy["mountPoints"]
    assert mount["readOnly"] is True
    assert mount["sourceVolume"] in {v["name"] for v in task["volumes"]}
    resources: list[dict[str, Any]] = json.loads((DEPLOY / "ecs" / "mtls-mesh.json").read_text())
    for resource in resources:
        ((kind, body),) = resource.items()
        validate_shape("appmesh", SPEC_SHAPES[kind], body["spec"])
    paths = _tls_paths(resources)
    assert paths and all(p.startswith(mount["containerPath"] + "/") for p in paths)
    teller = _compiled(resources, "colorteller")
    assert teller.ingress[0].tls.mode == "STRICT" and teller.ingress[0].tls.require_client_certificate
    gateway = _compiled(resources, "colorgateway")
    (tls,) = [c.tls for c in gateway.clusters.values() if c.tls is not None]
    assert tls.certificate is not None and tls.validation.subject_alternative_names == (
        "colorteller.colormesh.local",
    )


def test_kubernetes_mtls_example_fetches_every_secret_from_spire_over_sds() -> None:
    docs = {d["kind"]: d for d in yaml_docs("mtls-spire.yaml")}
    resources: list[dict[str, Any]] = json.loads(docs["ConfigMap"]["data"]["mesh.json"])
    for resource in resources:
        ((kind, body),) = resource.items()
        validate_shape("appmesh", SPEC_SHAPES[kind], body["spec"])
    assert _tls_paths(resources) == []  # no files: SDS only
    pod_spec = docs["Deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod_spec["containers"] if c["name"] == "envoy")
    socket_path = env_of(sidecar)["APPMESH_SDS_SOCKET_PATH"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    (name,) = [n for n, path in mounts.items() if socket_path.startswith(path + "/")]
    assert volumes[name]["hostPath"]["path"] == mounts[name]  # the node's SPIRE agent socket directory
    teller = _compiled(resources, "colorteller")
    assert (
        teller.ingress[0].tls.certificate.sds_secret == "spiffe://colormesh.local/ns/colorapp/sa/colorteller"
    )
    assert teller.ingress[0].tls.validation.trust_sds_secret == "spiffe://colormesh.local"
