"""Envoy stat names, tag extraction and App Mesh fixed tags (spec §5.1)."""

from __future__ import annotations

from collections.abc import Callable

from meshproxy.config.snapshot import Identity
from meshproxy.settings import Settings
from meshproxy.telemetry.names import StatKind, StatNaming, StatPoint, collect, fixed_tags
from meshproxy.telemetry.stats import SERVER_STAT_NAMES, ServerStats, StatsStore

CLUSTER = "cds_egress_apps_serviceB_http_9080"


def points_by_full_name(store: StatsStore, naming: StatNaming | None = None) -> dict[str, StatPoint]:
    return {p.name.full: p for p in collect(store, naming or StatNaming())}


def test_cluster_counters_gauges_and_histogram_are_named_and_tagged() -> None:
    store = StatsStore()
    c = store.cluster(CLUSTER)
    c.upstream_rq_total = 3
    c.upstream_cx_active = 2
    c.upstream_rq_time.record(12)
    points = points_by_full_name(store)

    total = points[f"cluster.{CLUSTER}.upstream_rq_total"]
    assert total.kind is StatKind.COUNTER and total.value == 3
    assert total.name.extracted == "cluster.upstream_rq_total"
    assert total.name.tags == (("envoy.cluster_name", CLUSTER),)

    active = points[f"cluster.{CLUSTER}.upstream_cx_active"]
    assert active.kind is StatKind.GAUGE and active.value == 2

    hist = points[f"cluster.{CLUSTER}.upstream_rq_time"]
    assert hist.kind is StatKind.HISTOGRAM and hist.histogram is c.upstream_rq_time
    assert hist.name.extracted == "cluster.upstream_rq_time"


def test_response_codes_render_per_code_and_per_class_with_envoy_tags() -> None:
    store = StatsStore()
    c = store.cluster(CLUSTER)
    for status in (200, 200, 204, 503):
        c.count_response(status)
    points = points_by_full_name(store)

    code = points[f"cluster.{CLUSTER}.upstream_rq_200"]
    assert code.value == 2
    assert code.name.extracted == "cluster.upstream_rq"
    assert code.name.tags == (("envoy.response_code", "200"), ("envoy.cluster_name", CLUSTER))

    klass = points[f"cluster.{CLUSTER}.upstream_rq_2xx"]
    assert klass.value == 3
    assert klass.name.extracted == "cluster.upstream_rq_xx"
    assert klass.name.tags == (("envoy.response_code_class", "2"), ("envoy.cluster_name", CLUSTER))

    assert points[f"cluster.{CLUSTER}.upstream_rq_5xx"].value == 1
    # Envoy creates a cluster's class counters on first use: no 4xx response, no upstream_rq_4xx.
    assert f"cluster.{CLUSTER}.upstream_rq_4xx" not in points


def test_response_code_extractors_leave_other_stats_alone() -> None:
    store = StatsStore()
    store.cluster(CLUSTER)
    store.http_conn_manager("ingress")
    for point in collect(store, StatNaming()):
        if point.name.full.endswith(("_rq_total", "_rq_time", "rq_total", "_rq_timeout", "_rq_http1_total")):
            assert all(
                k not in ("envoy.response_code", "envoy.response_code_class") for k, _ in point.name.tags
            )


def test_http_conn_manager_prefixes_single_and_multi_listener() -> None:
    store = StatsStore()
    store.http_conn_manager("ingress").count_response(200)
    store.http_conn_manager("egress").downstream_rq_total = 4
    store.http_conn_manager("ingress.http.8080").count_response(503)
    points = points_by_full_name(store)

    single = points["http.ingress.downstream_rq_2xx"]
    assert single.name.extracted == "http.downstream_rq_xx"
    assert single.name.tags == (
        ("envoy.response_code_class", "2"),
        ("envoy.http_conn_manager_prefix", "ingress"),
    )

    egress = points["http.egress.downstream_rq_total"]
    assert egress.value == 4
    assert egress.name.tags == (("envoy.http_conn_manager_prefix", "egress"),)

    # App Mesh's multi-listener prefix `ingress.<protocol>.<port>` (UG metrics example).
    multi = points["http.ingress.http.8080.downstream_rq_5xx"]
    assert multi.name.extracted == "http.downstream_rq_xx"
    assert dict(multi.name.tags) == {
        "envoy.response_code_class": "5",
        "envoy.http_conn_manager_prefix": "ingress",
        "appmesh.listener_protocol": "http",
        "appmesh.listener_port": "8080",
    }
    # The connection manager always has its five classes, as Envoy declares them statically.
    for d in "12345":
        assert points[f"http.egress.downstream_rq_{d}xx"].value == 0


def test_listener_and_tcp_scopes() -> None:
    store = StatsStore()
    store.listener("0.0.0.0_15000").downstream_cx_total = 7
    store.tcp_proxy("egress.tcp.3306").downstream_cx_total = 1
    points = points_by_full_name(store)

    listener = points["listener.0.0.0.0_15000.downstream_cx_total"]
    assert listener.value == 7
    assert listener.name.extracted == "listener.downstream_cx_total"
    assert listener.name.tags == (("envoy.listener_address", "0.0.0.0_15000"),)
    assert points["listener.0.0.0.0_15000.downstream_cx_active"].kind is StatKind.GAUGE

    tcp = points["tcp.egress.tcp.3306.downstream_cx_total"]
    assert tcp.name.extracted == "tcp.downstream_cx_total"
    assert tcp.name.tags == (("envoy.tcp_prefix", "egress.tcp.3306"),)


def test_tls_stats_exist_only_where_tls_is_spoken_and_carry_envoys_names() -> None:
    store = StatsStore()
    store.cluster("cds_egress_apps_plain_http_80")
    store.listener("0.0.0.0_15001")
    assert not any(".ssl." in name or "ssl_socket_factory" in name for name in points_by_full_name(store))
    cluster_tls, listener_tls = store.cluster(CLUSTER).tls(), store.listener("0.0.0.0_15000").tls()
    cluster_tls.count_handshake("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2")
    listener_tls.count_handshake("TLS_AES_128_GCM_SHA256", "TLSv1.3")
    listener_tls.fail_verify_san = 2
    listener_tls.downstream_context_secrets_not_ready = 1
    points = points_by_full_name(store)

    san = points["listener.0.0.0.0_15000.ssl.fail_verify_san"]
    assert (san.value, san.name.extracted) == (2, "listener.ssl.fail_verify_san")
    assert san.name.tags == (("envoy.listener_address", "0.0.0.0_15000"),)
    assert points[f"cluster.{CLUSTER}.ssl.handshake"].value == 1
    factory = points["listener.0.0.0.0_15000.server_ssl_socket_factory.downstream_context_secrets_not_ready"]
    assert factory.value == 1
    assert f"cluster.{CLUSTER}.client_ssl_socket_factory.ssl_context_update_by_sds" in points
    # the negotiated values become tags, as Envoy 1.40 extracts them
    cipher = points[f"cluster.{CLUSTER}.ssl.ciphers.ECDHE-ECDSA-AES128-GCM-SHA256"]
    assert cipher.name.extracted == "cluster.ssl.ciphers"
    assert cipher.name.tags == (
        ("cipher_suite", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("envoy.cluster_name", CLUSTER),
    )
    version = points["listener.0.0.0.0_15000.ssl.versions.TLSv1.3"]
    assert version.name.extracted == "listener.ssl.versions"
    assert version.name.tags == (
        ("envoy.ssl_version", "TLSv1.3"),
        ("envoy.listener_address", "0.0.0.0_15000"),
    )
    listener_cipher = points["listener.0.0.0.0_15000.ssl.ciphers.TLS_AES_128_GCM_SHA256"]
    assert listener_cipher.name.tags[0] == ("envoy.ssl_cipher", "TLS_AES_128_GCM_SHA256")
    store.reset_counters()
    assert points_by_full_name(store)[f"cluster.{CLUSTER}.ssl.handshake"].value == 0


def test_server_scope_uses_declared_envoy_names() -> None:
    store = StatsStore()
    store.server.control_plane_connected_state = 1
    store.server.cluster_manager_cds_update_success = 2
    points = points_by_full_name(store)
    assert points["control_plane.connected_state"].value == 1
    assert points["control_plane.connected_state"].kind is StatKind.GAUGE
    assert points["cluster_manager.cds.update_success"].kind is StatKind.COUNTER
    assert points["meshproxy.telemetry.dropped_total"].name.tags == ()


def test_every_server_field_has_an_envoy_name() -> None:
    fields = {name for name, _ in ServerStats().counters()} | {name for name, _ in ServerStats().gauges()}
    assert fields == set(SERVER_STAT_NAMES)


def test_outlier_detection_stats_keep_envoy_dotted_names() -> None:
    store = StatsStore()
    store.cluster(CLUSTER).outlier_detection_ejections_active = 1
    points = points_by_full_name(store)
    active = points[f"cluster.{CLUSTER}.outlier_detection.ejections_active"]
    assert active.kind is StatKind.GAUGE and active.value == 1


def test_fixed_tags_for_stats_tags_and_metric_extension(
    make_settings: Callable[..., Settings], gateway: Identity
) -> None:
    assert fixed_tags(make_settings()) == ()
    assert fixed_tags(make_settings(stats_tags=True)) == (
        ("appmesh.mesh", "apps"),
        ("appmesh.virtual_node", "serviceA"),
    )
    assert fixed_tags(make_settings(identity=gateway, stats_tags=True, metric_extension_version=1)) == (
        ("appmesh.mesh", "apps"),
        ("appmesh.virtual_gateway", "edge"),
        ("Mesh", "apps"),
        ("VirtualGateway", "edge"),
    )


def test_shared_mesh_owner_suffix_is_not_part_of_the_mesh_tag(make_settings: Callable[..., Settings]) -> None:
    shared = Identity(
        "mesh/apps@111122223333/virtualNode/a", "apps@111122223333", make_settings().identity.kind, "a", "x"
    )
    assert fixed_tags(make_settings(identity=shared, stats_tags=True))[0] == ("appmesh.mesh", "apps")


def test_metric_extension_points(make_settings: Callable[..., Settings]) -> None:
    store = StatsStore()
    store.listener("0.0.0.0_15000").downstream_cx_total = 5
    store.listener("0.0.0.0_15000").downstream_cx_active = 2
    store.listener("0.0.0.0_15001").downstream_cx_total = 100  # egress: not inbound
    ingress = store.http_conn_manager("ingress")
    ingress.downstream_rq_total = 9
    ingress.downstream_cx_rx_bytes_total, ingress.downstream_cx_tx_bytes_total = 10, 20
    store.http_conn_manager("ingress.grpc.9090").downstream_rq_total = 4  # gRPC from the prefix
    store.http_conn_manager("egress").downstream_rq_total = 50
    store.http_protocols["ingress"] = "http2"
    target = store.target("serviceb.apps.local", "serviceB")
    target.request_count_per_target = 3
    target.count_response(201)
    target.count_response(404)
    target.target_response_time.record(7)

    points = points_by_full_name(store, StatNaming.from_settings(make_settings(metric_extension_version=1)))
    assert points["appmesh.NewConnectionCount"].value == 5
    assert points["appmesh.ActiveConnectionCount"].value == 2
    assert points["appmesh.ActiveConnectionCount"].kind is StatKind.GAUGE
    assert points["appmesh.RequestCount"].value == 13
    assert points["appmesh.GrpcRequestCount"].value == 4
    assert points["appmesh.ProcessedBytes"].value == 30

    full = "appmesh.TargetVirtualNode.serviceB.TargetVirtualService.serviceb.apps.local."
    per_target = points[full + "RequestCountPerTarget"]
    assert per_target.value == 3
    assert per_target.name.extracted == "appmesh.RequestCountPerTarget"
    assert dict(per_target.name.tags) == {
        "TargetVirtualNode": "serviceB",
        "TargetVirtualService": "serviceb.apps.local",
    }
    assert points[full + "HTTPCode_Target_2XX_Count"].value == 1
    assert points[full + "HTTPCode_Target_4XX_Count"].value == 1
    assert points[full + "TargetResponseTime"].kind is StatKind.HISTOGRAM

    # GrpcRequestCount also follows the protocol the data plane declared for a prefix.
    store.http_protocols["ingress"] = "grpc"
    points = points_by_full_name(store, StatNaming.from_settings(make_settings(metric_extension_version=1)))
    assert points["appmesh.GrpcRequestCount"].value == 13


def test_metric_extension_off_has_no_appmesh_points(make_settings: Callable[..., Settings]) -> None:
    store = StatsStore()
    store.target("vs", "vn").request_count_per_target = 1
    names = points_by_full_name(store, StatNaming.from_settings(make_settings()))
    assert not [n for n in names if n.startswith("appmesh.")]


def test_gateway_listeners_are_all_inbound(make_settings: Callable[..., Settings], gateway: Identity) -> None:
    store = StatsStore()
    store.listener("0.0.0.0_15001").downstream_cx_total = 3  # a gateway may listen on any port
    naming = StatNaming.from_settings(make_settings(identity=gateway, metric_extension_version=1))
    assert points_by_full_name(store, naming)["appmesh.NewConnectionCount"].value == 3


def test_tls_scopes_add_up_across_workers() -> None:
    from meshproxy.telemetry.aggregate import merge_stores

    one, two = StatsStore(), StatsStore()
    one.cluster(CLUSTER).tls().count_handshake("A", "TLSv1.2")
    two.cluster(CLUSTER).tls().count_handshake("A", "TLSv1.2")
    two.cluster(CLUSTER).tls().fail_verify_error = 3
    two.listener("0.0.0.0_15000").tls().handshake = 5  # a scope only one worker has
    total = merge_stores(StatsStore(), [one, two])
    cluster = total.cluster(CLUSTER).ssl
    assert cluster is not None and (cluster.handshake, cluster.fail_verify_error) == (2, 3)
    assert cluster.ciphers == {"A": 2} and cluster.versions == {"TLSv1.2": 2}
    listener = total.listener("0.0.0.0_15000").ssl
    assert listener is not None and listener.handshake == 5
