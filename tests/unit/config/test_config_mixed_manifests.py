"""A manifest file that holds an application and its mesh: other Kubernetes kinds are skipped with a warning,
and a ConfigMap's data entries are read as App Mesh resources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshproxy.config.commands import validate_main
from meshproxy.config.compile import compile_snapshot
from meshproxy.config.dialects import read_files
from meshproxy.config.errors import Severity
from meshproxy.config.load import snapshot_from_bytes
from meshproxy.config.validate import validate
from meshproxy.settings import parse_identity

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
FRONT = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/front"})

APP = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "front", "namespace": "colours"},
        "spec": {"template": {"metadata": {"labels": {"app": "front"}}, "spec": {"containers": []}}},
    },
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "front"}, "spec": {"ports": [{"port": 80}]}},
]


def config_map(data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh", "namespace": "colours"},
            "data": data}  # fmt: skip


def write(tmp_path: Path, documents: list[object], *, prefix: str = "") -> str:
    path = tmp_path / "all.yaml"
    path.write_text(prefix + yaml.safe_dump_all(documents, sort_keys=False))
    return str(path)


def test_other_kinds_are_skipped_with_a_warning_and_app_mesh_objects_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = (FIXTURES / "colour-kubernetes.yaml").read_text()
    path = write(tmp_path, APP, prefix=mesh + "\n---\n")
    assert validate_main([path, "--node", "mesh/demo/virtualNode/front"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{path}: warning: document 6: Deployment colours/front is not an App Mesh kind; skipped" in out
    assert f"{path}: warning: document 7: Service front is not an App Mesh kind; skipped" in out
    assert out[-1] == "ok: 8 resources"
    assert not [line for line in out if ": error: " in line]


def test_a_config_map_holding_a_mesh_is_read_and_compiles_like_the_file(tmp_path: Path) -> None:
    describe = (FIXTURES / "colour-describe.json").read_text()
    path = write(tmp_path, [*APP, config_map({"mesh.json": describe, "nginx.conf": "server { listen 80; }"})])
    read = read_files([path])
    resources, issues = validate(read.resources)
    warnings = [i.located() for i in read.issues if i.severity is Severity.WARNING]
    assert f"{path}: warning: document 3, ConfigMap colours/mesh data['nginx.conf']: holds no App Mesh " \
        "resources; skipped" in warnings  # fmt: skip
    assert [i for i in (*read.issues, *issues) if i.is_error] == []
    direct = read_files([str(FIXTURES / "colour-describe.json")])
    expected = compile_snapshot(validate(direct.resources)[0], FRONT, version="v")
    assert compile_snapshot(resources, FRONT, version="v") == expected
    # the proxy's own loader (MESHPROXY_CONFIG pointed at the manifest) reads it the same way
    assert snapshot_from_bytes(Path(path).read_bytes(), FRONT, source=path, version="v") == expected


def test_config_map_problems_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = '[{"virtualNode": {"meshName": "demo", "virtualNodeName": "x", "spec": {"listeners": 5}}}]'
    path = write(tmp_path, [config_map({"mesh.json": broken, "bad.json": "{not json"})])
    assert validate_main([path]) == 1
    out = capsys.readouterr().out
    assert "data['bad.json']: not JSON or YAML; skipped" in out
    assert "error: virtualNode x: spec.listeners:" in out


def test_an_unknown_app_mesh_kind_is_still_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = {"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": "BackendGroup", "metadata": {"name": "x"}}
    assert validate_main([write(tmp_path, [unknown, *APP])]) == 1
    assert "'BackendGroup' is not an App Mesh kind (expected one of" in capsys.readouterr().out
