"""Validation of App Mesh resources: shapes and limits, per-resource rules, references, message format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshproxy.config.demo_mesh import colour_mesh
from meshproxy.config.dialects import read_document, read_file
from meshproxy.config.errors import Issue, Severity
from meshproxy.config.model import MeshResources
from meshproxy.config.snapshot import EgressFilter
from meshproxy.config.validate import validate

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "meshes"

Item = dict[str, Any]


def run(items: list[Item]) -> tuple[MeshResources, list[Issue]]:
    read = read_document(items, source="test.json")
    assert read.issues == []
    return validate(read.resources)


def errors(items: list[Item]) -> list[str]:
    return [str(i) for i in run(items)[1] if i.severity is Severity.ERROR]


def warnings(items: list[Item]) -> list[str]:
    return [str(i) for i in run(items)[1] if i.severity is Severity.WARNING]


def demo() -> list[Item]:
    return colour_mesh(9001, 9002, 9000)


def node(name: str, *listeners: tuple[int, str], mesh: str = "demo", **spec: Any) -> Item:
    body: dict[str, Any] = {
        "listeners": [{"portMapping": {"port": port, "protocol": protocol}} for port, protocol in listeners],
        **spec,
    }
    if listeners and "serviceDiscovery" not in spec:
        body["serviceDiscovery"] = {"dns": {"hostname": f"{name}.local"}}
    return {"virtualNode": {"meshName": mesh, "virtualNodeName": name, "spec": body}}


def router(name: str, *listeners: tuple[int, str]) -> Item:
    return {
        "virtualRouter": {
            "meshName": "demo",
            "virtualRouterName": name,
            "spec": {
                "listeners": [{"portMapping": {"port": p, "protocol": proto}} for p, proto in listeners]
            },
        }
    }


def route(name: str, spec: dict[str, Any], router_name: str = "color-router") -> Item:
    return {"route": {"meshName": "demo", "virtualRouterName": router_name, "routeName": name, "spec": spec}}


def http_route(**http: Any) -> dict[str, Any]:
    body = {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "blue", "weight": 1}]}}
    body.update(http)
    return {"httpRoute": body}


def service(name: str, provider: dict[str, Any] | None = None, mesh: str = "demo") -> Item:
    spec = {} if provider is None else {"provider": provider}
    return {"virtualService": {"meshName": mesh, "virtualServiceName": name, "spec": spec}}


def gateway(name: str, *listeners: tuple[int, str]) -> Item:
    return {
        "virtualGateway": {
            "meshName": "demo",
            "virtualGatewayName": name,
            "spec": {
                "listeners": [{"portMapping": {"port": p, "protocol": proto}} for p, proto in listeners]
            },
        }
    }


def gateway_route(name: str, spec: dict[str, Any], gateway_name: str = "gw") -> Item:
    return {
        "gatewayRoute": {
            "meshName": "demo",
            "virtualGatewayName": gateway_name,
            "gatewayRouteName": name,
            "spec": spec,
        }
    }


def http_gateway_route(match: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    return {
        "httpRoute": {
            "match": {"prefix": "/"} if match is None else match,
            "action": {"target": {"virtualService": {"virtualServiceName": "color.demo.local"}}, **action},
        }
    }


# --- clean configurations ---------------------------------------------------------------------------------


def test_demo_mesh_is_valid() -> None:
    resources, issues = run(demo())
    assert issues == []
    assert len(resources) == 7
    assert resources.mesh("demo") is not None
    assert [r.route_name for r in resources.routes_of("demo", "color-router")] == ["color-route"]


def test_fixture_files_are_valid() -> None:
    for name in ("colour-describe.json", "colour-objects.yaml"):
        read = read_file(str(FIXTURES / name))
        resources, issues = validate(read.resources)
        assert issues == [], name
        assert len(resources) == 8


def test_message_format_of_the_issue_example() -> None:
    read = read_file(str(FIXTURES / "invalid-route.json"))
    _, issues = validate(read.resources)
    assert (
        str(issues[0])
        == "route color-router/split: spec.httpRoute.action.weightedTargets[0].weight: 150 is not in 0..100"
    )
    assert issues[0].source.endswith("invalid-route.json")
    assert issues[0].located().endswith(f"invalid-route.json: error: {issues[0]}")


# --- shapes -----------------------------------------------------------------------------------------------


def test_every_shape_error_is_collected() -> None:
    items = demo()
    spec = items[5]["route"]["spec"]["httpRoute"]
    spec["action"]["weightedTargets"][0]["weight"] = 150
    spec["retryPolicy"]["httpRetryEvents"].append("bogus")
    spec["retryPolicy"]["perRetryTimeout"] = {"value": -1}
    items[1]["virtualNode"]["spec"]["listeners"][0]["portMapping"]["protocol"] = "udp"
    assert errors(items) == [
        "virtualNode front: spec.listeners[0].portMapping.protocol: 'udp' is not one of http, tcp, "
        "http2, grpc",
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].weight: 150 is "
        "not in 0..100",
        "route color-router/color-route: spec.httpRoute.retryPolicy.httpRetryEvents[2]: "
        "'bogus' is not one of server-error, gateway-error, client-error, stream-error",
        "route color-router/color-route: spec.httpRoute.retryPolicy.perRetryTimeout.unit: required "
        "member is missing",
        "route color-router/color-route: spec.httpRoute.retryPolicy.perRetryTimeout.value: -1 is not in >= 0",
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(priority=1001), "spec.priority: 1001 is not in 0..1000"),
        (lambda s: s["httpRoute"]["match"].update(port=0), "spec.httpRoute.match.port: 0 is not in 1..65535"),
        (
            lambda s: s["httpRoute"]["match"].update(method="FETCH"),
            "spec.httpRoute.match.method: 'FETCH' is not one of",
        ),
        (
            lambda s: s["httpRoute"]["match"].update(headers=[{"name": f"h{i}"} for i in range(11)]),
            "spec.httpRoute.match.headers: has 11 items; allowed 1..10",
        ),
        (
            lambda s: s["httpRoute"]["match"].update(queryParameters=[]),
            "spec.httpRoute.match.queryParameters: has 0 items; allowed 1..10",
        ),
        (
            lambda s: s["httpRoute"]["match"].update(headers=[{"name": "x" * 51}]),
            "spec.httpRoute.match.headers[0].name: length 51 is not in 1..50",
        ),
        (
            lambda s: s["httpRoute"]["match"].update(
                headers=[{"name": "x", "match": {"exact": "a", "prefix": "b"}}]
            ),
            "spec.httpRoute.match.headers[0].match: exactly one of exact, prefix, range, regex, suffix "
            "must be set "
            "(got exact, prefix)",
        ),
        (
            lambda s: s["httpRoute"]["action"].update(weightedTargets=[]),
            "spec.httpRoute.action.weightedTargets: has 0 items; allowed 1..10",
        ),
        (
            lambda s: s["httpRoute"]["action"].update(
                weightedTargets=[{"virtualNode": "blue", "weight": 1}] * 11
            ),
            "spec.httpRoute.action.weightedTargets: has 11 items; allowed 1..10",
        ),
        (
            lambda s: s["httpRoute"]["action"]["weightedTargets"][0].update(weight="50"),
            "spec.httpRoute.action.weightedTargets[0].weight: expected an integer, got a string '50'",
        ),
        (
            lambda s: s["httpRoute"]["action"]["weightedTargets"][0].update(weight=True),
            "spec.httpRoute.action.weightedTargets[0].weight: expected an integer, got a boolean True",
        ),
        (
            lambda s: s["httpRoute"]["action"]["weightedTargets"][0].pop("weight"),
            "spec.httpRoute.action.weightedTargets[0].weight: required member is missing",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"].update(
                tcpRetryEvents=["connection-error", "connection-error"]
            ),
            "spec.httpRoute.retryPolicy.tcpRetryEvents: has 2 items; allowed 1..1",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"].update(tcpRetryEvents=["reset"]),
            "spec.httpRoute.retryPolicy.tcpRetryEvents[0]: 'reset' is not one of connection-error",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"].update(httpRetryEvents=["server-error"] * 26),
            "spec.httpRoute.retryPolicy.httpRetryEvents: has 26 items; allowed 1..25",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"].pop("maxRetries"),
            "spec.httpRoute.retryPolicy.maxRetries: required member is missing",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"].update(maxRetries=-1),
            "spec.httpRoute.retryPolicy.maxRetries: -1 is not in >= 0",
        ),
        (
            lambda s: s["httpRoute"]["retryPolicy"]["perRetryTimeout"].update(unit="m"),
            "spec.httpRoute.retryPolicy.perRetryTimeout.unit: 'm' is not one of s, ms",
        ),
        (
            lambda s: s["httpRoute"].update(timeout={"perRequest": {"value": 1.5, "unit": "s"}}),
            "spec.httpRoute.timeout.perRequest.value: expected an integer, got a number 1.5",
        ),
        (
            lambda s: s["httpRoute"].update(match="/"),
            "spec.httpRoute.match: expected an object, got a string",
        ),
    ],
)
def test_route_shape_limits(mutate: Any, expected: str) -> None:
    items = demo()
    mutate(items[5]["route"]["spec"])
    found = errors(items)
    assert any(message.startswith(f"route color-router/color-route: {expected}") for message in found), found


def test_grpc_retry_events_limits() -> None:
    spec: dict[str, Any] = {
        "grpcRoute": {
            "match": {"serviceName": "svc.Color"},
            "action": {"weightedTargets": [{"virtualNode": "blue", "weight": 1}]},
            "retryPolicy": {
                "maxRetries": 1,
                "perRetryTimeout": {"value": 1, "unit": "s"},
                "grpcRetryEvents": [
                    "cancelled",
                    "deadline-exceeded",
                    "internal",
                    "resource-exhausted",
                    "unavailable",
                    "unavailable",
                ],
            },
        }
    }
    items = [*demo(), route("g", spec)]
    assert (
        "route color-router/g: spec.grpcRoute.retryPolicy.grpcRetryEvents: has 6 items; allowed 1..5"
        in errors(items)
    )
    spec["grpcRoute"]["retryPolicy"]["grpcRetryEvents"] = ["unknown"]
    assert any("grpcRetryEvents[0]: 'unknown' is not one of cancelled" in e for e in errors(items))


def test_names_and_envelope() -> None:
    items: list[Item] = [
        {"virtualNode": {"meshName": "demo", "virtualNodeName": "x" * 256, "spec": {}}},
        {"virtualNode": {"meshName": "demo", "spec": {}}},
        {"virtualService": {"meshName": "demo", "virtualServiceName": "", "spec": {}}},
        {"virtualRouter": {"meshName": "demo", "virtualRouterName": "r"}},
        {
            "virtualRouter": {
                "meshName": "demo",
                "virtualRouterName": "r2",
                "arn": "arn:aws:appmesh:...",
                "version": 1,
            }
        },
        {"mesh": {"meshName": "demo", "color": "blue"}},
    ]
    found = [str(i) for i in run(items)[1]]
    assert f"virtualNode {'x' * 256}: virtualNodeName: length 256 is not in 1..255" in found
    assert "virtualNode (unnamed): virtualNodeName: required member is missing" in found
    assert "virtualService (unnamed): virtualServiceName: empty" in found
    assert "virtualRouter r: spec: required member is missing" in found
    assert (
        "virtualRouter r2: spec: required member is missing "
        "(list-* output carries references only; export with describe-*)" in found
    )
    assert "mesh demo: color: unsupported field, ignored" in found


def test_unknown_fields_are_warnings_not_errors() -> None:
    items = demo()
    items[1]["virtualNode"]["spec"]["listeners"][0]["connectionLimit"] = 5
    items[1]["virtualNode"]["spec"]["futureFeature"] = {"on": True}
    resources, issues = run(items)
    assert [str(i) for i in issues] == [
        "virtualNode front: spec.futureFeature: unsupported field, ignored",
        "virtualNode front: spec.listeners[0].connectionLimit: unsupported field, ignored",
    ]
    assert all(i.severity is Severity.WARNING for i in issues)
    assert resources.virtual_node("demo", "front") is not None


def test_metadata_and_status_are_ignored() -> None:
    read = read_file(str(FIXTURES / "colour-describe.json"))
    assert "metadata" in read.resources[0].body
    assert validate(read.resources)[1] == []


# --- per-resource rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"prefix": "color"}, "spec.httpRoute.match.prefix: 'color' must start with '/'"),
        ({}, "spec.httpRoute.match: one of prefix, path must be set"),
        (
            {"prefix": "/", "path": {"exact": "/a"}},
            "spec.httpRoute.match: only one of prefix, path may be set",
        ),
        ({"path": {"exact": "a"}}, "spec.httpRoute.match.path.exact: 'a' must start with '/'"),
        ({"path": {}}, "spec.httpRoute.match.path: exactly one of exact, regex must be set"),
        (
            {"path": {"exact": "/a", "regex": "/b"}},
            "spec.httpRoute.match.path: exactly one of exact, regex must be set",
        ),
        ({"path": {"regex": "(("}}, "spec.httpRoute.match.path.regex: invalid regular expression"),
        (
            {"prefix": "/", "headers": [{"name": "x", "match": {"range": {"start": 5, "end": 5}}}]},
            "spec.httpRoute.match.headers[0].match.range: start 5 must be less than end 5",
        ),
        (
            {"prefix": "/", "headers": [{"name": "x", "match": {"regex": "[a-"}}]},
            "spec.httpRoute.match.headers[0].match.regex: invalid regular expression",
        ),
    ],
)
def test_http_match_rules(match: dict[str, Any], expected: str) -> None:
    items = demo()
    items[5]["route"]["spec"]["httpRoute"]["match"] = match
    found = errors(items)
    assert any(e.startswith(f"route color-router/color-route: {expected}") for e in found), found


def test_exactly_one_route_type() -> None:
    both = {**http_route(), "http2Route": http_route()["httpRoute"]}
    items = [*demo(), route("none", {"priority": 1}), route("both", both)]
    found = errors(items)
    assert (
        "route color-router/none: spec: exactly one of httpRoute, http2Route, grpcRoute, tcpRoute "
        "must be set (got none)" in found
    )
    assert (
        "route color-router/both: spec: exactly one of httpRoute, http2Route, grpcRoute, tcpRoute "
        "must be set (got httpRoute, http2Route)" in found
    )


def test_retry_policy_needs_an_event() -> None:
    items = demo()
    policy = items[5]["route"]["spec"]["httpRoute"]["retryPolicy"]
    del policy["httpRetryEvents"], policy["tcpRetryEvents"]
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.retryPolicy: "
        "at least one of httpRetryEvents, tcpRetryEvents must be set"
    ]


def test_grpc_method_needs_service() -> None:
    spec = {
        "grpcRoute": {
            "match": {"methodName": "Get"},
            "action": {"weightedTargets": [{"virtualNode": "blue", "weight": 1}]},
        }
    }
    items = [*demo(), route("g", spec)]
    assert "route color-router/g: spec.grpcRoute.match.methodName: requires serviceName" in errors(items)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (
            [{"virtualNode": "blue", "weight": 60}, {"virtualNode": "green", "weight": 60}],
            "spec.httpRoute.action.weightedTargets: weights sum to 120; App Mesh allows a total of "
            "at most 100",
        ),
        (
            [{"virtualNode": "blue", "weight": 0}, {"virtualNode": "green", "weight": 0}],
            "spec.httpRoute.action.weightedTargets: weights sum to 0; at least one target needs a "
            "weight above 0",
        ),
        (
            [{"virtualNode": "blue", "weight": 10}, {"virtualNode": "blue", "weight": 10}],
            "spec.httpRoute.action.weightedTargets[1]: virtual node 'blue' is already a target in "
            "weightedTargets[0]",
        ),
    ],
)
def test_weight_rules(targets: list[dict[str, Any]], expected: str) -> None:
    items = demo()
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"] = targets
    assert errors(items) == [f"route color-router/color-route: {expected}"]


def test_listener_rules() -> None:
    listener_spec = {
        "listeners": [
            {
                "portMapping": {"port": 8080, "protocol": "http"},
                "timeout": {"http2": {"idle": {"value": 1, "unit": "s"}}},
                "connectionPool": {"tcp": {"maxConnections": 5}},
                "healthCheck": {
                    "protocol": "http",
                    "intervalMillis": 5000,
                    "timeoutMillis": 2000,
                    "healthyThreshold": 2,
                    "unhealthyThreshold": 2,
                    "port": 9090,
                },
            },
            {"portMapping": {"port": 8080, "protocol": "tcp"}},
        ]
    }
    items = [{"virtualNode": {"meshName": "demo", "virtualNodeName": "n", "spec": listener_spec}}]
    assert errors(items) == [
        "virtualNode n: spec.listeners[0].timeout.http2: timeout is for http2 but the listener "
        "protocol is http",
        "virtualNode n: spec.listeners[0].connectionPool.tcp: connection pool is for tcp but the "
        "listener protocol is http",
        "virtualNode n: spec.listeners[0].healthCheck.port: 9090 must equal the listener port 8080",
        "virtualNode n: spec.listeners[1].portMapping.port: port 8080 is already used by listeners[0]",
        "virtualNode n: spec.serviceDiscovery: required when the virtual node has listeners",
    ]


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({"intervalMillis": 4999}, "intervalMillis: 4999 is not in 5000..300000"),
        ({"intervalMillis": 300001}, "intervalMillis: 300001 is not in 5000..300000"),
        ({"timeoutMillis": 1999}, "timeoutMillis: 1999 is not in 2000..60000"),
        ({"timeoutMillis": 60001}, "timeoutMillis: 60001 is not in 2000..60000"),
        ({"healthyThreshold": 1}, "healthyThreshold: 1 is not in 2..10"),
        ({"unhealthyThreshold": 11}, "unhealthyThreshold: 11 is not in 2..10"),
        ({"protocol": "udp"}, "protocol: 'udp' is not one of http, tcp, http2, grpc"),
    ],
)
def test_health_check_ranges(health: dict[str, Any], expected: str) -> None:
    check = {
        "protocol": "http",
        "intervalMillis": 5000,
        "timeoutMillis": 2000,
        "healthyThreshold": 2,
        "unhealthyThreshold": 2,
        **health,
    }
    items = demo()
    items[2]["virtualNode"]["spec"]["listeners"][0]["healthCheck"] = check
    assert errors(items) == [f"virtualNode blue: spec.listeners[0].healthCheck.{expected}"]


def test_outlier_detection_and_pools() -> None:
    items = demo()
    listener = items[2]["virtualNode"]["spec"]["listeners"][0]
    listener["outlierDetection"] = {
        "maxServerErrors": 0,
        "interval": {"value": 10, "unit": "s"},
        "baseEjectionDuration": {"value": 30, "unit": "s"},
        "maxEjectionPercent": 101,
    }
    listener["connectionPool"] = {"http": {"maxConnections": 0}}
    assert errors(items) == [
        "virtualNode blue: spec.listeners[0].connectionPool.http.maxConnections: 0 is not in >= 1",
        "virtualNode blue: spec.listeners[0].outlierDetection.maxEjectionPercent: 101 is not in 0..100",
        "virtualNode blue: spec.listeners[0].outlierDetection.maxServerErrors: 0 is not in >= 1",
    ]


def test_acm_is_unsupported_and_sds_is_accepted() -> None:
    items = demo()
    listener = items[2]["virtualNode"]["spec"]["listeners"][0]
    listener["tls"] = {"mode": "STRICT", "certificate": {"acm": {"certificateArn": "arn:aws:acm:1"}}}
    items[3]["virtualNode"]["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": {"sds": {"secretName": "spiffe://x"}},
    }
    items[1]["virtualNode"]["spec"]["backendDefaults"] = {
        "clientPolicy": {
            "tls": {"validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:aws:acm-pca:1"]}}}}
        }
    }
    _, issues = run(items)
    found = {str(i): i.severity for i in issues}
    blue = "virtualNode blue: spec.listeners[0].tls.certificate.acm: ACM certificates are not supported"
    assert any(k.startswith(blue) and v is Severity.ERROR for k, v in found.items()), found
    assert not any(k.startswith("virtualNode green") for k in found), found
    front = (
        "virtualNode front: spec.backendDefaults.clientPolicy.tls.validation.trust.acm: ACM "
        "certificate authorities"
    )
    assert any(k.startswith(front) and v is Severity.ERROR for k, v in found.items()), found


# --- references -------------------------------------------------------------------------------------------


def test_reference_errors() -> None:
    items = demo()
    items[1]["virtualNode"]["spec"]["backends"].append(
        {"virtualService": {"virtualServiceName": "nope.local"}}
    )
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][1]["virtualNode"] = "purple"
    items.append(route("orphan", http_route(), router_name="no-router"))
    items.append(service("a.local", {"virtualNode": {"virtualNodeName": "ghost"}}))
    items.append(service("b.local", {"virtualRouter": {"virtualRouterName": "ghost-router"}}))
    assert errors(items) == [
        "virtualNode front: spec.backends[1].virtualService.virtualServiceName: "
        "virtual service 'nope.local' not found in mesh 'demo'",
        "virtualService a.local: spec.provider.virtualNode.virtualNodeName: virtual node 'ghost' "
        "not found in mesh 'demo'",
        "virtualService b.local: spec.provider.virtualRouter.virtualRouterName: "
        "virtual router 'ghost-router' not found in mesh 'demo'",
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[1].virtualNode: "
        "virtual node 'purple' not found in mesh 'demo'",
        "route no-router/orphan: virtualRouterName: virtual router 'no-router' not found in mesh 'demo'",
    ]


def test_references_stay_inside_their_mesh() -> None:
    items = [
        *demo(),
        node("blue", (80, "http"), mesh="other"),
        service("x.local", {"virtualNode": {"virtualNodeName": "front"}}, mesh="other"),
    ]
    assert errors(items) == [
        "virtualService x.local: spec.provider.virtualNode.virtualNodeName: virtual node 'front' "
        "not found in mesh 'other'"
    ]


def test_target_ports() -> None:
    items = demo()
    items[2] = node("blue", (9001, "http"), (9003, "http"))
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].port: "
        "required: virtual node 'blue' has several listeners (9001, 9003)"
    ]
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][0]["port"] = 9999
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].port: "
        "9999 is not a listener port of virtual node 'blue' (9001, 9003)"
    ]
    items[5]["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][0]["port"] = 9003
    assert errors(items) == []


def test_target_without_listeners() -> None:
    items = demo()
    items[2] = node("blue")
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].virtualNode: "
        "virtual node 'blue' has no listeners to route to"
    ]


def test_target_protocol_mismatch_is_a_warning() -> None:
    items = demo()
    items[2] = node("blue", (9001, "grpc"))
    assert errors(items) == []
    assert warnings(items) == [
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].virtualNode: "
        "virtual node 'blue' listens with grpc on 9001, the route is http"
    ]


def test_route_against_router_listeners() -> None:
    items = demo()
    items[4] = router("color-router", (8080, "http"), (8081, "http"))
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.match.port: "
        "required: virtual router 'color-router' has several listeners (http 8080, http 8081)"
    ]
    items[5]["route"]["spec"]["httpRoute"]["match"]["port"] = 9000
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.match.port: "
        "9000 is not a listener port of virtual router 'color-router' (8080, 8081)"
    ]
    items[4] = router("color-router", (8080, "http2"))
    del items[5]["route"]["spec"]["httpRoute"]["match"]["port"]
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute: "
        "virtual router 'color-router' has no http listener for this route (listeners: http2 8080)"
    ]


def test_duplicates_across_sources() -> None:
    first = read_document(demo(), source="a.json")
    second = read_document(demo()[1:2], source="b.json")
    _, issues = validate([*first.resources, *second.resources])
    assert [i.located() for i in issues] == [
        "b.json: error: virtualNode front: item [0]: defined more than once (also in a.json)"
    ]


def test_implicit_mesh() -> None:
    items = demo()[1:]
    resources, issues = run(items)
    assert [str(i) for i in issues] == [
        "mesh demo: not defined; assuming App Mesh's defaults (egressFilter DROP_ALL)"
    ]
    mesh = resources.mesh("demo")
    assert mesh is not None and mesh.implicit and mesh.egress_filter is EgressFilter.DROP_ALL
    assert len(resources) == 6  # the implicit mesh is not counted


def test_one_error_does_not_cascade() -> None:
    """A node with a broken listener is left out, but routes that target it do not report it missing."""
    items = demo()
    items[2]["virtualNode"]["spec"]["listeners"][0]["portMapping"]["port"] = 70000
    resources, issues = run(items)
    assert [str(i) for i in issues] == [
        "virtualNode blue: spec.listeners[0].portMapping.port: 70000 is not in 1..65535"
    ]
    assert resources.virtual_node("demo", "blue") is None


def test_valid_parts_of_a_broken_resource_are_still_checked() -> None:
    items = demo()
    spec = items[5]["route"]["spec"]["httpRoute"]
    spec["match"]["prefix"] = "color"
    spec["action"]["weightedTargets"][0]["weight"] = 150  # the list loses item 0 in the cleaned copy
    spec["action"]["weightedTargets"][1]["virtualNode"] = "purple"  # not reported at the wrong index
    assert errors(items) == [
        "route color-router/color-route: spec.httpRoute.action.weightedTargets[0].weight: 150 is "
        "not in 0..100",
        "route color-router/color-route: spec.httpRoute.match.prefix: 'color' must start with '/'",
    ]


# --- virtual gateways -------------------------------------------------------------------------------------


def gateway_items(*routes: Item) -> list[Item]:
    return [*demo(), gateway("gw", (8443, "http")), *routes]


def test_gateway_route_valid() -> None:
    assert run(gateway_items(gateway_route("r", http_gateway_route())))[1] == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            http_gateway_route({"prefix": "/aws-appmesh/x"}),
            "spec.httpRoute.match.prefix: '/aws-appmesh/x' is reserved by App Mesh (/aws-appmesh*, "
            "/aws-app-mesh*)",
        ),
        (
            http_gateway_route({"prefix": "/aws-app-mesh"}),
            "spec.httpRoute.match.prefix: '/aws-app-mesh' is reserved",
        ),
        (http_gateway_route({"prefix": "api"}), "spec.httpRoute.match.prefix: 'api' must start with '/'"),
        (
            http_gateway_route({"prefix": "/", "hostname": {"exact": "a", "suffix": "b"}}),
            "spec.httpRoute.match.hostname: exactly one of exact, suffix must be set",
        ),
        (
            http_gateway_route({"path": {"exact": "/a"}}, rewrite={"prefix": {"defaultPrefix": "DISABLED"}}),
            "spec.httpRoute.action.rewrite.prefix: a prefix rewrite needs a prefix match",
        ),
        (
            http_gateway_route(rewrite={"prefix": {"defaultPrefix": "DISABLED", "value": "/v2/"}}),
            "spec.httpRoute.action.rewrite.prefix: only one of defaultPrefix, value may be set",
        ),
        (
            http_gateway_route(rewrite={"path": {"exact": "/x"}}),
            "spec.httpRoute.action.rewrite.path: a path rewrite needs a path match (exact or regex)",
        ),
        (
            {
                "grpcRoute": {
                    "match": {"serviceName": "aws.appmesh.Health"},
                    "action": {"target": {"virtualService": {"virtualServiceName": "color.demo.local"}}},
                }
            },
            "spec.grpcRoute.match.serviceName: 'aws.appmesh.Health' is reserved by App Mesh",
        ),
        ({"priority": 1}, "spec: exactly one of httpRoute, http2Route, grpcRoute must be set (got none)"),
    ],
)
def test_gateway_route_rules(spec: dict[str, Any], expected: str) -> None:
    found = errors(gateway_items(gateway_route("r", spec)))
    assert any(e.startswith(f"gatewayRoute gw/r: {expected}") for e in found), found


def test_gateway_route_references() -> None:
    missing_service = http_gateway_route()
    missing_service["httpRoute"]["action"]["target"]["virtualService"]["virtualServiceName"] = "nope.local"
    bad_port = http_gateway_route()
    bad_port["httpRoute"]["action"]["target"]["port"] = 9999
    items = gateway_items(
        gateway_route("a", missing_service),
        gateway_route("b", bad_port),
        gateway_route("c", http_gateway_route(), gateway_name="no-gw"),
    )
    assert errors(items) == [
        "gatewayRoute gw/a: spec.httpRoute.action.target.virtualService.virtualServiceName: "
        "virtual service 'nope.local' not found in mesh 'demo'",
        "gatewayRoute gw/b: spec.httpRoute.action.target.port: "
        "9999 is not a listener port of the provider of 'color.demo.local' (8080)",
        "gatewayRoute no-gw/c: virtualGatewayName: virtual gateway 'no-gw' not found in mesh 'demo'",
    ]


def test_gateway_listener_rules() -> None:
    items = [*demo(), gateway("gw", (8443, "tcp")), gateway("empty")]
    found = errors(items)
    assert (
        "virtualGateway gw: spec.listeners[0].portMapping.protocol: 'tcp' is not one of http, http2, grpc"
        in found
    )
    assert "virtualGateway empty: spec.listeners: a virtual gateway needs at least one listener" in found
