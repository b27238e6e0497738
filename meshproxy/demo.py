"""`meshproxy demo`: App Mesh's colour walkthrough on this machine, with nothing to configure.

A `front` virtual node calls the virtual service `color.demo.local`, whose router splits traffic between
`blue` and `green`. The green app fails one request in three with a 503, and the route's retry policy turns
those into successes. The demo starts the colour apps on loopback, runs meshproxy as `front` in a subprocess,
sends a bounded burst through its egress listener, prints what happened, and exits. With `--serve` the apps
and the proxy stay up until Ctrl-C (or SIGTERM), with a curl command printed to try them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

from meshproxy.config.demo_mesh import colour_mesh

_READY_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ColourApp:
    """A tiny upstream: answers its colour; with `fail_every`, every n-th request gets a 503."""

    def __init__(self, colour: str, fail_every: int = 0) -> None:
        self.colour = colour
        self.fail_every = fail_every
        self.requests = 0
        self.failures = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_every and self.requests % self.fail_every == 0:
            self.failures += 1
            return web.Response(status=503, text=f"{self.colour} is having a moment\n")
        return web.Response(text=self.colour)

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


async def _wait_live(session: ClientSession, admin: str, proxy: asyncio.subprocess.Process) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READY_TIMEOUT_S
    while loop.time() < deadline:
        if proxy.returncode is not None:
            return False
        try:
            async with session.get(f"{admin}/ready") as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return False


def _stat_lines(text: str, wanted: Sequence[str]) -> list[str]:
    return [line for line in text.splitlines() if any(w in line for w in wanted)]


def meshproxy_command() -> list[str]:
    """How to run this very meshproxy again: the venv's console script, else this interpreter's module."""
    script = Path(sys.executable).with_name("meshproxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "meshproxy"]


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_demo(requests: int, weights: tuple[int, int], serve: bool = False) -> int:
    blue, green, front = ColourApp("blue"), ColourApp("green", fail_every=3), ColourApp("front")
    ports = {name: free_port() for name in ("blue", "green", "front", "ingress", "egress", "admin")}
    runners = [await app.start(ports[app.colour]) for app in (blue, green, front)]
    resources = colour_mesh(ports["blue"], ports["green"], ports["front"])
    for item in resources:  # apply the requested split to the router's route
        route = item.get("route")
        if route is not None:
            targets = route["spec"]["httpRoute"]["action"]["weightedTargets"]
            targets[0]["weight"], targets[1]["weight"] = weights
    workdir = tempfile.mkdtemp(prefix="meshproxy-demo-")
    config = os.path.join(workdir, "mesh.json")
    with open(config, "w") as handle:
        json.dump(resources, handle, indent=2)
    env = dict(os.environ)
    env.update(
        APPMESH_RESOURCE_ARN="arn:aws:appmesh:us-west-2:111122223333:mesh/demo/virtualNode/front",
        APPMESH_ENVOY_INGRESS_PORT=str(ports["ingress"]),
        APPMESH_ENVOY_EGRESS_PORT=str(ports["egress"]),
        ENVOY_ADMIN_ACCESS_PORT=str(ports["admin"]),
        MESHPROXY_LISTEN_ADDRESS="127.0.0.1",
        LISTENER_DRAIN_WAIT_TIME_S="5",
    )
    print(f"meshproxy demo: mesh 'demo' written to {config}")
    print(f"  blue  app on 127.0.0.1:{ports['blue']}, green app on 127.0.0.1:{ports['green']} (fails 1 in 3)")
    print(f"  meshproxy as virtual node 'front': egress :{ports['egress']}, admin :{ports['admin']}")
    log_path = os.path.join(workdir, "meshproxy.log")
    with open(log_path, "wb") as log_file:
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshproxy", "run", "--config", config, env=env, stderr=log_file
        )
    admin = f"http://127.0.0.1:{ports['admin']}"
    status = 0
    try:
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            if not await _wait_live(session, admin, proxy):
                print(f"meshproxy did not become LIVE; its log is {log_path}", file=sys.stderr)
                return 1
            seen: collections.Counter[str] = collections.Counter()
            url = f"http://127.0.0.1:{ports['egress']}/"
            for _ in range(requests):
                async with session.get(url, headers={"Host": "color.demo.local"}) as response:
                    body = await response.text()
                    seen[f"{response.status} {body.strip()}" if response.status != 200 else body.strip()] += 1
            async with session.get(f"{admin}/stats") as response:
                stats = await response.text()
        print(f"\n{requests} requests to http://color.demo.local/ through the egress listener "
              f"(route weights blue {weights[0]} / green {weights[1]}):")  # fmt: skip
        for answer, count in sorted(seen.items()):
            print(f"  {answer:<8} {count:>4}  ({100.0 * count / requests:.1f}%)")
        print(f"\nretries: green answered 503 {green.failures} times; the retry policy retried them, so the "
              f"client saw {sum(c for a, c in seen.items() if a.startswith('5'))} errors.")  # fmt: skip
        print("\nstats (GET /stats):")
        shown = ("upstream_rq_total", "upstream_rq_retry:", "upstream_rq_503", "upstream_rq_200",
                 "upstream_cx_total", "downstream_rq_total")  # fmt: skip
        for line in _stat_lines(stats, shown):
            print(f"  {line}")
        print(f"\nThe proxy's log: {log_path}.")
        if sum(c for a, c in seen.items() if not a[0].isalpha()) > 0:
            status = 1
        if serve:
            curl = ["curl", "-s", "-H", "Host: color.demo.local", url]
            print("\nServing until Ctrl-C. Try:", flush=True)
            print(f"  {shlex.join(curl)}", flush=True)
            print(f"  curl -s {admin}/stats/prometheus", flush=True)
            await _until_stopped()
        else:
            print(
                "Run it yourself (the apps and the proxy stay up, with a curl command to try, until Ctrl-C):"
            )
            print(f"  {shlex.join([*meshproxy_command(), 'demo', '--serve'])}")
        async with (
            ClientSession(timeout=ClientTimeout(total=10)) as session,
            session.post(f"{admin}/quitquitquit") as response,
        ):
            await response.read()
    finally:
        if proxy.returncode is None:
            proxy.terminate()
            try:
                await asyncio.wait_for(proxy.wait(), timeout=10)
            except TimeoutError:
                proxy.kill()
        for runner in runners:
            await runner.cleanup()
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshproxy demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="how many requests to send (default 200)")
    parser.add_argument("--weights", default="50,50", help="blue,green route weights (default 50,50)")
    parser.add_argument("--serve", action="store_true", help="keep the apps and the proxy up until Ctrl-C")
    args = parser.parse_args(list(argv))
    try:
        blue_weight, green_weight = (int(w) for w in args.weights.split(","))
    except ValueError:
        parser.error("--weights must be two integers, e.g. 80,20")
    if not 1 <= args.requests <= 100_000:
        parser.error("--requests must be in 1..100000")
    return asyncio.run(run_demo(args.requests, (blue_weight, green_weight), serve=args.serve))
