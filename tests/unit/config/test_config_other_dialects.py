"""CloudFormation templates and Kubernetes App Mesh objects, normalised into the same model as API JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproxy.config import dialects
from meshproxy.config.compile import compile_snapshot
from meshproxy.config.dialects import read_file, read_files, read_text, resolve_document
from meshproxy.config.dump import render_text
from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import MeshResources, ResourceType, display_name
from meshproxy.config.validate import validate
from meshproxy.settings import parse_identity

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
DIALECTS = ("colour-describe.json", "colour-cloudformation.yaml", "colour-kubernetes.yaml")
FRONT = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/front"})


def load(*names: str) -> tuple[MeshResources, list[Issue]]:
    read = read_files([str(FIXTURES / name) for name in names])
    resources, issues = validate(read.resources)
    return resources, [*read.issues, *issues]


def messages(issues: list[Issue], severity: Severity = Severity.ERROR) -> list[str]:
    return [str(i) for i in issues if i.severity is severity]


# --- the same mesh in three dialects ----------------------------------------------------------------------


@pytest.mark.parametrize("name", DIALECTS)
def test_each_dialect_is_valid(name: str) -> None:
    resources, issues = load(name)
    assert [str(i) for i in issues] == []
    assert len(resources) == 8


def test_one_mesh_in_three_dialects_renders_identically() -> None:
    snapshots = [compile_snapshot(load(name)[0], FRONT, version="v1") for name in DIALECTS]
    texts = [render_text(snapshot) for snapshot in snapshots]
    assert texts[0] == texts[1] == texts[2]
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert "color-router/green-only [http] priority 10: prefix /, headers x-color=green" in texts[0]


def test_resources_are_equal_across_dialects() -> None:
    def key(resources: MeshResources) -> list[Any]:
        return sorted(resources, key=lambda r: (type(r).__name__, display_name(r)))

    first, *others = (load(name)[0] for name in DIALECTS)
    for other in others:
        assert key(other) == key(first)


# --- CloudFormation ---------------------------------------------------------------------------------------


def template(resources: dict[str, Any], parameters: dict[str, Any] | None = None) -> str:
    document: dict[str, Any] = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}
    if parameters:
        document["Parameters"] = parameters
    return json.dumps(document)


def cfn(kind: str, **properties: Any) -> dict[str, Any]:
    return {"Type": f"AWS::AppMesh::{kind}", "Properties": properties}


def read_cfn(text: str, name: str = "stack.json") -> tuple[MeshResources, list[Issue]]:
    read = read_text(text, source=name)
    resources, issues = validate(read.resources)
    return resources, [*read.issues, *issues]


def test_yaml_short_forms_become_long_forms() -> None:
    text = """
Resources:
  A: {Type: "AWS::AppMesh::Mesh", Properties: {MeshName: !Ref Name}}
Parameters:
  Name: {Type: String, Default: m}
Other:
  - !GetAtt A.MeshName
  - !GetAtt [A, MeshName]
  - !Sub "x-${Name}"
  - !Join [",", [a, b]]
  - !If [Cond, a, b]
"""
    document = yaml.load(text, Loader=dialects._yaml_loader())
    assert document["Resources"]["A"]["Properties"]["MeshName"] == {"Ref": "Name"}
    assert document["Other"] == [
        {"Fn::GetAtt": ["A", "MeshName"]},
        {"Fn::GetAtt": ["A", "MeshName"]},
        {"Fn::Sub": "x-${Name}"},
        {"Fn::Join": [",", ["a", "b"]]},
        {"Fn::If": ["Cond", "a", "b"]},
    ]


def test_pascal_case_and_string_numbers() -> None:
    node = cfn(
        "VirtualNode",
        MeshName="m",
        VirtualNodeName="n",
        Spec={
            "Listeners": [
                {
                    "PortMapping": {"Port": "8080", "Protocol": "http2"},
                    "ConnectionPool": {"HTTP2": {"MaxRequests": "7"}},
                    "TLS": {
                        "Mode": "STRICT",
                        "Certificate": {"File": {"CertificateChain": "/c", "PrivateKey": "/k"}},
                    },
                }
            ],
            "ServiceDiscovery": {"AWSCloudMap": {"NamespaceName": "ns", "ServiceName": "svc"}},
            "BackendDefaults": {
                "ClientPolicy": {
                    "TLS": {
                        "Enforce": "false",
                        "Validation": {"Trust": {"File": {"CertificateChain": "/ca"}}},
                    }
                }
            },
        },
    )
    resources, issues = read_cfn(template({"Mesh": cfn("Mesh", MeshName="m"), "Node": node}))
    assert messages(issues) == []
    found = resources.virtual_node("m", "n")
    assert found is not None
    listener = found.spec.listeners[0]
    assert listener.port_mapping.port == 8080
    assert listener.connection_pool is not None and listener.connection_pool.max_requests == 7
    assert listener.tls is not None and listener.tls.certificate.file_certificate_chain == "/c"
    assert found.spec.service_discovery is not None and found.spec.service_discovery.aws_cloud_map is not None
    defaults = found.spec.backend_defaults
    assert (
        defaults is not None and defaults.client_policy is not None and defaults.client_policy.tls is not None
    )
    assert defaults.client_policy.tls.enforce is False


def test_intrinsics_that_need_a_deployment_are_errors() -> None:
    text = template(
        {
            "Mesh": cfn("Mesh", MeshName={"Ref": "NoDefault"}),
            "Node": cfn(
                "VirtualNode",
                MeshName="m",
                VirtualNodeName={"Fn::Sub": "n-${AWS::Region}"},
                Spec={"Logging": {"AccessLog": {"File": {"Path": {"Fn::ImportValue": "LogPath"}}}}},
            ),
            "Service": cfn(
                "VirtualService", MeshName="m", VirtualServiceName={"Fn::GetAtt": ["Node", "Arn"]}
            ),
        },
        parameters={"NoDefault": {"Type": "String"}},
    )
    _, issues = read_cfn(text)
    found = messages(issues)
    assert "Resources.Mesh.Properties.MeshName: Ref: parameter 'NoDefault' has no Default" in found
    assert (
        "Resources.Node.Properties.VirtualNodeName: Fn::Sub: 'AWS::Region' is not known without "
        "deploying the stack" in found
    )
    assert (
        "Resources.Node.Properties.Spec.Logging.AccessLog.File.Path: Fn::ImportValue: "
        "not supported when reading a template statically; use the deployed value" in found
    )
    assert (
        "Resources.Service.Properties.VirtualServiceName: Fn::GetAtt: Node.Arn is only known after deployment"
        in found
    )
    assert all(i.source == "stack.json" for i in issues)


def test_ref_to_a_resource_novalue_sub_variables_and_conditions() -> None:
    text = template(
        {
            "Mesh": cfn("Mesh", MeshName="m", Spec={"EgressFilter": {"Type": {"Ref": "AWS::NoValue"}}}),
            "Router": {
                **cfn(
                    "VirtualRouter",
                    MeshName={"Ref": "Mesh"},
                    VirtualRouterName={
                        "Fn::Sub": [
                            "${Base}-router-${!Literal}",
                            {"Base": {"Fn::GetAtt": ["Mesh", "MeshName"]}},
                        ]
                    },
                    Spec={},
                ),
                "Condition": "IsProd",
            },
        }
    )
    resources, issues = read_cfn(text)
    assert messages(issues) == ["mesh m: spec.egressFilter.type: required member is missing"]
    assert messages(issues, Severity.WARNING) == [
        "Resources.Router.Condition: conditions are not evaluated; the resource is included",
        "Resources.Router: Ref Mesh is the resource's ARN in CloudFormation; using its name",
    ]
    assert resources.virtual_router("m", "m-router-${Literal}") is not None


def test_unknown_properties_and_other_resource_types() -> None:
    text = template(
        {
            "Mesh": cfn("Mesh", MeshName="m", Spec={"EgressFilter": {"Type": "ALLOW_ALL"}, "Colour": "blue"}),
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}},
        }
    )
    resources, issues = read_cfn(text)
    assert messages(issues) == []
    assert messages(issues, Severity.WARNING) == ["mesh m: spec.Colour: unsupported field, ignored"]
    assert len(resources) == 1


# --- Kubernetes -------------------------------------------------------------------------------------------


def manifest(kind: str, name: str, spec: dict[str, Any], namespace: str | None = "apps") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": kind, "metadata": metadata, "spec": spec}


def read_k8s(*documents: dict[str, Any]) -> tuple[MeshResources, list[Issue]]:
    read = resolve_document(list(documents), source="k8s.yaml")
    resources, issues = validate(read.resources)
    return resources, [*read.issues, *issues]


MESH = manifest("Mesh", "demo", {"egressFilter": {"type": "ALLOW_ALL"}}, namespace=None)
NODE = manifest(
    "VirtualNode",
    "blue",
    {
        "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "blue"}},
    },
)


def test_default_aws_names() -> None:
    service = manifest(
        "VirtualService", "color", {"provider": {"virtualNode": {"virtualNodeRef": {"name": "blue"}}}}
    )
    router = manifest(
        "VirtualRouter", "r", {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}
    )
    resources, issues = read_k8s(MESH, NODE, service, router)
    assert [str(i) for i in issues] == []
    assert resources.virtual_node("demo", "blue_apps") is not None
    assert resources.virtual_router("demo", "r_apps") is not None
    found = resources.virtual_service("demo", "color.apps")
    assert found is not None and found.spec.provider is not None
    assert found.spec.provider.virtual_node_name == "blue_apps"
    mesh = resources.mesh("demo")
    assert mesh is not None and mesh.spec.egress_filter is not None


def test_references_across_files(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(MESH))
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(NODE))
    service = manifest(
        "VirtualService", "color", {"provider": {"virtualNode": {"virtualNodeRef": {"name": "blue"}}}}
    )
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(service))
    read = read_files([str(tmp_path / n) for n in ("service.yaml", "node.yaml", "mesh.yaml")])
    assert read.issues == []
    resources, issues = validate(read.resources)
    assert issues == []
    assert resources.virtual_service("demo", "color.apps") is not None
    # read alone, the service's file knows neither the mesh nor the node
    alone = read_file(str(tmp_path / "service.yaml"))
    assert [str(i) for i in alone.issues] == [
        "virtualService color.apps: spec.meshRef: no Mesh among the manifests; add the Mesh object "
        "or spec.meshRef"
    ]


def test_unresolvable_references_are_reported_once() -> None:
    node = manifest(
        "VirtualNode", "front", {"backends": [{"virtualService": {"virtualServiceRef": {"name": "nope"}}}]}
    )
    router = manifest(
        "VirtualRouter",
        "r",
        {
            "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
            "routes": [
                {
                    "name": "x",
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {
                            "weightedTargets": [
                                {"virtualNodeRef": {"name": "ghost", "namespace": "other"}, "weight": 1},
                                {"virtualNodeRef": {"name": "blue"}, "weight": 1},
                            ]
                        },
                    },
                },
                {"httpRoute": {}},
            ],
        },
    )
    resources, issues = read_k8s(MESH, NODE, node, router)
    assert messages(issues) == [
        "virtualNode front_apps: spec.backends[0].virtualService.virtualServiceRef: "
        "no VirtualService 'nope' in namespace 'apps' among the manifests",
        "virtualRouter r_apps: spec.routes[0].httpRoute.action.weightedTargets[0].virtualNodeRef: "
        "no VirtualNode 'ghost' in namespace 'other' among the manifests",
        "virtualRouter r_apps: spec.routes[1]: a route needs a name",
    ]
    [route] = resources.routes_of("demo", "r_apps")
    assert route.spec.action.weighted_targets[0].virtual_node == "blue_apps"


def test_mesh_membership() -> None:
    other = manifest("Mesh", "other", {"awsName": "other-mesh"}, namespace=None)
    node = manifest("VirtualNode", "n", {"meshRef": {"name": "other"}})
    _, issues = read_k8s(MESH, other, NODE, node)
    assert messages(issues) == [
        "virtualNode blue_apps: spec.meshRef: several Meshes among the manifests; set spec.meshRef.name"
    ]
    resources, _ = read_k8s(MESH, other, node)
    assert resources.virtual_node("other-mesh", "n_apps") is not None


def test_gateways_and_gateway_routes() -> None:
    gateway = manifest(
        "VirtualGateway",
        "gw",
        {
            "listeners": [{"portMapping": {"port": 8088, "protocol": "http"}}],
            "namespaceSelector": {"matchLabels": {"gw": "yes"}},
            "podSelector": {"matchLabels": {"app": "gw"}},
        },
    )
    service = manifest(
        "VirtualService", "color", {"provider": {"virtualNode": {"virtualNodeRef": {"name": "blue"}}}}
    )
    route = manifest(
        "GatewayRoute",
        "to-color",
        {
            "httpRoute": {
                "match": {"prefix": "/color"},
                "action": {"target": {"virtualService": {"virtualServiceRef": {"name": "color"}}}},
            }
        },
    )
    resources, issues = read_k8s(MESH, NODE, gateway, service, route)
    assert [str(i) for i in issues] == []
    [found] = resources.gateway_routes_of("demo", "gw_apps")
    assert found.gateway_route_name == "to-color_apps"
    assert found.spec.action.target.virtual_service_name == "color.apps"
    second = manifest(
        "VirtualGateway", "gw2", {"listeners": [{"portMapping": {"port": 8089, "protocol": "http"}}]}
    )
    _, issues = read_k8s(MESH, NODE, gateway, second, service, route)
    assert messages(issues) == [
        "gatewayRoute to-color_apps: spec.virtualGatewayRef: set it: the manifests do not contain "
        "exactly one VirtualGateway"
    ]
    route["spec"]["virtualGatewayRef"] = {"name": "gw2"}
    resources, issues = read_k8s(MESH, NODE, gateway, second, service, route)
    assert messages(issues) == []
    assert resources.gateway_routes_of("demo", "gw2_apps")


def test_kubernetes_problems() -> None:
    groups = manifest("VirtualNode", "g", {"backendGroups": [{"name": "all"}]})
    unknown = {"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": "BackendGroup", "metadata": {"name": "x"}}
    nameless = {"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": "VirtualNode", "metadata": {}}
    _, issues = read_k8s(MESH, groups, unknown, nameless)
    assert messages(issues, Severity.WARNING) == [
        "virtualNode g_apps: spec.backendGroups: backend groups are not supported by meshproxy; "
        "list the backends"
    ]
    assert messages(issues) == [
        "item [2], kind BackendGroup: 'BackendGroup' is not an App Mesh kind "
        "(expected one of Mesh, VirtualNode, VirtualService, VirtualRouter, VirtualGateway, GatewayRoute)",
        "item [3], kind VirtualNode: metadata.name is missing",
    ]


def test_kind_list_and_kubernetes_identity() -> None:
    resources, _ = load("colour-kubernetes.yaml")
    assert resources.virtual_node("demo", "blue") is not None
    assert {r.kind for r in read_file(str(FIXTURES / "colour-kubernetes.yaml")).resources} >= {
        ResourceType.ROUTE,
        ResourceType.VIRTUAL_ROUTER,
    }
