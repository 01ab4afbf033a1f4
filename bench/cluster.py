"""Cluster figures: a Ray hop, a node lost under load, and several ingress processes.

    python -m bench.cluster [--seconds 3] [-o bench/results/cluster.json]

* ``hop``: a driver -> actor -> driver no-op call on Ray (``await actor.noop.remote()``, one
  request at a time): the floor any Ray-backed hop pays; and graphserve's cost per node of a
  chain of 1, 2 and 4 no-op deployments on the Ray backend (least-squares slope of the time
  per request against the chain's length), unfused (``per_node_ms``: a Ray hop each, bounded
  below by the round trip) and fused (``per_node_ms_fused``: one actor, in-process calls).
* ``node_loss``: a three-node cluster on this machine (head without CPUs, two workers of one
  CPU), the chain of tests/graphs/cluster_graphs.py served with its replicas spread over the
  workers, four clients calling it; one worker is removed (killed, not drained). Reported:
  the calls that failed, and the seconds from the removal until every replica answers again
  from the remaining worker (Ray's node health checks set to 0.5 s x 3).
* ``ingress``: 1, 2 and 4 ``graphserve deploy --backend ray --address`` processes sharing
  one replica set, loaded for ``--seconds`` each by 16 concurrent clients spread over them.

Everything runs on this machine, so the ingress figures show what one machine's cores allow,
not what several machines would; the machine is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .servers import ROOT

OUT = ROOT / "bench" / "results" / "cluster.json"
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


def _slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


async def _best_per_call(call: Any, count: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            await call()
        best = min(best, (time.perf_counter() - start) / count)
    return best


async def hop(count: int) -> dict[str, Any]:
    import ray

    import graphserve as gs
    from graphserve.compiler import compile_app
    from graphserve.compiler.fusion import fuse
    from graphserve.runtime import GraphRuntime

    from .hop import graph_chain

    @ray.remote(num_cpus=0)
    class Noop:
        async def noop(self) -> None:
            return None

    actor = Noop.remote()
    await actor.noop.remote()
    runtimes: dict[tuple[str, int], GraphRuntime] = {}
    for kind in ("fused", "unfused"):
        for n in (1, 2, 4):
            plan = compile_app(graph_chain(n))
            if kind == "unfused":
                fuse(plan, enabled=False)
            runtime = runtimes[(kind, n)] = GraphRuntime(plan, backend="ray")
            await runtime.start()
            await runtime.execute(1)
    # side by side, in rounds: each figure is the best of its rounds, so load that comes and goes
    # on a shared machine shifts every chain alike instead of bending the slopes
    best: dict[Any, float] = {}
    try:
        for _ in range(3):
            best["ray"] = min(best.get("ray", float("inf")), await _best_per_call(actor.noop.remote, count, 1))
            for key, runtime in runtimes.items():
                measured = await _best_per_call(lambda r=runtime: r.execute(1), count, 1)
                best[key] = min(best.get(key, float("inf")), measured)
    finally:
        for runtime in runtimes.values():
            await runtime.stop()
        ray.kill(actor)
    roundtrip = best["ray"]
    chains = {kind: [(n, best[(kind, n)]) for n in (1, 2, 4)] for kind in ("fused", "unfused")}
    figures: dict[str, Any] = {"ray_roundtrip_ms": roundtrip * 1e3}
    for kind, points in chains.items():
        per_node, base = _slope(points)
        suffix = "" if kind == "unfused" else "_fused"
        figures[f"per_node_ms{suffix}"] = per_node * 1e3
        figures[f"request_base_ms{suffix}"] = base * 1e3
        figures[f"chain_ms{suffix}"] = {str(n): t * 1e3 for n, t in points}
    del gs
    return figures


def measure_hop(count: int = 200) -> dict[str, Any]:
    """:func:`hop` on a Ray instance of its own (``python -m bench`` runs it as ``rayhop``)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        return asyncio.run(hop(count))
    finally:
        ray.shutdown()


async def node_loss(cluster: Any, worker: Any, survivor: Any) -> dict[str, Any]:
    from graphserve.compiler import compile_app
    from graphserve.ray_cluster import read_ray_cluster
    from graphserve.runtime import GraphRuntime
    from graphserve.runtime.ray_backend import RayBackend
    from tests.graphs import cluster_graphs as cg

    runtime = GraphRuntime(compile_app(cg.chain(), cluster=read_ray_cluster()), backend="ray")
    await runtime.start()
    backend = runtime.backend
    assert isinstance(backend, RayBackend)
    outcomes: list[tuple[float, bool]] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set() and len(outcomes) < 50_000:
            try:
                await asyncio.wait_for(runtime.execute({"x": 1}), 60)
                outcomes.append((time.monotonic(), True))
            except Exception:
                outcomes.append((time.monotonic(), False))

    clients = [asyncio.ensure_future(client()) for _ in range(4)]
    try:
        while len(outcomes) < 50:
            await asyncio.sleep(0.01)
        removed_at = time.monotonic()
        await asyncio.to_thread(cluster.remove_node, worker, False)
        while True:
            try:
                where = [await a.ready.remote() for d in ("First", "Second") for a in backend.actors(d)]
                if {node for _, node in where} == {survivor.node_id}:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.05)
        back_at = time.monotonic()
        count = len(outcomes)
        while len(outcomes) < count + 100:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await runtime.stop()
    after = [ok for t, ok in outcomes if t >= back_at]
    return {
        "recovery_s": back_at - removed_at,
        "failed_calls": sum(1 for _, ok in outcomes if not ok),
        "calls": len(outcomes),
        "success_after_recovery": sum(after) / len(after),
    }


async def _start_ingress(address: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "graphserve", "deploy", "tests.graphs.cluster_graphs:chain_app"),
        *("--backend", "ray", "--address", address, "--port", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdout is not None
    route = ""
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 180)).decode()
        if not line:
            raise RuntimeError("an ingress exited before it was ready")
        if " at POST " in line:
            route = line.rsplit(" at POST ", 1)[1].strip()
        if "ready at" in line:
            return process, route


async def ingress(address: str, counts: tuple[int, ...], seconds: float) -> dict[str, Any]:
    import httpx

    processes: list[tuple[asyncio.subprocess.Process, str]] = []
    out: dict[str, Any] = {}
    try:
        for count in counts:
            while len(processes) < count:
                processes.append(await _start_ingress(address))
            urls = [url for _, url in processes[:count]]
            statuses: list[int] = []
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
                deadline = time.monotonic() + seconds

                async def load(url: str, deadline: float = deadline, statuses: list[int] = statuses) -> None:
                    while time.monotonic() < deadline:
                        statuses.append((await client.post(url, json={"x": 1})).status_code)

                start = time.monotonic()
                await asyncio.gather(*(load(urls[i % len(urls)]) for i in range(16)))
                elapsed = time.monotonic() - start
            out[str(count)] = {"rps": len(statuses) / elapsed, "ok": statuses.count(200) / max(1, len(statuses))}
    finally:
        for process, _ in processes:
            if process.returncode is None:
                process.terminate()
                await process.wait()
    return out


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


async def main_async(seconds: float) -> dict[str, Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.cluster_utils import Cluster

    results: dict[str, Any] = {"machine": machine()}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        results["hop"] = await hop(200)
    finally:
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_NODE_DEATH},
    )
    survivor = cluster.add_node(num_cpus=1)
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    try:
        results["ingress"] = await ingress(cluster.address, (1, 2, 4), seconds)
        results["node_loss"] = await node_loss(cluster, worker, survivor)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="load per ingress configuration")
    parser.add_argument("-o", "--output", default=str(OUT))
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args.seconds))
    Path(args.output).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
