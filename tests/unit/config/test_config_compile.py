"""Compiling App Mesh resources for one identity into a Snapshot (spec §4.2-4.7)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from meshproxy.config.compile import DEFAULT_RETRY_POLICY, DEFAULT_TCP_RETRY_POLICY, compile_snapshot
from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document
from meshproxy.config.errors import ConfigError, Severity
from meshproxy.config.snapshot import (
    ENVOY_DEFAULT_LIMITS,
    CertificateSource,
    CloudMapDiscovery,
    ConnectionPoolLimits,
    DnsDiscovery,
    EgressFilter,
    HealthCheck,
    ListenerProtocol,
    OutlierDetection,
    PathRewrite,
    PeerValidation,
    RetryPolicy,
    RouteEntry,
    Snapshot,
    StaticDiscovery,
    StringMatchKind,
    TlsTermination,
    WeightedCluster,
)
from meshproxy.config.validate import validate
from meshproxy.settings import parse_identity

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"
Item = dict[str, Any]
SERVER_ERROR = frozenset({500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511})


def build(items: list[Item], node: str = "virtualNode/front", egress_port: int = 15001) -> Snapshot:
    read = read_document(items, source="test.json")
    resources, issues = validate(read.resources)
    assert [str(i) for i in read.issues + issues if i.severity is Severity.ERROR] == []
    identity = parse_identity({"APPMESH_RESOURCE_ARN": f"mesh/demo/{node}"})
    return compile_snapshot(resources, identity, version="v1", egress_port=egress_port)


def demo() -> list[Item]:
    return colour_mesh(9001, 9002, 9000)


def everything() -> list[Item]:
    items: list[Item] = json.loads((FIXTURES / "everything.json").read_text())
    return items + demo()[1:]


def colour_routes(snapshot: Snapshot) -> tuple[RouteEntry, ...]:
    return snapshot.egress_routes.by_domain["color.demo.local"].routes


def with_routes(*routes: tuple[str, dict[str, Any]]) -> list[Item]:
    items = demo()
    del items[5]  # the demo's color-route
    for name, spec in routes:
        items.append(
            {
                "route": {
                    "meshName": "demo",
                    "virtualRouterName": "color-router",
                    "routeName": name,
                    "spec": spec,
                }
            }
        )
    return items


def http(match: dict[str, Any], node: str = "blue", **extra: Any) -> dict[str, Any]:
    return {
        "httpRoute": {
            "match": match,
            "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]},
            **extra,
        }
    }


# --- the demo mesh ----------------------------------------------------------------------------------------


def test_demo_mesh_validates_and_compiles_for_front() -> None:
    snapshot = build(demo())
    assert snapshot.version == "v1"
    assert snapshot.identity.name == "front"
    assert snapshot.egress_filter is EgressFilter.DROP_ALL
    assert snapshot.backends == ("color.demo.local",)
    [ingress] = snapshot.ingress
    assert (ingress.port, ingress.protocol, ingress.cluster) == (
        9000,
        ListenerProtocol.HTTP,
        "cds_ingress_demo_front_http_9000",
    )
    assert (ingress.timeout, ingress.idle_timeout, ingress.tls) == (15.0, 300.0, None)
    table = snapshot.egress_routes
    assert table.name == "rds_egress_http_15001"
    [host] = table.virtual_hosts
    assert host.domains == ("color.demo.local", "color.demo.local:8080")
    assert dict(table.by_domain) == {"color.demo.local": host, "color.demo.local:8080": host}
    [route] = host.routes
    assert route.name == "color-router/color-route"
    assert route.match.prefix == "/"
    assert route.targets == (
        WeightedCluster("cds_egress_demo_blue_http_9001", 50, "blue"),
        WeightedCluster("cds_egress_demo_green_http_9002", 50, "green"),
    )
    assert route.total_weight == 100
    assert route.retry == RetryPolicy(
        max_retries=3,
        per_try_timeout=2.0,
        retriable_statuses=SERVER_ERROR,
        retry_on_reset=True,
        retry_on_connect_failure=True,
        retry_on_refused_stream=False,
    )
    assert (route.timeout, route.idle_timeout, route.virtual_service) == (15.0, 300.0, "color.demo.local")
    assert set(snapshot.clusters) == {
        "cds_ingress_demo_front_http_9000",
        "cds_egress_demo_blue_http_9001",
        "cds_egress_demo_green_http_9002",
    }
    blue = snapshot.clusters["cds_egress_demo_blue_http_9001"]
    assert blue.discovery == DnsDiscovery(hostname="127.0.0.1", port=9001)
    assert (blue.virtual_node, blue.connect_timeout, blue.limits) == ("blue", 1.0, ConnectionPoolLimits())
    local = snapshot.clusters["cds_ingress_demo_front_http_9000"]
    assert local.discovery == StaticDiscovery((("127.0.0.1", 9000),))
    assert isinstance(snapshot.clusters, MappingProxyType)
    assert isinstance(snapshot.tcp_routes, MappingProxyType)
    assert isinstance(table.by_domain, MappingProxyType)


def test_egress_port_names_the_route_table() -> None:
    assert build(demo(), egress_port=16001).egress_routes.name == "rds_egress_http_16001"


def test_compile_is_deterministic() -> None:
    assert build(demo()) == build(copy.deepcopy(demo()))


# --- match order ------------------------------------------------------------------------------------------


def test_priority_first_then_specificity() -> None:
    items = with_routes(
        ("catch-all", http({"prefix": "/"})),
        ("short", http({"prefix": "/ab"})),
        ("long", http({"prefix": "/api/v1"})),
        ("exact", http({"path": {"exact": "/x"}})),
        ("regex", http({"path": {"regex": "/items/[0-9]+/detail"}})),
        ("headers", http({"prefix": "/ab", "headers": [{"name": "x"}]})),
        ("b-tie", http({"prefix": "/t"})),
        ("a-tie", http({"prefix": "/t"})),
        ("p10", {"priority": 10, **http({"prefix": "/"})}),
        ("p0", {"priority": 0, **http({"prefix": "/"})}),
        ("p10-longer", {"priority": 10, **http({"prefix": "/zz"})}),
    )
    names = [route.name.split("/", 1)[1] for route in colour_routes(build(items))]
    assert names == [
        "p0",
        "p10-longer",
        "p10",
        "exact",
        "regex",
        "long",
        "headers",
        "short",
        "a-tie",
        "b-tie",
        "catch-all",
    ]
    assert [r.priority for r in colour_routes(build(items))][:3] == [0, 10, 10]


def test_grpc_specificity() -> None:
    items = demo()
    items[4]["virtualRouter"]["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    for index in (2, 3):
        items[index]["virtualNode"]["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    del items[5]
    target = {"weightedTargets": [{"virtualNode": "blue", "weight": 1}]}
    for name, match in (
        ("all", {}),
        ("service", {"serviceName": "a.B"}),
        ("method", {"serviceName": "a.B", "methodName": "C"}),
    ):
        items.append(
            {
                "route": {
                    "meshName": "demo",
                    "virtualRouterName": "color-router",
                    "routeName": name,
                    "spec": {"grpcRoute": {"match": match, "action": target}},
                }
            }
        )
    routes = colour_routes(build(items))
    assert [r.name for r in routes] == ["color-router/method", "color-router/service", "color-router/all"]
    assert (routes[0].match.grpc_service, routes[0].match.grpc_method) == ("a.B", "C")
    assert routes[0].protocol is ListenerProtocol.GRPC


# --- retries ----------------------------------------------------------------------------------------------


def test_route_without_policy_gets_the_default() -> None:
    route = colour_routes(build(with_routes(("r", http({"prefix": "/"})))))[0]
    assert route.retry is DEFAULT_RETRY_POLICY
    assert route.retry == RetryPolicy(
        max_retries=2,
        per_try_timeout=None,
        retriable_statuses=frozenset({503}),
        retry_on_reset=True,
        retry_on_connect_failure=True,
        retry_on_refused_stream=True,
        grpc_statuses=frozenset({14}),
        is_default=True,
    )


def retry_for(**policy: Any) -> RetryPolicy:
    body = {"maxRetries": 1, "perRetryTimeout": {"value": 1, "unit": "s"}, **policy}
    route = colour_routes(build(with_routes(("r", http({"prefix": "/"}, retryPolicy=body)))))[0]
    assert route.retry is not None
    return route.retry


@pytest.mark.parametrize(
    ("events", "statuses", "reset", "refused"),
    [
        (["server-error"], SERVER_ERROR, True, False),
        (["gateway-error"], frozenset({502, 503, 504}), True, False),
        (["client-error"], frozenset({409}), False, False),
        (["stream-error"], frozenset(), False, True),
        (["gateway-error", "client-error", "stream-error"], frozenset({409, 502, 503, 504}), True, True),
    ],
)
def test_http_retry_events(events: list[str], statuses: frozenset[int], reset: bool, refused: bool) -> None:
    retry = retry_for(httpRetryEvents=events)
    assert (retry.retriable_statuses, retry.retry_on_reset, retry.retry_on_refused_stream) == (
        statuses,
        reset,
        refused,
    )
    assert retry.retry_on_connect_failure is False
    assert retry.is_default is False


def test_tcp_retry_event_and_per_try_timeout() -> None:
    retry = retry_for(
        tcpRetryEvents=["connection-error"], perRetryTimeout={"value": 250, "unit": "ms"}, maxRetries=5
    )
    assert retry == RetryPolicy(max_retries=5, per_try_timeout=0.25, retry_on_connect_failure=True)
    assert (
        retry_for(httpRetryEvents=["server-error"], perRetryTimeout={"value": 0, "unit": "s"}).per_try_timeout
        is None
    )


def test_grpc_retry_events() -> None:
    items = everything()
    snapshot = build(items, node="virtualNode/client")
    routes = {r.name: r for r in snapshot.egress_routes.by_domain["api.demo.local"].routes}
    retry = routes["api-router/grpc-get"].retry
    assert retry is not None
    assert retry.grpc_statuses == frozenset({1, 4, 8, 13, 14})
    assert (retry.max_retries, retry.per_try_timeout) == (1, 1.0)
    assert routes["api-router/grpc-all"].retry is DEFAULT_RETRY_POLICY


# --- timeouts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (None, (15.0, 300.0)),
        ({}, (15.0, 300.0)),
        ({"perRequest": {"value": 0, "unit": "s"}}, (None, 300.0)),
        ({"idle": {"value": 0, "unit": "ms"}}, (15.0, None)),
        ({"perRequest": {"value": 1500, "unit": "ms"}, "idle": {"value": 2, "unit": "s"}}, (1.5, 2.0)),
    ],
)
def test_route_timeouts(timeout: dict[str, Any] | None, expected: tuple[float | None, float | None]) -> None:
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    route = colour_routes(build(with_routes(("r", http({"prefix": "/"}, **extra)))))[0]
    assert (route.timeout, route.idle_timeout) == expected


def test_listener_timeouts() -> None:
    snapshot = build(everything(), node="virtualNode/api")
    by_port = {listener.port: listener for listener in snapshot.ingress}
    assert (by_port[8443].timeout, by_port[8443].idle_timeout) == (None, 60.0)
    assert (by_port[50051].timeout, by_port[50051].idle_timeout) == (30.0, 300.0)
    db = build(everything(), node="virtualNode/db")
    assert (db.ingress[0].timeout, db.ingress[0].idle_timeout) == (None, None)  # tcp: no per-request; idle 0


# --- weights, clusters ------------------------------------------------------------------------------------


def test_weights_and_total() -> None:
    spec = http({"prefix": "/"})
    spec["httpRoute"]["action"]["weightedTargets"] = [
        {"virtualNode": "blue", "weight": 0},
        {"virtualNode": "green", "weight": 30},
    ]
    route = colour_routes(build(with_routes(("r", spec))))[0]
    assert [(t.virtual_node, t.weight) for t in route.targets] == [("blue", 0), ("green", 30)]
    assert route.total_weight == 30


def test_ingress_clusters_and_limits() -> None:
    api = build(everything(), node="virtualNode/api")
    assert api.clusters["cds_ingress_demo_api_http2_8443"].limits == ConnectionPoolLimits(max_requests=100)
    assert api.clusters["cds_ingress_demo_api_grpc_50051"].limits == ConnectionPoolLimits()
    db = build(everything(), node="virtualNode/db")
    assert db.clusters["cds_ingress_demo_db_tcp_5432"].limits == ConnectionPoolLimits(max_connections=10)
    items = demo()
    items[1]["virtualNode"]["spec"]["listeners"][0]["connectionPool"] = {
        "http": {"maxConnections": 7, "maxPendingRequests": 3}
    }
    front = build(items)
    assert front.clusters["cds_ingress_demo_front_http_9000"].limits == ConnectionPoolLimits(
        max_connections=7, max_pending_requests=3
    )


def test_egress_clusters_get_the_thresholds_the_proxy_runs_with() -> None:
    """App Mesh rendered every egress cluster unlimited (the compiler's default, as `meshproxy render` shows);
    the proxy compiles with Settings.egress_limits, Envoy's defaults (issue 14)."""
    read = read_document(everything(), source="test.json")
    resources, _ = validate(read.resources)
    identity = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo/virtualNode/client"})
    app_mesh = compile_snapshot(resources, identity, version="v1")
    envoy = compile_snapshot(resources, identity, version="v1", egress_limits=ENVOY_DEFAULT_LIMITS)
    egress = [name for name in app_mesh.clusters if name.startswith("cds_egress_")]
    assert egress
    assert {app_mesh.clusters[name].limits for name in egress} == {ConnectionPoolLimits()}
    assert {envoy.clusters[name].limits for name in egress} == {ConnectionPoolLimits(1024, 1024, 1024)}
    ingress = [name for name in app_mesh.clusters if name.startswith("cds_ingress_")]
    assert all(app_mesh.clusters[n].limits == envoy.clusters[n].limits for n in ingress)


def test_egress_clusters_from_target_nodes() -> None:
    snapshot = build(everything(), node="virtualNode/client")
    api = snapshot.clusters["cds_egress_demo_api_http2_8443"]
    assert api.discovery == CloudMapDiscovery(
        namespace="apps.local",
        service="api",
        port=8443,
        attributes=(("ECS_TASK_DEFINITION_FAMILY", "api"),),
        ip_preference="IPv4_PREFERRED",
    )
    assert api.outlier == OutlierDetection(
        max_server_errors=5, interval=10.0, base_ejection=30.0, max_ejection_percent=50
    )
    assert api.health_check == HealthCheck(
        protocol=ListenerProtocol.HTTP2,
        interval=10.0,
        timeout=2.0,
        healthy_threshold=2,
        unhealthy_threshold=3,
        path="/health",
        port=8443,
    )
    assert api.limits == ConnectionPoolLimits()  # pools apply at the destination's ingress
    db = snapshot.clusters["cds_egress_demo_db_tcp_5432"]
    assert db.discovery == DnsDiscovery(
        hostname="db.local", port=5432, response_type="ENDPOINTS", ip_preference="IPv4_ONLY"
    )
    assert snapshot.clusters["cds_egress_demo_api_grpc_50051"].protocol is ListenerProtocol.GRPC


def test_ipv6_preference_uses_ipv6_loopback_for_the_local_app() -> None:
    items = demo()
    items[0]["mesh"]["spec"]["serviceDiscovery"] = {"ipPreference": "IPv6_PREFERRED"}
    snapshot = build(items)
    assert snapshot.clusters["cds_ingress_demo_front_http_9000"].discovery == StaticDiscovery(
        (("::1", 9000),)
    )
    assert snapshot.clusters["cds_egress_demo_blue_http_9001"].discovery == DnsDiscovery(
        "127.0.0.1", 9001, ip_preference="IPv6_PREFERRED"
    )


# --- providers --------------------------------------------------------------------------------------------


def test_virtual_node_provider_gets_the_implicit_route() -> None:
    items = demo()
    items[6]["virtualService"]["spec"]["provider"] = {"virtualNode": {"virtualNodeName": "blue"}}
    snapshot = build(items)
    [host] = snapshot.egress_routes.virtual_hosts
    assert host.domains == ("color.demo.local", "color.demo.local:9001")
    [route] = host.routes
    assert route.name == "color.demo.local"
    assert route.match.prefix == "/" and route.match.port is None
    assert route.targets == (WeightedCluster("cds_egress_demo_blue_http_9001", 100, "blue"),)
    assert route.retry is DEFAULT_RETRY_POLICY
    assert (route.timeout, route.idle_timeout) == (15.0, 300.0)


def test_node_provider_with_several_listeners_routes_by_port() -> None:
    items = demo()
    items[2]["virtualNode"]["spec"]["listeners"].append({"portMapping": {"port": 9005, "protocol": "http2"}})
    items[2]["virtualNode"]["spec"]["listeners"].append({"portMapping": {"port": 9006, "protocol": "tcp"}})
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][0]["port"] = 9001
    items[6]["virtualService"]["spec"]["provider"] = {"virtualNode": {"virtualNodeName": "blue"}}
    snapshot = build(items)
    [host] = snapshot.egress_routes.virtual_hosts
    assert host.domains == ("color.demo.local", "color.demo.local:9001", "color.demo.local:9005")
    assert [(r.match.port, r.protocol, r.targets[0].cluster) for r in host.routes] == [
        (9001, ListenerProtocol.HTTP, "cds_egress_demo_blue_http_9001"),
        (9005, ListenerProtocol.HTTP2, "cds_egress_demo_blue_http2_9005"),
    ]
    tcp = snapshot.tcp_routes[9006]
    assert tcp.targets == (WeightedCluster("cds_egress_demo_blue_tcp_9006", 100, "blue"),)
    assert (tcp.retry, tcp.timeout, tcp.protocol) == (DEFAULT_TCP_RETRY_POLICY, None, ListenerProtocol.TCP)


def test_tcp_routes_and_unrouted_services() -> None:
    snapshot = build(everything(), node="virtualNode/client")
    assert sorted(snapshot.tcp_routes) == [5432, 6432]
    router_route = snapshot.tcp_routes[6432]
    assert router_route.name == "db-router/db-tcp"
    assert router_route.targets == (WeightedCluster("cds_egress_demo_db_tcp_5432", 100, "db"),)
    assert router_route.idle_timeout == 600.0
    assert snapshot.tcp_routes[5432].virtual_service == "db.demo.local"
    pending = snapshot.egress_routes.by_domain["pending.demo.local"]
    assert (pending.domains, pending.routes) == (("pending.demo.local",), ())
    assert "db.demo.local" not in snapshot.egress_routes.by_domain  # tcp only
    assert snapshot.egress_filter is EgressFilter.ALLOW_ALL


def test_two_backends_on_one_tcp_port_is_an_error() -> None:
    items = everything()
    router = next(i for i in items if i.get("virtualRouter", {}).get("virtualRouterName") == "db-router")
    router["virtualRouter"]["spec"]["listeners"][0]["portMapping"]["port"] = 5432
    with pytest.raises(ConfigError) as info:
        build(items, node="virtualNode/client")
    assert "TCP port 5432 is also served by 'db.demo.local'" in str(info.value)


# --- matches ----------------------------------------------------------------------------------------------


def test_match_compilation() -> None:
    snapshot = build(everything(), node="virtualNode/client")
    routes = {r.name: r for r in snapshot.egress_routes.by_domain["api.demo.local"].routes}
    v2 = routes["api-router/v2"].match
    assert (v2.prefix, v2.port) == ("/v2", 8443)
    headers = {h.name: h for h in v2.headers}
    assert list(headers) == ["x-version", "x-beta", "x-user", "x-id", "x-region", "x-tier"]  # lower-cased
    assert (headers["x-version"].kind, headers["x-version"].value) == (StringMatchKind.EXACT, "2")
    assert headers["x-beta"].kind is StringMatchKind.PRESENT
    assert headers["x-user"].kind is StringMatchKind.REGEX
    assert headers["x-user"].pattern == re.compile(".*admin")
    assert (headers["x-id"].range_start, headers["x-id"].range_end, headers["x-id"].invert) == (1, 100, True)
    assert (headers["x-region"].kind, headers["x-tier"].kind) == (
        StringMatchKind.SUFFIX,
        StringMatchKind.PREFIX,
    )
    query = {q.name: q for q in v2.query}
    assert (query["debug"].kind, query["debug"].value, query["trace"].kind) == (
        StringMatchKind.EXACT,
        "true",
        StringMatchKind.PRESENT,
    )
    health = routes["api-router/exact-health"].match
    assert (health.path_exact, health.method, health.scheme, health.prefix) == (
        "/healthz",
        "GET",
        "https",
        None,
    )
    items_route = routes["api-router/items"].match
    assert items_route.path_regex is not None and items_route.path_regex.fullmatch("/items/42")
    grpc = routes["api-router/grpc-get"].match
    assert [(m.name, m.kind, m.value) for m in grpc.headers] == [("tenant", StringMatchKind.PREFIX, "a")]


def test_access_log() -> None:
    api = build(everything(), node="virtualNode/api")
    assert api.access_log is not None
    assert api.access_log.path == "/dev/stdout"
    assert api.access_log.json_format == (("start", "%START_TIME%"), ("code", "%RESPONSE_CODE%"))
    assert build(demo()).access_log is None


def test_listener_tls_file_certificate() -> None:
    [tls_listener, _] = build(everything(), node="virtualNode/api").ingress
    assert tls_listener.tls is not None
    assert tls_listener.tls == TlsTermination(
        mode="STRICT",
        certificate=CertificateSource(certificate_chain="/certs/api.pem", private_key="/certs/api.key"),
        validation=PeerValidation(
            trust_file="/certs/ca.pem", subject_alternative_names=("client.demo.local",)
        ),
    )


# --- identity ---------------------------------------------------------------------------------------------


def test_unknown_identity_is_a_config_error() -> None:
    read = read_document(demo())
    resources, _ = validate(read.resources)
    for arn in ("mesh/demo/virtualNode/nope", "mesh/other/virtualNode/front", "mesh/demo/virtualGateway/gw"):
        with pytest.raises(ConfigError) as info:
            compile_snapshot(resources, parse_identity({"APPMESH_RESOURCE_ARN": arn}), version="v1")
        assert "not found in mesh" in str(info.value)
        assert arn in str(info.value)


def test_shared_mesh_owner_suffix_is_ignored_for_lookups() -> None:
    read = read_document(demo())
    resources, _ = validate(read.resources)
    identity = parse_identity({"APPMESH_RESOURCE_ARN": "mesh/demo@111122223333/virtualNode/front"})
    snapshot = compile_snapshot(resources, identity, version="v1")
    assert snapshot.ingress[0].cluster == "cds_ingress_demo_front_http_9000"


# --- virtual gateway --------------------------------------------------------------------------------------


def test_gateway_snapshot() -> None:
    snapshot = build(everything(), node="virtualGateway/ingress-gw")
    assert snapshot.ingress == ()
    assert snapshot.backends == ("color.demo.local", "api.demo.local")
    assert [v.name for v in snapshot.egress_routes.virtual_hosts] == ["color.demo.local", "api.demo.local"]
    http_listener, grpc_listener = snapshot.gateway
    assert (http_listener.port, http_listener.protocol) == (8088, ListenerProtocol.HTTP)
    assert http_listener.limits == ConnectionPoolLimits(max_connections=100, max_pending_requests=10)
    assert grpc_listener.limits == ConnectionPoolLimits(max_requests=50)
    assert http_listener.routes.name == "rds_gateway_http_8088"
    routes = {r.name: r for r in http_listener.routes.by_domain["*"].routes}
    assert list(routes) == ["ingress-gw/status", "ingress-gw/color", "ingress-gw/api-host"]
    color = routes["ingress-gw/color"]
    assert color.rewrite == PathRewrite(prefix="/paint/", hostname="color.demo.local:8080")
    assert color.targets == (WeightedCluster("cds_gateway_self_redirect_http_15001", 100, ""),)
    assert color.virtual_service == "color.demo.local"
    assert routes["ingress-gw/status"].rewrite == PathRewrite(exact="/", hostname="color.demo.local")
    api_host = routes["ingress-gw/api-host"]
    assert api_host.rewrite is None  # hostname and prefix rewrites DISABLED
    assert api_host.match.hostname_suffix == ".example.com"
    [grpc_route] = grpc_listener.routes.virtual_hosts[0].routes
    assert grpc_route.match.hostname_exact == "api.example.com"
    assert grpc_route.rewrite == PathRewrite(hostname="api.demo.local:50051")
    redirect = snapshot.clusters["cds_gateway_self_redirect_http_15001"]
    assert redirect.discovery == StaticDiscovery((("127.0.0.1", 15001),))
    assert redirect.connect_timeout == 0.25
    assert snapshot.access_log is not None and snapshot.access_log.text_format is not None


def test_gateway_default_prefix_rewrite() -> None:
    items = [
        *demo(),
        {
            "virtualGateway": {
                "meshName": "demo",
                "virtualGatewayName": "gw",
                "spec": {"listeners": [{"portMapping": {"port": 8088, "protocol": "http"}}]},
            }
        },
        {
            "gatewayRoute": {
                "meshName": "demo",
                "virtualGatewayName": "gw",
                "gatewayRouteName": "r",
                "spec": {
                    "httpRoute": {
                        "match": {"prefix": "/color"},
                        "action": {"target": {"virtualService": {"virtualServiceName": "color.demo.local"}}},
                    }
                },
            }
        },
    ]
    snapshot = build(items, node="virtualGateway/gw", egress_port=16001)
    [route] = snapshot.gateway[0].routes.virtual_hosts[0].routes
    assert route.rewrite == PathRewrite(prefix="/", hostname="color.demo.local")
    assert route.targets[0].cluster == "cds_gateway_self_redirect_http_16001"
    assert (route.timeout, route.retry) == (15.0, None)
