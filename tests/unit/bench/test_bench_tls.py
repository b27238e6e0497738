"""The TLS bench's configuration (bench/tls.py): both proxies get TLS exactly where the scenario puts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import mesh
from bench.envoy_config import compile_config_file
from bench.tls import SCENARIOS, mesh_resources, nginx_config

PORTS = {"mtls": 9443, "mtls-close": 9444, "plain": 9080}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_compiles_with_tls_where_it_measures_it(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(mesh_resources(scenario, Path("/certs"), PORTS)))
    snapshot = compile_config_file(str(path), mesh.CLIENT_RESOURCE_ARN, egress_port=15001)
    if scenario.terminate:
        (listener,) = snapshot.ingress
        assert listener.tls is not None and listener.tls.mode == "STRICT"
        assert all(c.tls is None for c in snapshot.clusters.values())
    else:
        port = PORTS["mtls-close" if scenario.handshake_per_request else "mtls"]
        cluster = snapshot.clusters[mesh.egress_cluster_name(mesh.MESH, mesh.UPSTREAM_NODE, "http", port)]
        assert cluster.tls is not None and cluster.tls.certificate is not None  # mTLS
        assert cluster.tls.validation is not None
        assert cluster.tls.validation.subject_alternative_names == ("127.0.0.1",)  # the discovery name


def test_nginx_verifies_clients_and_closes_where_asked(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, Path("/certs"), PORTS)
    assert text.count("ssl_verify_client on;") == 2 and "keepalive_timeout 0;" in text
    assert "listen 127.0.0.1:9080 backlog" in text
