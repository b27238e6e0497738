"""`meshproxy inject` on real manifest files (issue 16): every workload kind, untouched documents written back
byte for byte, idempotent, stdin/stdout and JSON, errors that write nothing; and the injected sidecar's
environment actually starts a proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from meshproxy.kubernetes.manifests import POD_TEMPLATE_PATHS

from .harness import REPO_ROOT, clean_environ, run_meshproxy

MESH = REPO_ROOT / "tests" / "fixtures" / "meshes" / "colour-kubernetes.yaml"
FLAGS = ("--config", str(MESH), "--image", "repo/meshproxy:0.1.0", "--config-url", "https://cfg/mesh.json")
TEMPLATE = {
    "metadata": {"labels": {"app": "blue"}},
    "spec": {"containers": [{"name": "app", "image": "color"}]},
}

UNTOUCHED = """\
# a Service: not a workload, must come back exactly as written (comments, flow style, quoting)
apiVersion: v1
kind: Service
metadata: {name: blue, namespace: colours}   # trailing comment
spec:
  ports: [{port: 80, targetPort: 9080}]
"""


def workload(kind: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    template = json.loads(json.dumps(TEMPLATE))
    template["metadata"]["labels"] = labels
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "colours"},
    }
    path = POD_TEMPLATE_PATHS[kind]
    if not path:
        obj["metadata"].update(template["metadata"])
        obj["spec"] = template["spec"]
        return obj
    holder = obj
    for step in path[:-1]:
        holder = holder.setdefault(step, {})
    holder[path[-1]] = template
    return obj


def manifests() -> str:
    kinds = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
    documents = [
        yaml.safe_dump(workload(kind, kind.lower(), {"app": "blue"}), sort_keys=False) for kind in kinds
    ]
    documents.append(yaml.safe_dump(workload("Deployment", "outsider", {"app": "other"}), sort_keys=False))
    return UNTOUCHED + "---\n" + "---\n".join(documents)


def inject(tmp_path: Path, *args: str, stdin: str | None = None) -> Any:
    import subprocess

    return subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "meshproxy"), "inject", *FLAGS, *args],
        input=stdin,
        env=clean_environ(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_workload_kind_is_injected_and_the_rest_is_written_back_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "app.yaml"
    source.write_text(manifests())
    done = inject(tmp_path, str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(UNTOUCHED)  # byte for byte
    documents = list(yaml.safe_load_all(done.stdout))
    by_name = {d["metadata"]["name"]: d for d in documents[1:]}
    for kind, path in POD_TEMPLATE_PATHS.items():
        template: Any = by_name[kind.lower()]
        for step in path:
            template = template[step]
        names = [c["name"] for c in template["spec"]["containers"]]
        assert names == ["app", "envoy"], kind
        assert template["spec"]["initContainers"][0]["name"] == "proxyinit", kind
    outsider = by_name["outsider"]["spec"]["template"]["spec"]
    assert [c["name"] for c in outsider["containers"]] == ["app"] and "initContainers" not in outsider
    lines = done.stderr.splitlines()
    assert (
        "Deployment colours/deployment: injected as mesh/demo/virtualNode/blue (podSelector of blue)" in lines
    )
    assert "Deployment colours/outsider: not injected: no VirtualNode or VirtualGateway selects it" in lines

    # idempotent: injecting the output again gives the same bytes (and through stdin / stdout)
    again = inject(tmp_path, "-", stdin=done.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout


def test_output_file_json_and_kind_list(tmp_path: Path) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [workload("Deployment", "d", {"app": "blue"})]}
    source = tmp_path / "list.json"
    source.write_text(json.dumps(listing))
    done = inject(tmp_path, str(source), "-o", str(source))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    written = json.loads(source.read_text())  # JSON in, JSON out
    env = {
        e["name"]: e.get("value")
        for e in written["items"][0]["spec"]["template"]["spec"]["containers"][1]["env"]
    }
    assert env["APPMESH_RESOURCE_ARN"] == "mesh/demo/virtualNode/blue"
    unchanged = tmp_path / "plain.json"
    unchanged.write_text('{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}')
    assert inject(tmp_path, str(unchanged)).stdout == unchanged.read_text()


def test_a_pod_the_controller_would_refuse_fails_and_writes_nothing(tmp_path: Path) -> None:
    refused = workload("Deployment", "needs-mesh", {"app": "nobody"})
    refused["spec"]["template"]["metadata"]["annotations"] = {
        "appmesh.k8s.aws/sidecarInjectorWebhook": "enabled"
    }
    source = tmp_path / "app.yaml"
    source.write_text(manifests() + "---\n" + yaml.safe_dump(refused))
    done = inject(tmp_path, str(source))
    assert done.returncode == 1 and done.stdout == ""
    assert "Deployment colours/needs-mesh: sidecarInject enabled but no matching VirtualNode" in done.stderr


def test_an_invalid_mesh_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "mesh.json"
    broken.write_text(
        '[{"virtualNode": {"meshName": "m", "virtualNodeName": "x", "spec": {"listeners": 1}}}]'
    )
    env = clean_environ()
    done = run_meshproxy(
        ["inject", "--config", str(broken), "--image", "i", "--config-url", "u", "-"], env=env, cwd=tmp_path
    )
    assert done.returncode == 1 and "error: virtualNode x: spec.listeners" in done.stderr


def test_the_injected_sidecar_environment_starts_a_proxy(tmp_path: Path) -> None:
    """The sidecar's own variables, with a local copy of the mesh as MESHPROXY_CONFIG, make a LIVE proxy."""
    from .harness import MeshProxy

    source = tmp_path / "pod.yaml"
    source.write_text(yaml.safe_dump(workload("Pod", "p", {"app": "front"})))
    done = inject(tmp_path, str(source))
    pod = yaml.safe_load(done.stdout)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][1]["env"] if "value" in e}
    mesh_objects = [doc for doc in yaml.safe_load_all(MESH.read_text()) if doc]
    proxy = MeshProxy(mesh_objects, env["APPMESH_RESOURCE_ARN"], tmp_path / "proxy")  # --config: a local copy
    proxy.env = {
        k: v for k, v in env.items() if k not in ("ENVOY_ADMIN_ACCESS_PORT", "ENVOY_ADMIN_ACCESS_LOG_FILE")
    }
    try:
        proxy.start()
        info = proxy.admin("/server_info").json()
    finally:
        proxy.stop()
    assert info["state"] == "LIVE" and info["node"]["id"] == "mesh/demo/virtualNode/front"
