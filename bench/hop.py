"""Per-hop overhead of the local runtime, in process (no HTTP): chains of 1, 2, 4, 8 and
16 no-op deployments, run one request at a time on one event loop (uvloop, as the server).

* ``graph``: every deployment is a graph node (``inp -> d1 -> d2 -> ... -> dN``);
  each hop is the executor scheduling a node and the backend calling its replica.
* ``handle``: the graph calls d1, which calls d2 through a deployment handle
  (``await self.next.remote(x)``), and so on: each hop is a handle call.

The cost per node is the least-squares slope of the time per request against N; the
intercept is what a request costs besides its nodes (the executor's entry and exit).
Time is the CPU time of this process (``time.process_time``): the loop is single-threaded
and never idle, so that is its wall time minus what a shared machine gave to others.
Each point is the best of several repeats.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import graphserve as gs

CHAIN_LENGTHS = (1, 2, 4, 8, 16)


@gs.deployment
class Noop:
    async def __call__(self, x: Any) -> Any:
        return x


@gs.deployment
class Via:
    def __init__(self, next: Any) -> None:
        self.next = next

    async def __call__(self, x: Any) -> Any:
        return await self.next.remote(x)


def graph_chain(n: int) -> gs.App:
    with gs.InputNode() as inp:
        node: Any = inp
        for i in range(n):
            node = Noop.options(name=f"hop{i}").bind().__call__.bind(node)
    return gs.graph(node, name=f"graph_chain_{n}")


def handle_chain(n: int) -> gs.App:
    dep: Any = Noop.options(name=f"hop{n - 1}").bind()
    for i in range(n - 2, -1, -1):
        dep = Via.options(name=f"hop{i}").bind(dep)
    with gs.InputNode() as inp:
        return gs.graph(dep.__call__.bind(inp), name=f"handle_chain_{n}")


async def _time_chain(app: gs.App, iterations: int, repeats: int) -> float:
    from graphserve.runtime import GraphRuntime

    runtime = GraphRuntime(gs.build(app))
    await runtime.start()
    try:
        request = {"x": 1}
        for _ in range(min(200, iterations)):  # warm up: caches, method lookups
            await runtime.execute(request)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(iterations):
                await runtime.execute(request)
            best = min(best, (time.process_time() - t0) / iterations)
        return best
    finally:
        await runtime.stop()


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys against xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return b, my - b * mx


def measure(lengths: tuple[int, ...] = CHAIN_LENGTHS, iterations: int = 2000, repeats: int = 5) -> dict:
    """Time per request (us) for each chain length and kind, and the slope per node."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    out: dict[str, Any] = {"lengths": list(lengths), "iterations": iterations, "repeats": repeats}
    for kind, make in (("graph", graph_chain), ("handle", handle_chain)):
        per_request = [runner(_time_chain(make(n), iterations, repeats)) * 1e6 for n in lengths]
        b, a = slope([float(n) for n in lengths], per_request)
        out[kind] = {
            "us_per_request": [round(v, 2) for v in per_request],
            "us_per_node": round(b, 2),
            "intercept_us": round(a, 2),
        }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
