"""Sidecar injection for one pod (template): App Mesh's controller's decisions, meshproxy's containers.

What the controller did at pod admission (aws-app-mesh-controller-for-k8s `pkg/inject`, spec §1.12, §2.2), and
what this module does the same way:

- whether to inject: the pod annotation `appmesh.k8s.aws/sidecarInjectorWebhook` (`enabled` / `disabled`)
  overrides the namespace's default (the webhook serves namespaces labelled `enabled`; `meshproxy inject`
  has no namespace to read and injects where a virtual node is found). `enabled` with no virtual node found is
  an error, as it was;
- which virtual node: the annotation `appmesh.k8s.aws/virtualNode` names it (the VirtualNode object in the
  pod's namespace, or an AWS virtual node name, which is how a mesh exported with `describe-*` is used); else
  the VirtualNode objects of the pod's namespace whose `podSelector` selects the pod's labels (no selector
  selects nothing, `{}` selects everything; two matches are an error). VirtualGateway selectors select
  gateway pods, whose `envoy` container is then switched to meshproxy;
- the init container `proxyinit` (`meshproxy iptables apply` with the route manager's variables and
  NET_ADMIN), or with the App Mesh CNI (annotation `appmeshCNI: enabled`, or EKS Fargate) the annotations
  the CNI reads instead;
- the sidecar `envoy` (the name runbooks and `kubectl logs -c envoy` know): UID 1337, the `stats` port,
  App Mesh's environment plus `MESHPROXY_CONFIG`, App Mesh's readiness probe, a liveness probe on
  `/server_info`, a preStop sleep, resources;
- the pod annotations keep their meaning: ports, egressIgnoredIPs, egressIgnoredPorts, ipv6, preview,
  cpuRequest, memoryRequest, cpuLimit, memoryLimit, secretMounts, volumeMounts, sidecarEnv, sidecarEnvJson,
  virtualGatewaySkipImageOverride.

Injecting twice changes nothing: a `proxyinit` / `envoy` container that App Mesh injected (its images) or
meshproxy injected (`meshproxy iptables apply`, `MESHPROXY_CONFIG`) is rebuilt in place, so the result is the
same; one the user wrote is left alone, as the controller left it.
"""

from __future__ import annotations

import copy
import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshproxy.config.dialects import read_files, read_sources
from meshproxy.config.errors import Issue
from meshproxy.config.kubernetes import KubernetesObject, mesh_of
from meshproxy.config.model import MeshResources
from meshproxy.config.raw import ReadResult
from meshproxy.config.snapshot import ResourceKind
from meshproxy.config.validate import validate

PREFIX = "appmesh.k8s.aws/"
INJECT = PREFIX + "sidecarInjectorWebhook"
VIRTUAL_NODE = PREFIX + "virtualNode"
MESH = PREFIX + "mesh"
PORTS = PREFIX + "ports"
EGRESS_IGNORED_IPS = PREFIX + "egressIgnoredIPs"
EGRESS_IGNORED_PORTS = PREFIX + "egressIgnoredPorts"
IPV6 = PREFIX + "ipv6"
PREVIEW = PREFIX + "preview"
CPU_REQUEST = PREFIX + "cpuRequest"
MEMORY_REQUEST = PREFIX + "memoryRequest"
CPU_LIMIT = PREFIX + "cpuLimit"
MEMORY_LIMIT = PREFIX + "memoryLimit"
SECRET_MOUNTS = PREFIX + "secretMounts"
VOLUME_MOUNTS = PREFIX + "volumeMounts"
SIDECAR_ENV = PREFIX + "sidecarEnv"
SIDECAR_ENV_JSON = PREFIX + "sidecarEnvJson"
CNI = PREFIX + "appmeshCNI"
GATEWAY_SKIP_IMAGE_OVERRIDE = PREFIX + "virtualGatewaySkipImageOverride"
FARGATE_PROFILE_LABEL = "eks.amazonaws.com/fargate-profile"

SIDECAR = "envoy"
INIT = "proxyinit"
PROXY_UID = 1337
INGRESS_PORT, EGRESS_PORT = 15000, 15001
DEFAULT_EGRESS_IGNORED_PORTS = "22"  # the controller's default (spec §2.2)
# App Mesh's images: containers it injected are replaced by meshproxy's.
APP_MESH_IMAGES = {SIDECAR: "aws-appmesh-envoy", INIT: "aws-appmesh-proxy-route-manager"}
INIT_COMMAND = ["meshproxy", "iptables", "apply"]
# Kubernetes resource.Quantity: a signed decimal with a binary, decimal or exponent suffix.
_QUANTITY = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class InjectError(Exception):
    """A pod cannot be injected (what the controller refused at admission); the message says why."""


class InjectMode(enum.StrEnum):
    ENABLED = "enabled"  # a virtual node must be found, else the pod is refused
    DISABLED = "disabled"
    UNSPECIFIED = "unspecified"  # inject when a virtual node is found


@dataclass(frozen=True, slots=True)
class InjectorConfig:
    """The controller's flags, for meshproxy: images, where the sidecar reads its mesh, and defaults."""

    image: str
    config_url: str  # the sidecar's MESHPROXY_CONFIG: an http(s):// or s3:// URL, or a path in the pod
    init_image: str = ""  # default: the sidecar image's tag + "-init" (Dockerfile target `init`)
    region: str | None = None
    log_level: str = "info"
    admin_port: int = 9901
    admin_access_log: str = "/tmp/envoy_admin_access.log"
    prestop_delay_s: int = 20
    readiness_initial_delay_s: int = 1
    readiness_period_s: int = 10
    cpu_request: str = "10m"
    memory_request: str = "32Mi"
    cpu_limit: str = ""
    memory_limit: str = ""
    egress_ignored_ips: str = "169.254.169.254"
    preview: bool = False
    env: tuple[tuple[str, str], ...] = ()  # cluster-wide sidecar variables (stats, tracing, ...)
    namespace_mode: InjectMode = InjectMode.UNSPECIFIED

    @property
    def init_image_ref(self) -> str:
        return self.init_image or init_image_for(self.image)


def init_image_for(image: str) -> str:
    """`repo/meshproxy:1.2` -> `repo/meshproxy:1.2-init`; an image without a tag gets `:init`."""
    name, at, _ = image.partition("@")
    if at:
        return f"{name}:init"
    repository, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return f"{repository}:{tag}-init"
    return f"{name}:init"


# ------------------------------------------------------------------------------------------------ selectors


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: None selects nothing, `{}` everything (metav1.LabelSelector)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In":
            matched = present and labels[key] in values
        elif operator == "NotIn":
            matched = not present or labels[key] not in values
        elif operator == "Exists":
            matched = present
        elif operator == "DoesNotExist":
            matched = not present
        else:
            raise InjectError(f"podSelector: unknown operator {operator!r}")
        if not matched:
            return False
    return True


# ------------------------------------------------------------------------------------------------ the mesh


@dataclass(frozen=True, slots=True)
class MeshMember:
    """A virtual node or gateway pods can be: from an App Mesh Kubernetes object (with namespace and pod
    selector) or from an exported resource (named by the `virtualNode` annotation only)."""

    kind: ResourceKind
    mesh: str
    aws_name: str
    ports: tuple[int, ...] = ()
    namespace: str | None = None
    object_name: str | None = None
    pod_selector: Mapping[str, Any] | None = None

    @property
    def resource_id(self) -> str:
        """The APPMESH_RESOURCE_ARN the controller gave the sidecar: `mesh/<mesh>/<kind>/<name>`."""
        return f"mesh/{self.mesh}/{self.kind.value}/{self.aws_name}"

    def __str__(self) -> str:
        place = f" ({self.object_name} in {self.namespace})" if self.object_name else ""
        return self.resource_id + place


@dataclass(frozen=True, slots=True)
class MeshIndex:
    members: tuple[MeshMember, ...]

    @classmethod
    def load(cls, paths: Sequence[str]) -> tuple[MeshIndex, list[Issue]]:
        """The members of the meshes in `paths` (any configuration dialect), with every issue found."""
        objects: list[KubernetesObject] = []
        return cls._read(read_files(paths, objects), objects)

    @classmethod
    def from_sources(cls, sources: Sequence[tuple[str, bytes]]) -> tuple[MeshIndex, list[Issue]]:
        """As `load`, from (name, bytes) pairs fetched from config sources."""
        objects: list[KubernetesObject] = []
        return cls._read(read_sources(sources, objects), objects)

    @classmethod
    def _read(cls, read: ReadResult, objects: list[KubernetesObject]) -> tuple[MeshIndex, list[Issue]]:
        resources, issues = validate(read.resources)
        return cls.of(resources, objects), [*read.issues, *issues]

    @classmethod
    def of(cls, resources: MeshResources, objects: Sequence[KubernetesObject] = ()) -> MeshIndex:
        members: list[MeshMember] = []
        claimed: set[tuple[str, str, str]] = set()
        for obj in objects:
            if obj.kind not in ("VirtualNode", "VirtualGateway"):
                continue
            mesh = mesh_of(obj, objects)
            if mesh is None:
                continue
            kind = ResourceKind.VIRTUAL_NODE if obj.kind == "VirtualNode" else ResourceKind.VIRTUAL_GATEWAY
            selector = obj.spec.get("podSelector")
            members.append(
                MeshMember(
                    kind, mesh, obj.aws_name, _ports(resources, kind, mesh, obj.aws_name), obj.namespace,
                    obj.name, selector if isinstance(selector, dict) else None,
                )
            )  # fmt: skip
            claimed.add((kind.value, mesh, obj.aws_name))
        for node in resources.virtual_nodes:
            key = (ResourceKind.VIRTUAL_NODE.value, node.mesh_name, node.virtual_node_name)
            if key not in claimed:
                ports = tuple(lst.port_mapping.port for lst in node.spec.listeners)
                members.append(
                    MeshMember(ResourceKind.VIRTUAL_NODE, node.mesh_name, node.virtual_node_name, ports)
                )
        for gateway in resources.virtual_gateways:
            key = (ResourceKind.VIRTUAL_GATEWAY.value, gateway.mesh_name, gateway.virtual_gateway_name)
            if key not in claimed:
                members.append(
                    MeshMember(ResourceKind.VIRTUAL_GATEWAY, gateway.mesh_name, gateway.virtual_gateway_name)
                )
        return cls(tuple(members))

    def selecting(self, kind: ResourceKind, namespace: str, labels: Mapping[str, str]) -> list[MeshMember]:
        return [
            m for m in self.members
            if m.kind is kind and m.namespace == namespace and selector_matches(m.pod_selector, labels)
        ]  # fmt: skip

    def named(self, name: str, namespace: str, mesh: str | None) -> list[MeshMember]:
        """The `virtualNode` annotation: an object in `namespace`, else AWS virtual node names."""
        nodes = [m for m in self.members if m.kind is ResourceKind.VIRTUAL_NODE]
        found = [m for m in nodes if m.object_name == name and m.namespace == namespace]
        if not found:
            found = [m for m in nodes if m.aws_name == name]
        return [m for m in found if mesh is None or m.mesh == mesh]


def _ports(resources: MeshResources, kind: ResourceKind, mesh: str, name: str) -> tuple[int, ...]:
    if kind is not ResourceKind.VIRTUAL_NODE:
        return ()
    node = resources.virtual_node(mesh, name)
    return () if node is None else tuple(lst.port_mapping.port for lst in node.spec.listeners)


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one pod: inject `member`, or not (`reason` says why)."""

    member: MeshMember | None
    reason: str


def designate(index: MeshIndex, namespace: str, metadata: Mapping[str, Any], default: InjectMode) -> Decision:
    """The controller's `determineSidecarInjectMode` + membership designators. Raises InjectError."""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    mode = default
    value = str(annotations.get(INJECT, "")).lower()
    if value in (InjectMode.ENABLED, InjectMode.DISABLED):
        mode = InjectMode(value)
    if mode is InjectMode.DISABLED:
        return Decision(None, f"{INJECT}: disabled")
    named = annotations.get(VIRTUAL_NODE)
    if named:
        found = index.named(str(named), namespace, annotations.get(MESH))
        if len(found) != 1:
            what = (
                "no virtual node"
                if not found
                else f"{len(found)} virtual nodes ({', '.join(map(str, found))})"
            )
            raise InjectError(f"{VIRTUAL_NODE}: {named!r} names {what}; set {MESH} or fix the name")
        return Decision(found[0], f"{VIRTUAL_NODE} annotation")
    nodes = index.selecting(ResourceKind.VIRTUAL_NODE, namespace, labels)
    gateways = index.selecting(ResourceKind.VIRTUAL_GATEWAY, namespace, labels)
    if nodes and gateways:
        raise InjectError(
            f"selected by VirtualNode {nodes[0].object_name} and VirtualGateway {gateways[0].object_name}; "
            "use podSelector on one"
        )
    found = nodes or gateways
    if len(found) > 1:
        names = ", ".join(f"{namespace}/{m.object_name}" for m in found)
        raise InjectError(f"found multiple matching {found[0].kind.value}s: {names}")
    if found:
        return Decision(found[0], f"podSelector of {found[0].object_name}")
    if mode is InjectMode.ENABLED:
        raise InjectError("sidecarInject enabled but no matching VirtualNode or VirtualGateway found")
    return Decision(None, "no VirtualNode or VirtualGateway selects it")


# ------------------------------------------------------------------------------------------------ building


def _quantity(value: str, origin: str) -> str:
    if not _QUANTITY.fullmatch(value):
        raise InjectError(f"{origin}: {value!r} is not a Kubernetes quantity (e.g. 10m, 32Mi)")
    return value


def _resources(config: InjectorConfig, annotations: Mapping[str, Any]) -> dict[str, Any]:
    """requests / limits: the annotation, else the flag (the controller's sidecarResources)."""
    resources: dict[str, Any] = {}
    for group, cpu, memory in (
        ("requests", (CPU_REQUEST, config.cpu_request), (MEMORY_REQUEST, config.memory_request)),
        ("limits", (CPU_LIMIT, config.cpu_limit), (MEMORY_LIMIT, config.memory_limit)),
    ):
        values = {}
        for resource, (annotation, default) in (("cpu", cpu), ("memory", memory)):
            value = str(annotations.get(annotation, default))
            if value:
                values[resource] = _quantity(value, annotation if annotation in annotations else group)
        if values:
            resources[group] = values
    return resources


def _pairs(annotations: Mapping[str, Any], name: str, separator: str, shape: str) -> list[tuple[str, str]]:
    """`a<sep>b, c<sep>d` annotations (secretMounts, volumeMounts, sidecarEnv), read as the controller did."""
    value = annotations.get(name)
    if value is None:
        return []
    pairs = []
    for segment in str(value).split(","):
        parts = segment.split(separator)
        if len(parts) != 2:
            raise InjectError(f"malformed annotation {name}, expected format: {shape}")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def _custom_env(annotations: Mapping[str, Any]) -> dict[str, str]:
    env = dict(_pairs(annotations, SIDECAR_ENV, "=", "EnvVariableKey=EnvVariableValue"))
    text = annotations.get(SIDECAR_ENV_JSON)
    if text is not None:
        try:
            entries = json.loads(str(text))
        except ValueError as exc:
            raise InjectError(f"{SIDECAR_ENV_JSON}: not JSON ({exc})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InjectError(f'{SIDECAR_ENV_JSON}: expected a list of objects, e.g. [{{"DD_ENV": "prod"}}]')
        for entry in entries:
            env.update({str(k): str(v) for k, v in entry.items()})
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise InjectError(f"{SIDECAR_ENV}: {name!r} is not a valid environment variable name")
    return env


def _sidecar_env(
    config: InjectorConfig, member: MeshMember, annotations: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """App Mesh's environment (spec §1.12): user variables first, the managed ones win over them."""
    env = {**dict(config.env), **_custom_env(annotations)}
    preview = config.preview
    if PREVIEW in annotations:
        preview = str(annotations[PREVIEW]).lower() == "enabled"
    managed = {
        "APPMESH_RESOURCE_ARN": member.resource_id,
        "APPMESH_VIRTUAL_NODE_NAME": member.resource_id,
        "MESHPROXY_CONFIG": config.config_url,
        "ENVOY_LOG_LEVEL": config.log_level,
        "ENVOY_ADMIN_ACCESS_PORT": str(config.admin_port),
        "ENVOY_ADMIN_ACCESS_LOG_FILE": config.admin_access_log,
        "ENVOY_ADMIN_ACCESS_ENABLE_IPV6": "false",
        "APPMESH_PREVIEW": "1" if preview else "0",
        "APPMESH_DUALSTACK_ENDPOINT": "0",
        "APPMESH_FIPS_ENDPOINT": "0",
    }
    if config.region:
        managed["AWS_REGION"] = config.region
    env.update(managed)
    listed: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in managed.items()]
    listed += [{"name": k, "value": v} for k, v in env.items() if k not in managed]
    for variable in listed:  # the controller's downward-API forms
        if (
            variable["name"] in ("STATSD_ADDRESS", "DATADOG_TRACER_ADDRESS")
            and variable["value"] == "ref:status.hostIP"
        ):
            variable.pop("value")
            variable["valueFrom"] = {"fieldRef": {"fieldPath": "status.hostIP"}}
    listed.append(
        {"name": "APPMESH_PLATFORM_K8S_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}
    )
    return listed


def _readiness(config: InjectorConfig) -> dict[str, Any]:
    """App Mesh's readiness probe, verbatim (spec §6.1): LIVE on a `state` line of /server_info."""
    command = f"curl -s http://localhost:{config.admin_port}/server_info | grep state | grep -q LIVE"
    return {
        "exec": {"command": ["sh", "-c", command]},
        "initialDelaySeconds": config.readiness_initial_delay_s,
        "periodSeconds": config.readiness_period_s,
        "timeoutSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def sidecar_container(
    config: InjectorConfig, member: MeshMember, annotations: Mapping[str, Any]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": SIDECAR,
        "image": config.image,
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
        },
        "ports": [{"name": "stats", "containerPort": config.admin_port, "protocol": "TCP"}],
        "env": _sidecar_env(config, member, annotations),
        "readinessProbe": _readiness(config),
        # Liveness must not follow /ready: a draining or still-initializing proxy is alive. /server_info
        # answers 200 in every state, from the moment the admin port is bound.
        "livenessProbe": {
            "httpGet": {"path": "/server_info", "port": config.admin_port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", f"sleep {config.prestop_delay_s}"]}}},
    }
    resources = _resources(config, annotations)
    if resources:
        container["resources"] = resources
    mounts = [
        {"name": n, "mountPath": p, "readOnly": True}
        for n, p in _pairs(annotations, SECRET_MOUNTS, ":", "secretName:mountPath")
    ]
    mounts += [
        {"name": n, "mountPath": p, "readOnly": True}
        for n, p in _pairs(annotations, VOLUME_MOUNTS, ":", "volumeName:mountPath")
    ]
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _interception(
    config: InjectorConfig, member: MeshMember, annotations: Mapping[str, Any]
) -> dict[str, str]:
    """The route manager's settings (spec §2.2): annotations, else listener ports and the defaults."""
    return {
        "APPMESH_APP_PORTS": str(annotations.get(PORTS, ",".join(str(p) for p in member.ports))),
        "APPMESH_EGRESS_IGNORED_IP": str(annotations.get(EGRESS_IGNORED_IPS, config.egress_ignored_ips)),
        "APPMESH_EGRESS_IGNORED_PORTS": str(
            annotations.get(EGRESS_IGNORED_PORTS, DEFAULT_EGRESS_IGNORED_PORTS)
        ),
        "APPMESH_ENABLE_IPV6": "0" if annotations.get(IPV6) == "disabled" else "1",
    }


def init_container(
    config: InjectorConfig, member: MeshMember, annotations: Mapping[str, Any]
) -> dict[str, Any]:
    settings = _interception(config, member, annotations)
    env = {
        "APPMESH_START_ENABLED": "1",
        "APPMESH_IGNORE_UID": str(PROXY_UID),
        "APPMESH_ENVOY_INGRESS_PORT": str(INGRESS_PORT),
        "APPMESH_ENVOY_EGRESS_PORT": str(EGRESS_PORT),
        **settings,
    }
    container: dict[str, Any] = {
        "name": INIT,
        "image": config.init_image_ref,
        "command": list(INIT_COMMAND),
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
        },
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    resources = _resources(config, annotations)
    if resources:
        container["resources"] = resources
    return container


def _ours_or_app_meshs(container: Mapping[str, Any]) -> bool:
    """A container App Mesh or meshproxy injected (rebuilt on each injection), not one the user wrote."""
    name = container.get("name")
    image = str(container.get("image", ""))
    if name in APP_MESH_IMAGES and APP_MESH_IMAGES[name] in image:
        return True
    if name == INIT:
        return container.get("command") == INIT_COMMAND
    return any(
        isinstance(e, dict) and e.get("name") == "MESHPROXY_CONFIG" for e in container.get("env") or []
    )


def _place(containers: list[Any], built: dict[str, Any]) -> None:
    """Put `built` where a container of its name was (rebuilt), or at the end; a user's own is kept."""
    for index, existing in enumerate(containers):
        if isinstance(existing, dict) and existing.get("name") == built["name"]:
            if _ours_or_app_meshs(existing):
                containers[index] = built
            return
    containers.append(built)


def _node_pod(pod: dict[str, Any], member: MeshMember, config: InjectorConfig) -> None:
    metadata = pod.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    spec = pod.setdefault("spec", {})
    cni = (
        str(annotations.get(CNI, "")).lower() == "enabled"
        if CNI in annotations
        else bool(labels.get(FARGATE_PROFILE_LABEL))
    )
    if cni:
        settings = _interception(config, member, annotations)
        metadata["annotations"] = {
            **annotations,
            PORTS: settings["APPMESH_APP_PORTS"],
            EGRESS_IGNORED_IPS: settings["APPMESH_EGRESS_IGNORED_IP"],
            EGRESS_IGNORED_PORTS: settings["APPMESH_EGRESS_IGNORED_PORTS"],
            PREFIX + "proxyEgressPort": str(EGRESS_PORT),
            PREFIX + "proxyIngressPort": str(INGRESS_PORT),
            PREFIX + "ignoredUID": str(PROXY_UID),
            INJECT: "enabled",
        }
    else:
        _place(spec.setdefault("initContainers", []), init_container(config, member, annotations))
    _place(spec.setdefault("containers", []), sidecar_container(config, member, annotations))
    secrets = _pairs(annotations, SECRET_MOUNTS, ":", "secretName:mountPath")
    if secrets:
        volumes = spec.setdefault("volumes", [])
        present = {v.get("name") for v in volumes if isinstance(v, dict)}
        volumes.extend({"name": s, "secret": {"secretName": s}} for s, _ in secrets if s not in present)


def _gateway_pod(pod: dict[str, Any], member: MeshMember, config: InjectorConfig) -> None:
    """The controller's virtual-gateway mutator: the pod's own `envoy` container becomes meshproxy."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    envoy = next((c for c in containers if isinstance(c, dict) and c.get("name") == SIDECAR), None)
    if envoy is None:
        return
    if str(annotations.get(GATEWAY_SKIP_IMAGE_OVERRIDE, "")).lower() != "enabled":
        envoy["image"] = config.image
    wanted = {e["name"]: e for e in _sidecar_env(config, member, annotations)}
    env = envoy.setdefault("env", [])
    for position, existing in enumerate(env):  # a variable already there gets the managed value in place
        if isinstance(existing, dict) and existing.get("name") in wanted:
            env[position] = wanted.pop(existing["name"])
    env.extend(wanted.values())
    envoy.setdefault("readinessProbe", _readiness(config))


def inject_pod(
    pod: Mapping[str, Any], namespace: str, index: MeshIndex, config: InjectorConfig
) -> tuple[dict[str, Any], Decision]:
    """`pod` (a Pod, or a workload's pod template: `metadata` + `spec`) with meshproxy injected, and the
    decision. The input is not changed. Raises InjectError for what the controller would have refused."""
    decision = designate(index, namespace, pod.get("metadata") or {}, config.namespace_mode)
    result = copy.deepcopy(dict(pod))
    if decision.member is None:
        return result, decision
    if decision.member.kind is ResourceKind.VIRTUAL_GATEWAY:
        _gateway_pod(result, decision.member, config)
    else:
        _node_pod(result, decision.member, config)
    return result, decision
