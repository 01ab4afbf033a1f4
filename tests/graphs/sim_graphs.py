"""Graphs for the profiler and simulator tests: one model, a fan-out joined, a 10% branch,
a batched model with a known cost ``sleep(a + b x n)``, CPU-bound models, a schema."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

import graphserve as gs
from bench.sim_workloads import THRESHOLD, Join, Stage

BATCH_FIXED_S = 0.010
BATCH_PER_ITEM_S = 0.002
MODEL_S = 0.001

#: a model taking one call at a time that sleeps the seconds it is bound with: the simulator
#: benchmark's ``Stage`` (one source for both), named ``Sleeper`` here
Sleeper = Stage.options(name="Sleeper")


@gs.deployment
class Batched:
    @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def predict(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(BATCH_FIXED_S + BATCH_PER_ITEM_S * len(xs))
        return xs


@gs.deployment(max_ongoing_requests=4)
def busy(x: float) -> float:
    """Burns 2 ms of CPU (a sync function: it runs in the runtime's thread pool)."""
    end = time.process_time() + 0.002
    while time.process_time() < end:
        pass
    return x


@gs.deployment
class Fails:
    async def __call__(self, x: float) -> float:
        if x > 0.5:
            raise ValueError("x is too large")
        return x


class Point(BaseModel):
    x: float


with gs.InputNode() as _inp:
    single = gs.graph(Sleeper.bind(MODEL_S).__call__.bind(_inp["x"]), name="single")

with gs.InputNode() as _inp:
    _branches = [Sleeper.options(name=f"branch{i}").bind(MODEL_S).__call__.bind(_inp["x"]) for i in range(3)]
    fanout = gs.graph(Join.bind().__call__.bind(*_branches), name="fanout")

with gs.InputNode() as _inp:
    _score = Sleeper.options(name="cheap").bind(0.0).__call__.bind(_inp["x"])
    _expensive = Sleeper.options(name="expensive").bind(0.0).__call__.bind(_score)
    conditional = gs.graph(gs.cond(_score >= THRESHOLD, _expensive, _score), name="conditional")

with gs.InputNode() as _inp:
    # the cond's branches read the input, not the selector's model: they wait for the selector anyway
    _pred = Sleeper.options(name="selector").bind(MODEL_S).__call__.bind(_inp["x"])
    _then = Sleeper.options(name="then").bind(MODEL_S).__call__.bind(_inp["x"])
    _else = Sleeper.options(name="otherwise").bind(MODEL_S).__call__.bind(_inp["x"])
    gated = gs.graph(gs.cond(_pred >= THRESHOLD, _then, _else), name="gated")

with gs.InputNode() as _inp:
    batched = gs.graph(Batched.bind().predict.bind(_inp["x"]), name="batched")

with gs.InputNode() as _inp:
    cpu_bound = gs.graph(busy.bind(_inp["x"]), name="cpu_bound")

with gs.InputNode() as _inp:
    failing = gs.graph(Fails.bind().__call__.bind(_inp["x"]), name="failing")

with gs.InputNode(schema=Point) as _inp:
    validated = gs.graph(Sleeper.bind(0.0).__call__.bind(_inp.x), name="validated")
