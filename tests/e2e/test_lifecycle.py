"""Process lifecycle: graceful SIGTERM drain, /quitquitquit, and fatal start-up errors (spec §6.2, §1.1)."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from pathlib import Path

import pytest

from .apps import AppLoop, ColourApp
from .harness import MeshProxy, Reply, clean_environ, free_ports, run_meshproxy, running_proxy, wait_for
from .resources import Resource, mesh, node_arn, route, service_via_node, virtual_node, virtual_router

SLOW = "slow.demo.local"
DRAIN_WAIT_S = 5  # the smallest LISTENER_DRAIN_WAIT_TIME_S allowed
START_FAILURE_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def slow(app_loop: AppLoop) -> ColourApp:
    return app_loop.colour_app("slow")


def _slow_mesh(slow: ColourApp) -> list[Resource]:
    return [
        mesh(),
        virtual_node("slow", slow.port),
        virtual_node("front", free_ports(1)[0], backends=[SLOW]),
        service_via_node(SLOW, "slow"),
    ]


def _ready_status(proxy: MeshProxy) -> int:
    try:
        return proxy.admin("/ready", timeout=1.0).status
    except OSError:
        return -1


def test_sigterm_drains_in_flight_requests_then_exits_zero(slow: ColourApp, tmp_path: Path) -> None:
    slow.reset()
    slow.configure(delay_s=2.0, delay_first=1)
    with running_proxy(_slow_mesh(slow), node_arn("front"), tmp_path, drain_wait_s=DRAIN_WAIT_S) as proxy:
        assert proxy.process is not None
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(proxy.egress, SLOW, "/in-flight", timeout=20)
            assert wait_for(lambda: slow.requests == 1, 5.0), "the request never reached the app"
            signalled = time.monotonic()
            proxy.process.send_signal(signal.SIGTERM)

            assert wait_for(lambda: _ready_status(proxy) == 503, 2.0), "/ready did not turn 503 on SIGTERM"
            assert proxy.admin("/server_info").json()["state"] == "DRAINING"
            during: Reply = proxy.egress(SLOW, "/new-connection-while-draining")
            finished: Reply = in_flight.result(20)
        still_running = proxy.process.poll() is None
        checked_at = time.monotonic() - signalled
        rc = proxy.wait_exit(DRAIN_WAIT_S + 10)
        exited_after = time.monotonic() - signalled

    assert (finished.status, finished.app) == (200, "slow"), finished
    assert (during.status, during.app) == (200, "slow"), during
    if checked_at < DRAIN_WAIT_S - 1:  # only meaningful if we looked well inside the drain window
        assert still_running, f"exited {checked_at:.1f} s after SIGTERM, before the drain wait"
    assert rc == 0, proxy.output_tail()
    assert exited_after >= DRAIN_WAIT_S * 0.9, f"exited {exited_after:.1f} s after SIGTERM"


def test_quitquitquit_exits_zero(slow: ColourApp, tmp_path: Path) -> None:
    with running_proxy(_slow_mesh(slow), node_arn("front"), tmp_path) as proxy:
        assert proxy.admin("/quitquitquit", method="POST").status == 200
        assert proxy.wait_exit(10.0) == 0, proxy.output_tail()


# --- invalid configuration ----------------------------------------------------------------------------------


def _with_bad_weight() -> list[Resource]:
    return [
        mesh(),
        virtual_node("blue", 18081),
        virtual_node("green", 18082),
        virtual_node("front", 18080, backends=["color.demo.local"]),
        virtual_router("color-router"),
        route("color-router", "split", [("blue", 150), ("green", 50)]),
        {
            "virtualService": {
                "meshName": "demo",
                "virtualServiceName": "color.demo.local",
                "spec": {"provider": {"virtualRouter": {"virtualRouterName": "color-router"}}},
            }
        },
    ]


def _valid() -> list[Resource]:
    resources = _with_bad_weight()
    resources[5] = route("color-router", "split", [("blue", 50), ("green", 50)])
    return resources


def _with_unknown_target() -> list[Resource]:
    resources = _with_bad_weight()
    resources[5] = route("color-router", "split", [("blue", 50), ("ghost", 50)])
    return resources


INVALID_CONFIGS = {
    "weight-out-of-range": (
        _with_bad_weight,
        "route color-router/split: spec.httpRoute.action.weightedTargets[0].weight: 150 is not in 0..100",
    ),
    "unknown-target-node": (
        _with_unknown_target,
        "route color-router/split: spec.httpRoute.action.weightedTargets[1].virtualNode",
    ),
}


@pytest.mark.parametrize("case", INVALID_CONFIGS)
def test_validate_prints_path_qualified_errors(case: str, tmp_path: Path) -> None:
    build, expected = INVALID_CONFIGS[case]
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps(build()))
    done = run_meshproxy(["validate", str(config)], env=clean_environ(), cwd=tmp_path)
    assert done.returncode != 0, done
    assert expected in done.stdout + done.stderr, done


def test_validate_accepts_a_valid_config(tmp_path: Path) -> None:
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps(_valid()))
    done = run_meshproxy(["validate", str(config)], env=clean_environ(), cwd=tmp_path)
    assert done.returncode == 0, done


def test_run_with_an_invalid_config_exits_with_the_errors(tmp_path: Path) -> None:
    proxy = MeshProxy(_with_bad_weight(), node_arn("front"), tmp_path)
    proxy.spawn()
    try:
        rc = proxy.wait_exit(START_FAILURE_TIMEOUT_S)
    finally:
        proxy.stop()
    assert rc not in (None, 0), proxy.output_tail()
    expected = INVALID_CONFIGS["weight-out-of-range"][1]
    assert expected in proxy.stderr_text(), proxy.output_tail()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LISTENER_DRAIN_WAIT_TIME_S", "abc"), ("APPMESH_RESOURCE_ARN", None)],
    ids=["drain-wait-not-a-number", "no-resource-arn"],
)
def test_invalid_environment_is_fatal_and_named(variable: str, value: str | None, tmp_path: Path) -> None:
    proxy = MeshProxy(_valid(), node_arn("front"), tmp_path)
    env = proxy.environment()
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    config = proxy.write_config()
    done = run_meshproxy(
        ["run", "--config", str(config)], env=env, cwd=tmp_path, timeout=START_FAILURE_TIMEOUT_S
    )
    assert done.returncode != 0, done
    assert variable in done.stderr, done
