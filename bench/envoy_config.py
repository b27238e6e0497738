"""Envoy v3 bootstrap equivalent to what App Mesh rendered for the bench mesh's client node.

The renderer itself lives in meshproxy (`meshproxy.config.envoy`, which also serves `/config_dump`); this
module adds the bench's own pieces:

- `bench_bootstrap`: the bench mesh (bench/mesh.py) from its key values, with App Mesh's defaults (spec §4.5:
  default retry policy, 15 s route timeout, circuit breakers at 2147483647);
- `tcp_bootstrap`: the `tcp` variant, an ingress tcp_proxy listener to the local app's cluster;
- `compile_config_file` / `bootstrap_from_config_file`: an App Mesh file compiled by meshproxy and rendered
  for Envoy, so Envoy and meshproxy run the very same compiled routes;
- `bench_telemetry`: access log and X-Ray for the bench's node (spec §5.4, §5.5).

The HTTP protocols of the bench mesh differ only where App Mesh's rendering does: an http2 or grpc upstream
node makes its cluster speak HTTP/2 (`http2_protocol_options`), and a grpc route's default retry policy adds
`unavailable` (spec §4.5).
"""

from __future__ import annotations

from pathlib import Path

from bench import mesh
from meshproxy.config.envoy import (
    APPMESH_DEFAULT_GRPC_RETRY,
    APPMESH_DEFAULT_RETRY,
    FILE_ACCESS_LOG_TYPE,
    HTTP_PROTOCOL_OPTIONS_TYPE,
    EgressBootstrap,
    EnvoyCluster,
    EnvoyConfigError,
    EnvoyRoute,
    EnvoyTelemetry,
    EnvoyVirtualHost,
    EnvoyWeightedCluster,
    TcpBootstrap,
    bootstrap_from_snapshot,
    bootstrap_yaml,
    duration,
    render_bootstrap,
    render_tcp_bootstrap,
    retry_from_snapshot,
    route_from_snapshot,
    sampling_rules_manifest,
    tcp_bootstrap_from_snapshot,
)
from meshproxy.config.snapshot import Snapshot

__all__ = [
    "FILE_ACCESS_LOG_TYPE",
    "HTTP_PROTOCOL_OPTIONS_TYPE",
    "EgressBootstrap",
    "EnvoyCluster",
    "EnvoyConfigError",
    "EnvoyTelemetry",
    "EnvoyVirtualHost",
    "TcpBootstrap",
    "bench_bootstrap",
    "bench_telemetry",
    "bootstrap_from_config_file",
    "bootstrap_from_snapshot",
    "bootstrap_yaml",
    "compile_config_file",
    "duration",
    "render_bootstrap",
    "render_tcp_bootstrap",
    "retry_from_snapshot",
    "route_from_snapshot",
    "sampling_rules_manifest",
    "tcp_bootstrap",
    "tcp_bootstrap_from_snapshot",
]


def envoy_argv(envoy: str, config: Path, workers: int = 1, *extra: str) -> list[str]:
    """Envoy's command line as the App Mesh agent starts it (spec §1.3), with a quieter log level."""
    return [envoy, "-c", str(config), "--concurrency", str(workers), "-l", "warning",
            "--disable-hot-restart", "--skip-deprecated-logs", *extra]  # fmt: skip


def bench_telemetry(
    *, access_log_path: str | None = None, xray_port: int | None = None, sampling_rules: str | None = None
) -> EnvoyTelemetry:
    """Telemetry for the bench's client node, named as App Mesh names it (`<mesh>/<node>` segments)."""
    return EnvoyTelemetry(
        mesh_name=mesh.MESH,
        virtual_node_name=mesh.CLIENT_NODE,
        xray_segment_name=f"{mesh.MESH}/{mesh.CLIENT_NODE}",
        access_log_path=access_log_path,
        xray_port=xray_port,
        sampling_rules=sampling_rules,
    )


def bench_bootstrap(
    *,
    upstream_port: int,
    egress_port: int,
    admin_port: int,
    upstream_host: str = "127.0.0.1",
    protocol: mesh.MeshProtocol = mesh.MeshProtocol.HTTP,
    telemetry: EnvoyTelemetry | None = None,
) -> EgressBootstrap:
    """The bench mesh's client node as App Mesh would have configured its Envoy (see bench/mesh.py)."""
    if protocol is mesh.MeshProtocol.TCP:
        raise EnvoyConfigError("the tcp variant has no egress routes: use tcp_bootstrap")
    bench_mesh = mesh.BenchMesh(upstream_port=upstream_port, upstream_host=upstream_host, protocol=protocol)
    grpc = protocol is mesh.MeshProtocol.GRPC
    route = EnvoyRoute(
        name=f"{mesh.VIRTUAL_ROUTER}/{mesh.ROUTE}",
        targets=(EnvoyWeightedCluster(bench_mesh.upstream_cluster, 100),),
        prefix="/",  # a grpcRoute without service or method matches every path
        timeout=15.0,  # route perRequest and idle defaults (spec §4.5)
        idle_timeout=300.0,
        retry=APPMESH_DEFAULT_GRPC_RETRY if grpc else APPMESH_DEFAULT_RETRY,
    )
    virtual_host = EnvoyVirtualHost(
        name=mesh.VIRTUAL_SERVICE,
        domains=(mesh.VIRTUAL_SERVICE, f"{mesh.VIRTUAL_SERVICE}:{mesh.ROUTER_PORT}"),
        routes=(route,),
    )
    cluster = EnvoyCluster(
        name=bench_mesh.upstream_cluster,
        endpoints=((upstream_host, upstream_port),),
        discovery="LOGICAL_DNS",  # DNS service discovery, LOADBALANCER response type (spec §4.2)
        http2=protocol is not mesh.MeshProtocol.HTTP,
    )
    return EgressBootstrap(
        node_id=mesh.CLIENT_RESOURCE_ARN,
        admin_port=admin_port,
        egress_port=egress_port,
        virtual_hosts=(virtual_host,),
        clusters=(cluster,),
        telemetry=telemetry,
    )


def tcp_bootstrap(
    *, app_port: int, ingress_port: int, admin_port: int, app_host: str = "127.0.0.1"
) -> TcpBootstrap:
    """The client node with one tcp listener on `app_port` (bench/mesh.py `tcp`): ingress tcp_proxy to the
    local app, a static cluster with App Mesh's 1 s connect timeout and unlimited circuit breakers."""
    bench_mesh = mesh.BenchMesh(
        upstream_port=app_port, upstream_host=app_host, protocol=mesh.MeshProtocol.TCP
    )
    return TcpBootstrap(
        node_id=mesh.CLIENT_RESOURCE_ARN,
        admin_port=admin_port,
        ingress_port=ingress_port,
        cluster=EnvoyCluster(
            name=bench_mesh.upstream_cluster, endpoints=((app_host, app_port),), discovery="STATIC"
        ),
    )


def compile_config_file(path: str, resource_arn: str, *, egress_port: int) -> Snapshot:
    """Read, validate and compile an App Mesh config file with meshproxy's own config code.

    Raises `EnvoyConfigError` when meshproxy's config code is missing or rejects the file.
    """
    try:
        from meshproxy.config.compile import compile_snapshot
        from meshproxy.config.dialects import read_file
        from meshproxy.config.errors import ConfigError, Severity
        from meshproxy.config.validate import validate
        from meshproxy.settings import parse_identity
    except ImportError as exc:
        raise EnvoyConfigError(f"meshproxy's config compiler is not available: {exc}") from None
    read = read_file(path)
    resources, issues = validate(read.resources)
    problems = [str(i) for i in (*read.issues, *issues) if i.severity is Severity.ERROR]
    if problems:
        raise EnvoyConfigError(f"{path}: " + "; ".join(problems[:5]))
    identity = parse_identity({"APPMESH_RESOURCE_ARN": resource_arn})
    try:
        snapshot = compile_snapshot(resources, identity, version="bench", egress_port=egress_port)
    except ConfigError as exc:
        raise EnvoyConfigError(f"{path}: {exc}") from None
    except Exception as exc:  # a compiler bug must not end the bench run: report it as Envoy's failure
        raise EnvoyConfigError(f"meshproxy's compiler failed on {path}: {exc!r}") from exc
    return snapshot


def bootstrap_from_config_file(
    path: str, resource_arn: str, *, egress_port: int, admin_port: int, listen_address: str = "127.0.0.1"
) -> EgressBootstrap:
    """An App Mesh config file compiled by meshproxy (`compile_config_file`), rendered for Envoy's egress."""
    snapshot = compile_config_file(path, resource_arn, egress_port=egress_port)
    return bootstrap_from_snapshot(
        snapshot, egress_port=egress_port, admin_port=admin_port, listen_address=listen_address
    )
