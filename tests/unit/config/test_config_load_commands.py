"""Loading files, snapshot dumps, and the `meshproxy validate` / `meshproxy render` commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from meshproxy.cli import main as cli_main
from meshproxy.config.commands import render_main, validate_main
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dump import render_text, snapshot_to_dict
from meshproxy.config.errors import ConfigError
from meshproxy.config.load import load_resources, load_snapshot
from meshproxy.settings import parse_identity

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
FRONT = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/front"})

DEMO_TEXT = """\
virtualNode front in mesh demo (config version v1)
egress filter DROP_ALL
backends color.demo.local
ingress listeners
  http 9000 -> cds_ingress_demo_front_http_9000 (timeout 15s, idle 300s)
egress
  route table rds_egress_http_15001
    virtual host color.demo.local [http]: color.demo.local, color.demo.local:8080
      color-router/color-route [http]: prefix /
        -> cds_egress_demo_blue_http_9001 weight 50/100
        -> cds_egress_demo_green_http_9002 weight 50/100
        timeout 15s, idle 300s, retry 3x per-try 2s on status 500,501,502,503,504,505,506,507,508,510,511; \
reset; connect-failure
clusters
  cds_egress_demo_blue_http_9001 [http] dns 127.0.0.1:9001 LOADBALANCER, connect 1s
  cds_egress_demo_green_http_9002 [http] dns 127.0.0.1:9002 LOADBALANCER, connect 1s
  cds_ingress_demo_front_http_9000 [http] static 127.0.0.1:9000, connect 1s
"""


def write(path: Path, items: Any) -> str:
    path.write_text(json.dumps(items))
    return str(path)


@pytest.fixture
def split_demo(tmp_path: Path) -> list[str]:
    """The demo mesh spread over a JSON file and a YAML file."""
    items = colour_mesh(9001, 9002, 9000)
    first = write(tmp_path / "nodes.json", items[:4])
    second = tmp_path / "routing.yaml"
    second.write_text("\n---\n".join(json.dumps(item) for item in items[4:]))
    return [first, str(second)]


# --- load -------------------------------------------------------------------------------------------------


def test_several_files_are_merged(split_demo: list[str]) -> None:
    resources, warnings = load_resources(split_demo)
    assert warnings == []
    assert len(resources) == 7
    assert resources.virtual_router("demo", "color-router") is not None
    assert resources.virtual_node("demo", "front") is not None


def test_load_resources_raises_with_every_issue(tmp_path: Path) -> None:
    items = colour_mesh(9001, 9002, 9000)
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 150
    items[1]["virtualNode"]["spec"]["extra"] = 1
    path = write(tmp_path / "mesh.json", items)
    missing = str(tmp_path / "missing.json")
    with pytest.raises(ConfigError) as info:
        load_resources([path, missing])
    located = [issue.located() for issue in info.value.issues]
    assert f"{missing}: error: cannot read file: No such file or directory" in located
    assert (
        f"{path}: error: route color-router/color-route: spec.httpRoute.action.weightedTargets[0].weight: "
        "150 is not in 0..100" in located
    )
    assert f"{path}: warning: virtualNode front: spec.extra: unsupported field, ignored" in located
    assert len(info.value.errors) == 2 and len(info.value.warnings) == 1
    assert str(info.value).splitlines()[0].startswith("cannot read file")


def test_warnings_are_returned(tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.json", colour_mesh(9001, 9002, 9000)[1:])
    _, warnings = load_resources([path])
    assert warnings == [
        f"{path}: warning: mesh demo: not defined; assuming App Mesh's defaults (egressFilter DROP_ALL)"
    ]


def test_load_snapshot_version_is_a_content_hash(tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.json", colour_mesh(9001, 9002, 9000))
    snapshot = load_snapshot(path, FRONT, egress_port=15001)
    assert snapshot.version == hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    assert load_snapshot(path, FRONT).version == snapshot.version
    assert load_snapshot(path, FRONT, version="release-7").version == "release-7"
    write(tmp_path / "mesh.json", colour_mesh(9001, 9002, 9003))
    assert load_snapshot(path, FRONT).version != snapshot.version


def test_load_snapshot_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_snapshot(str(tmp_path / "none.json"), FRONT)
    bad = tmp_path / "bad.yaml"
    bad.write_text("meshName: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_snapshot(str(bad), FRONT)
    path = write(tmp_path / "mesh.json", colour_mesh(9001, 9002, 9000))
    with pytest.raises(ConfigError, match="virtualNode nope: not found in mesh 'demo'"):
        load_snapshot(path, parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/nope"}))


# --- dump -------------------------------------------------------------------------------------------------


def test_render_text_of_the_demo(tmp_path: Path) -> None:
    path = write(tmp_path / "mesh.json", colour_mesh(9001, 9002, 9000))
    assert render_text(load_snapshot(path, FRONT, version="v1")) == DEMO_TEXT


def test_snapshot_to_dict_is_json_and_stable() -> None:
    everything = json.loads((FIXTURES / "everything.json").read_text()) + colour_mesh(9001, 9002, 9000)[1:]
    data = json.dumps(everything).encode()
    from meshproxy.config.load import snapshot_from_bytes

    client = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/client"})
    first = snapshot_to_dict(snapshot_from_bytes(data, client))
    second = snapshot_to_dict(snapshot_from_bytes(data, client))
    assert json.dumps(first) == json.dumps(second)
    assert json.loads(json.dumps(first)) == first
    assert first["identity"]["kind"] == "virtualNode"
    assert list(first["clusters"]) == sorted(first["clusters"])
    assert first["clusters"]["cds_egress_demo_db_tcp_5432"]["discovery"]["type"] == "dns"
    assert first["clusters"]["cds_egress_demo_api_http2_8443"]["discovery"]["type"] == "awsCloudMap"
    assert list(first["tcp_routes"]) == ["5432", "6432"]
    routes = first["egress_routes"]["virtual_hosts"][0]["routes"]
    items = next(r for r in routes if r["name"] == "api-router/items")
    assert items["match"]["path_regex"] == "/items/[0-9]+"
    assert first["egress_routes"]["by_domain"]["api.demo.local:8443"] == "api.demo.local"
    default = next(r for r in routes if r["name"] == "api-router/items")["retry"]
    assert default["retriable_statuses"] == [503] and default["is_default"] is True


# --- commands ---------------------------------------------------------------------------------------------


def test_validate_ok(split_demo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main(split_demo) == 0
    assert capsys.readouterr().out == "ok: 7 resources\n"


def test_validate_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.json", colour_mesh(9001, 9002, 9000))
    bad = str(FIXTURES / "invalid-route.json")
    assert validate_main([good, bad]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: error: route color-router/split: spec.httpRoute.action.weightedTargets[0].weight: "
        "150 is not in 0..100",
        "invalid: 1 error",
    ]


def test_validate_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert validate_main([str(empty)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{empty}: warning: no App Mesh resources found",
        "ok: 0 resources",
    ]


def test_validate_warnings_still_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = colour_mesh(9001, 9002, 9000)
    items[1]["virtualNode"]["spec"]["someday"] = True
    path = write(tmp_path / "mesh.json", items)
    assert validate_main([path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: warning: virtualNode front: spec.someday: unsupported field, ignored",
        "ok: 7 resources",
    ]


def test_validate_with_node(split_demo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main(["--node", "mesh/demo/virtualNode/front", *split_demo]) == 0
    assert validate_main(["--node", "mesh/demo/virtualNode/nobody", *split_demo]) == 1
    assert "virtualNode nobody: not found in mesh 'demo'" in capsys.readouterr().out
    assert validate_main(["--node", "nonsense", *split_demo]) == 1
    assert "--node: " in capsys.readouterr().err


def test_render_text_and_json(split_demo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"--config={split_demo[0]}", "--config", split_demo[1], "--node", "mesh/demo/virtualNode/front"]
    assert render_main(args) == 0
    text = capsys.readouterr().out
    assert "color-router/color-route [http]: prefix /" in text
    assert "-> cds_egress_demo_blue_http_9001 weight 50/100" in text
    assert render_main([*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["identity"]["name"] == "front"
    assert data["egress_routes"]["name"] == "rds_egress_http_15001"


def test_render_uses_the_environment_identity(
    split_demo: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "APPMESH_RESOURCE_ARN", "arn:aws:appmesh:us-west-2:111122223333:mesh/demo/virtualNode/blue"
    )
    assert render_main(["--config", split_demo[0], "--config", split_demo[1], "--egress-port", "16001"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("virtualNode blue in mesh demo")
    assert "route table rds_egress_http_16001" in out


def test_render_failures(split_demo: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert render_main(["--config", split_demo[0], "--node", "mesh/demo/virtualNode/front"]) == 1
    assert "virtual service 'color.demo.local' not found" in capsys.readouterr().err
    assert (
        render_main(
            ["--config", *split_demo[:1], "--config", split_demo[1], "--node", "mesh/demo/virtualRouter/x"]
        )
        == 1
    )
    assert "--node: resource type 'virtualRouter'" in capsys.readouterr().err
    assert (
        render_main(["--config", str(tmp_path / "none.json"), "--node", "mesh/demo/virtualNode/front"]) == 1
    )
    assert "cannot read file" in capsys.readouterr().err


def test_cli_dispatches_to_the_config_commands(
    split_demo: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["validate", *split_demo]) == 0
    assert capsys.readouterr().out == "ok: 7 resources\n"
