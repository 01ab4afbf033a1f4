"""The benchmark's workloads as graphserve apps, one module-level app each:
``graphserve deploy bench.workloads:w1`` serves W1 at ``POST /w1``.

- ``w1``: one deployment returning its input
- ``w2``: a chain of three no-op deployments
- ``w3``: three 10 ms models in parallel, then a combiner
- ``w4``: a batched GPU-like model (``max_batch_size=32``; 2 ms + 0.5 ms per item, sleeping)
- ``w4cpu``: the same batch cost as a busy loop
- ``w5``: a cheap model, and an expensive one only when its score is >= 0.9 (10% of requests)
"""

from __future__ import annotations

import asyncio
from typing import Any

import graphserve as gs

from . import costs


@gs.deployment
class Echo:
    async def __call__(self, request: Any) -> Any:
        return request


@gs.deployment
class Model:
    """A 10 ms model (asyncio.sleep: the CPU is free meanwhile)."""

    async def __call__(self, x: float) -> float:
        await asyncio.sleep(costs.FANOUT_S)
        return x


@gs.deployment
class Combiner:
    async def __call__(self, a: float, b: float, c: float) -> float:
        return a + b + c


@gs.deployment
class GpuBatched:
    @gs.batch(max_batch_size=costs.MAX_BATCH_SIZE, batch_wait_timeout_s=costs.BATCH_WAIT_S)
    async def predict(self, xs: list[float]) -> list[float]:
        return await costs.gpu_batch(xs)


@gs.deployment
class CpuBatched:
    @gs.batch(max_batch_size=costs.MAX_BATCH_SIZE, batch_wait_timeout_s=costs.BATCH_WAIT_S)
    async def predict(self, xs: list[float]) -> list[float]:
        return await costs.cpu_batch(xs)


@gs.deployment
class Cheap:
    async def __call__(self, x: float) -> float:
        await asyncio.sleep(costs.CHEAP_S)
        return x


@gs.deployment
class Expensive:
    async def __call__(self, x: float) -> float:
        await asyncio.sleep(costs.EXPENSIVE_S)
        return 2 * x


with gs.InputNode() as _inp:
    w1 = gs.graph(Echo.bind().__call__.bind(_inp), name="w1")

with gs.InputNode() as _inp:
    _a = Echo.options(name="noop1").bind().__call__.bind(_inp)
    _b = Echo.options(name="noop2").bind().__call__.bind(_a)
    w2 = gs.graph(Echo.options(name="noop3").bind().__call__.bind(_b), name="w2")

with gs.InputNode() as _inp:
    _models = [Model.options(name=f"model{i}").bind().__call__.bind(_inp["x"]) for i in range(costs.FANOUT_WIDTH)]
    w3 = gs.graph(Combiner.bind().__call__.bind(*_models), name="w3")

with gs.InputNode() as _inp:
    w4 = gs.graph(GpuBatched.bind().predict.bind(_inp["x"]), name="w4")

with gs.InputNode() as _inp:
    w4cpu = gs.graph(CpuBatched.bind().predict.bind(_inp["x"]), name="w4cpu")

with gs.InputNode() as _inp:
    _score = Cheap.bind().__call__.bind(_inp["x"])
    w5 = gs.graph(
        gs.cond(_score >= costs.EXPENSIVE_THRESHOLD, Expensive.bind().__call__.bind(_score), _score), name="w5"
    )

#: Workload id -> app name in this module.
APPS = {"W1": "w1", "W2": "w2", "W3": "w3", "W4": "w4", "W4cpu": "w4cpu", "W5": "w5"}
