"""The bench's Envoy bootstrap: App Mesh's defaults for the bench mesh, and the Snapshot mapping."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from bench import envoy_config as ec
from bench import mesh
from meshproxy.config.snapshot import (
    Cluster,
    ConnectionPoolLimits,
    DnsDiscovery,
    EgressFilter,
    Identity,
    ListenerProtocol,
    ResourceKind,
    RetryPolicy,
    RouteEntry,
    RouteMatch,
    RouteTable,
    Snapshot,
    StaticDiscovery,
    StringMatchKind,
    ValueMatch,
    VirtualHost,
    WeightedCluster,
)


def _bench() -> dict[str, Any]:
    return ec.render_bootstrap(ec.bench_bootstrap(upstream_port=8080, egress_port=15001, admin_port=9901))


def _hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def test_bench_listener_is_egress_http_on_loopback() -> None:
    b = _bench()
    listener = b["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15001}
    assert listener["name"] == "lds_egress_127.0.0.1_15001"
    hcm = _hcm(b)
    assert hcm["stat_prefix"] == "egress"
    assert hcm["codec_type"] == "AUTO"
    assert hcm["generate_request_id"] is True
    assert "access_log" not in hcm
    assert "tracing" not in hcm
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    assert b["admin"]["address"]["socket_address"]["port_value"] == 9901
    assert b["node"]["id"] == "mesh/bench/virtualNode/client"


def test_bench_route_has_app_mesh_defaults() -> None:
    hcm = _hcm(_bench())
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    assert vhost["domains"] == ["upstream.bench.local", "upstream.bench.local:80"]
    (route,) = vhost["routes"]
    assert route["match"] == {"prefix": "/"}
    action = route["route"]
    assert action["weighted_clusters"]["clusters"] == [
        {"name": "cds_egress_bench_upstream_http_8080", "weight": 100}
    ]
    assert action["timeout"] == "15s"
    retry = action["retry_policy"]
    assert retry["num_retries"] == 2
    assert set(retry["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset",
        "retriable-status-codes",
    }
    assert retry["retriable_status_codes"] == [503]
    assert "per_try_timeout" not in retry  # App Mesh does not document one (spec §4.5)
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_bench_cluster_points_at_nginx_with_unlimited_breakers() -> None:
    (cluster,) = _bench()["static_resources"]["clusters"]
    assert cluster["name"] == "cds_egress_bench_upstream_http_8080"
    assert cluster["type"] == "LOGICAL_DNS"
    assert cluster["connect_timeout"] == "1s"
    (threshold,) = cluster["circuit_breakers"]["thresholds"]
    assert threshold["priority"] == "DEFAULT"
    for key in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        assert threshold[key] == 2147483647
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}


def test_yaml_round_trips() -> None:
    bootstrap = ec.bench_bootstrap(upstream_port=8081, egress_port=15002, admin_port=9902)
    assert yaml.safe_load(ec.bootstrap_yaml(bootstrap)) == ec.render_bootstrap(bootstrap)


@pytest.mark.parametrize(
    ("seconds", "text"), [(15.0, "15s"), (1, "1s"), (0.25, "0.25s"), (0, "0s"), (0.001, "0.001s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert ec.duration(seconds) == text


def test_negative_duration_is_an_error() -> None:
    with pytest.raises(ec.EnvoyConfigError):
        ec.duration(-1)


def test_route_to_unknown_cluster_is_an_error() -> None:
    bootstrap = ec.bench_bootstrap(upstream_port=8080, egress_port=15001, admin_port=9901)
    broken = ec.EgressBootstrap(
        node_id=bootstrap.node_id,
        admin_port=bootstrap.admin_port,
        egress_port=bootstrap.egress_port,
        virtual_hosts=bootstrap.virtual_hosts,
        clusters=(),
    )
    with pytest.raises(ec.EnvoyConfigError, match="unknown cluster"):
        ec.render_bootstrap(broken)


def test_duplicate_domains_are_an_error() -> None:
    bootstrap = ec.bench_bootstrap(upstream_port=8080, egress_port=15001, admin_port=9901)
    doubled = ec.EgressBootstrap(
        node_id=bootstrap.node_id,
        admin_port=bootstrap.admin_port,
        egress_port=bootstrap.egress_port,
        virtual_hosts=bootstrap.virtual_hosts * 2,
        clusters=bootstrap.clusters,
    )
    with pytest.raises(ec.EnvoyConfigError, match="domain"):
        ec.render_bootstrap(doubled)


def _snapshot(retry: RetryPolicy | None, match: RouteMatch) -> Snapshot:
    cluster_name = mesh.egress_cluster_name("bench", "upstream", "http", 8080)
    entry = RouteEntry(
        name="upstream-router/all",
        match=match,
        targets=(WeightedCluster(cluster_name, 100, "upstream"),),
        total_weight=100,
        retry=retry,
        timeout=15.0,
        idle_timeout=300.0,
    )
    vhost = VirtualHost(
        name="upstream.bench.local",
        domains=("upstream.bench.local", "upstream.bench.local:80"),
        routes=(entry,),
    )
    return Snapshot(
        version="1",
        identity=Identity(
            node_id="mesh/bench/virtualNode/client",
            mesh="bench",
            kind=ResourceKind.VIRTUAL_NODE,
            name="client",
            node_cluster="mesh/bench/virtualNode/client",
        ),
        egress_filter=EgressFilter.DROP_ALL,
        ingress=(),
        egress_routes=RouteTable(
            name="rds_egress_http_15001",
            virtual_hosts=(vhost,),
            by_domain=MappingProxyType(dict.fromkeys(vhost.domains, vhost)),
        ),
        tcp_routes=MappingProxyType({}),
        clusters=MappingProxyType(
            {
                cluster_name: Cluster(
                    name=cluster_name,
                    discovery=DnsDiscovery(hostname="127.0.0.1", port=8080),
                    protocol=ListenerProtocol.HTTP,
                    virtual_node="upstream",
                    limits=ConnectionPoolLimits(),
                ),
                "cds_egress_bench_unused_http_9": Cluster(
                    name="cds_egress_bench_unused_http_9",
                    discovery=StaticDiscovery(addresses=(("127.0.0.9", 9),)),
                    protocol=ListenerProtocol.HTTP,
                    virtual_node="unused",
                ),
            }
        ),
    )


DEFAULT_RETRY = RetryPolicy(
    max_retries=2,
    per_try_timeout=None,
    retriable_statuses=frozenset({503}),
    retry_on_reset=True,
    retry_on_connect_failure=True,
    retry_on_refused_stream=True,
    grpc_statuses=frozenset({14}),  # UNAVAILABLE: only meaningful on gRPC routes
    is_default=True,
)


def test_snapshot_with_default_retry_renders_like_the_bench_bootstrap() -> None:
    from_snapshot = ec.bootstrap_from_snapshot(
        _snapshot(DEFAULT_RETRY, RouteMatch(prefix="/")), egress_port=15001, admin_port=9901
    )
    direct = ec.bench_bootstrap(upstream_port=8080, egress_port=15001, admin_port=9901)
    rendered, expected = ec.render_bootstrap(from_snapshot), ec.render_bootstrap(direct)
    assert rendered == expected
    # Only clusters a route reaches are rendered.
    assert [c["name"] for c in rendered["static_resources"]["clusters"]] == [
        "cds_egress_bench_upstream_http_8080"
    ]


def test_snapshot_matches_map_to_envoy_matchers() -> None:
    match = RouteMatch(
        path_regex=re.compile(r"/v[0-9]+/.*"),
        method="POST",
        headers=(
            ValueMatch(name="x-canary", kind=StringMatchKind.EXACT, value="1"),
            ValueMatch(name="x-range", kind=StringMatchKind.RANGE, range_start=1, range_end=100, invert=True),
            ValueMatch(name="x-present", kind=StringMatchKind.PRESENT),
        ),
        query=(ValueMatch(name="debug", kind=StringMatchKind.EXACT, value="on"),),
    )
    retry = RetryPolicy(max_retries=3, per_try_timeout=0.5, retriable_statuses=frozenset({502, 503, 504}))
    rendered = ec.render_bootstrap(
        ec.bootstrap_from_snapshot(_snapshot(retry, match), egress_port=15001, admin_port=9901)
    )
    route = _hcm(rendered)["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"]["safe_regex"] == {"regex": r"/v[0-9]+/.*"}
    assert "prefix" not in route["match"]
    assert route["match"]["headers"] == [
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": "x-canary", "string_match": {"exact": "1"}},
        {"name": "x-range", "range_match": {"start": 1, "end": 100}, "invert_match": True},
        {"name": "x-present", "present_match": True},
    ]
    assert route["match"]["query_parameters"] == [{"name": "debug", "string_match": {"exact": "on"}}]
    policy = route["route"]["retry_policy"]
    assert policy["retry_on"] == "retriable-status-codes"
    assert policy["retriable_status_codes"] == [502, 503, 504]
    assert policy["per_try_timeout"] == "0.5s"
    assert policy["num_retries"] == 3


def test_snapshot_grpc_retry_events_get_envoy_names_on_grpc_routes_only() -> None:
    retry = RetryPolicy(max_retries=1, per_try_timeout=None, grpc_statuses=frozenset({14, 1}))
    assert ec.retry_from_snapshot(retry).retry_on == ("cancelled", "unavailable")
    assert ec.retry_from_snapshot(retry, grpc=False).retry_on == ()


def test_snapshot_route_without_retry_has_no_retry_policy() -> None:
    rendered = ec.render_bootstrap(
        ec.bootstrap_from_snapshot(
            _snapshot(None, RouteMatch(prefix="/")), egress_port=15001, admin_port=9901
        )
    )
    route = _hcm(rendered)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert "retry_policy" not in route


def test_snapshot_with_disabled_timeout_renders_zero() -> None:
    entry = ec.route_from_snapshot(
        RouteEntry(
            name="r",
            match=RouteMatch(prefix="/"),
            targets=(WeightedCluster("c", 1, "n"),),
            total_weight=1,
            retry=None,
            timeout=None,
            idle_timeout=None,
        )
    )
    assert entry.timeout is None
    cluster = ec.EnvoyCluster(name="c", endpoints=(("127.0.0.1", 1),), discovery="STATIC")
    bootstrap = ec.EgressBootstrap(
        node_id="n",
        admin_port=1,
        egress_port=2,
        virtual_hosts=(ec.EnvoyVirtualHost("v", ("v",), (entry,)),),
        clusters=(cluster,),
    )
    rendered = ec.render_bootstrap(bootstrap)
    assert _hcm(rendered)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] == "0s"
    assert "dns_lookup_family" not in rendered["static_resources"]["clusters"][0]


def _cluster_options(rendered: dict[str, Any]) -> dict[str, Any] | None:
    (cluster,) = rendered["static_resources"]["clusters"]
    options: dict[str, Any] | None = cluster.get("typed_extension_protocol_options")
    return options


@pytest.mark.parametrize("protocol", [mesh.MeshProtocol.HTTP2, mesh.MeshProtocol.GRPC])
def test_http2_and_grpc_nodes_get_an_http2_cluster(protocol: mesh.MeshProtocol) -> None:
    rendered = ec.render_bootstrap(
        ec.bench_bootstrap(upstream_port=8081, egress_port=15001, admin_port=9901, protocol=protocol)
    )
    options = _cluster_options(rendered)
    assert options is not None
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert http["@type"] == ec.HTTP_PROTOCOL_OPTIONS_TYPE
    assert http["explicit_http_config"] == {"http2_protocol_options": {}}
    cluster = rendered["static_resources"]["clusters"][0]["name"]
    assert cluster == f"cds_egress_bench_upstream_{protocol.value}_8081"
    assert _hcm(rendered)["codec_type"] == "AUTO"  # h2c prior knowledge downstream as well
    assert _cluster_options(_bench()) is None  # an http node stays HTTP/1.1


def test_grpc_route_default_retry_adds_unavailable() -> None:
    rendered = ec.render_bootstrap(
        ec.bench_bootstrap(
            upstream_port=8081, egress_port=15001, admin_port=9901, protocol=mesh.MeshProtocol.GRPC
        )
    )
    route = _hcm(rendered)["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["retry_policy"]["retry_on"].split(",")[-1] == "unavailable"
    http_route = _hcm(_bench())["route_config"]["virtual_hosts"][0]["routes"][0]
    assert "unavailable" not in http_route["route"]["retry_policy"]["retry_on"]


def test_telemetry_renders_app_mesh_access_log_and_xray() -> None:
    telemetry = ec.bench_telemetry(access_log_path="/tmp/a.log", xray_port=2999, sampling_rules="/tmp/r.json")
    rendered = ec.render_bootstrap(
        ec.bench_bootstrap(upstream_port=8080, egress_port=15001, admin_port=9901, telemetry=telemetry)
    )
    hcm = _hcm(rendered)
    (log,) = hcm["access_log"]
    assert log["name"] == "envoy.access_loggers.file"
    assert log["typed_config"] == {"@type": ec.FILE_ACCESS_LOG_TYPE, "path": "/tmp/a.log"}  # default format
    provider = hcm["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.xray"
    config = provider["typed_config"]
    assert config["daemon_endpoint"] == {"protocol": "UDP", "address": "127.0.0.1", "port_value": 2999}
    assert config["segment_name"] == "bench/client"
    assert config["sampling_rule_manifest"] == {"filename": "/tmp/r.json"}
    assert config["segment_fields"] == {
        "origin": "AWS::AppMesh::Proxy",
        "aws": {"app_mesh": {"mesh_name": "bench", "virtual_node_name": "client"}},
    }
    log_only = ec.render_bootstrap(
        ec.bench_bootstrap(
            upstream_port=8080,
            egress_port=15001,
            admin_port=9901,
            telemetry=ec.bench_telemetry(access_log_path="/tmp/a.log"),
        )
    )
    assert "tracing" not in _hcm(log_only)


def test_sampling_rules_manifest_is_the_agents() -> None:
    assert ec.sampling_rules_manifest(1.0) == {
        "version": 2,
        "default": {"fixed_target": 1, "rate": 1.0},
        "rules": [],
    }
    assert ec.sampling_rules_manifest(0.123)["default"]["rate"] == 0.12
    with pytest.raises(ec.EnvoyConfigError):
        ec.sampling_rules_manifest(1.5)


def test_tcp_bootstrap_is_an_ingress_tcp_proxy_to_the_local_app() -> None:
    bootstrap = ec.tcp_bootstrap(app_port=19000, ingress_port=15000, admin_port=9901)
    rendered = ec.render_tcp_bootstrap(bootstrap)
    (listener,) = rendered["static_resources"]["listeners"]
    assert listener["name"] == "lds_ingress_127.0.0.1_15000"
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    assert listener["traffic_direction"] == "INBOUND"
    (chain,) = listener["filter_chains"]
    (tcp,) = chain["filters"]
    assert tcp["name"] == "envoy.filters.network.tcp_proxy"
    assert tcp["typed_config"]["cluster"] == "cds_ingress_bench_client_tcp_19000"
    assert tcp["typed_config"]["stat_prefix"] == "ingress"
    assert tcp["typed_config"]["idle_timeout"] == "300s"
    (cluster,) = rendered["static_resources"]["clusters"]
    assert cluster["type"] == "STATIC"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19000}
    assert yaml.safe_load(ec.bootstrap_yaml(bootstrap)) == rendered
    with pytest.raises(ec.EnvoyConfigError, match="tcp_bootstrap"):
        ec.bench_bootstrap(upstream_port=1, egress_port=2, admin_port=3, protocol=mesh.MeshProtocol.TCP)


@pytest.mark.parametrize("protocol", [mesh.MeshProtocol.HTTP2, mesh.MeshProtocol.GRPC])
def test_compiled_http2_and_grpc_meshes_render_like_the_bench_bootstrap(
    protocol: mesh.MeshProtocol, tmp_path: Any
) -> None:
    config = tmp_path / "mesh.json"
    config.write_text(mesh.BenchMesh(upstream_port=8081, protocol=protocol).to_json())
    compiled = ec.bootstrap_from_config_file(
        str(config), mesh.CLIENT_RESOURCE_ARN, egress_port=15001, admin_port=9901
    )
    direct = ec.bench_bootstrap(upstream_port=8081, egress_port=15001, admin_port=9901, protocol=protocol)
    assert ec.render_bootstrap(compiled) == ec.render_bootstrap(direct)


def test_compiled_tcp_mesh_renders_like_the_tcp_bootstrap(tmp_path: Any) -> None:
    config = tmp_path / "mesh.json"
    config.write_text(mesh.BenchMesh(upstream_port=19000, protocol=mesh.MeshProtocol.TCP).to_json())
    snapshot = ec.compile_config_file(str(config), mesh.CLIENT_RESOURCE_ARN, egress_port=15001)
    compiled = ec.tcp_bootstrap_from_snapshot(snapshot, ingress_port=15000, admin_port=9901)
    direct = ec.tcp_bootstrap(app_port=19000, ingress_port=15000, admin_port=9901)
    assert ec.render_tcp_bootstrap(compiled) == ec.render_tcp_bootstrap(direct)
    http_config = tmp_path / "http.json"
    http_config.write_text(mesh.BenchMesh(upstream_port=8080).to_json())
    no_listener = ec.compile_config_file(str(http_config), mesh.CLIENT_RESOURCE_ARN, egress_port=15001)
    with pytest.raises(ec.EnvoyConfigError, match="ingress listener"):
        ec.tcp_bootstrap_from_snapshot(no_listener, ingress_port=15000, admin_port=9901)
