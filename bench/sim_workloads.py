"""The graphs of the simulator's accuracy benchmark (``python -m bench --only sim``).

Each model handles one call at a time (``max_ongoing_requests=1``, as a model on one GPU
stream would), so the graphs' capacity is set by their models, not by the HTTP server:

- ``chain3``: three models in a chain (4, 6 and 3 ms);
- ``fanout3``: three models in parallel (5, 7 and 4 ms) joined by a combiner;
- ``conditional``: a cheap model (2 ms), and an expensive one (15 ms) only when the score
  is >= 0.9 (10% of the sample requests), as W5;
- ``batched``: a GPU-like batched model costing ``asyncio.sleep(5 ms + 1 ms x batch size)``,
  ``max_batch_size=16``, ``batch_wait_timeout_s=0.005``.

Requests are ``{"x": <float in [0, 1)>}``.
"""

from __future__ import annotations

import asyncio

import graphserve as gs

CHAIN_S = (0.004, 0.006, 0.003)
FANOUT_S = (0.005, 0.007, 0.004)
CHEAP_S = 0.002
EXPENSIVE_S = 0.015
THRESHOLD = 0.9
BATCH_FIXED_S = 0.005
BATCH_PER_ITEM_S = 0.001
MAX_BATCH_SIZE = 16
BATCH_WAIT_S = 0.005


@gs.deployment(max_ongoing_requests=1)
class Stage:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __call__(self, x: float) -> float:
        await asyncio.sleep(self.seconds)
        return x


@gs.deployment
class Join:
    async def __call__(self, a: float, b: float, c: float) -> float:
        return a + b + c


@gs.deployment
class Batched:
    @gs.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def predict(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(BATCH_FIXED_S + BATCH_PER_ITEM_S * len(xs))
        return xs


with gs.InputNode() as _inp:
    _a = Stage.options(name="first").bind(CHAIN_S[0]).__call__.bind(_inp["x"])
    _b = Stage.options(name="second").bind(CHAIN_S[1]).__call__.bind(_a)
    chain3 = gs.graph(Stage.options(name="third").bind(CHAIN_S[2]).__call__.bind(_b), name="chain3")

with gs.InputNode() as _inp:
    _branches = [
        Stage.options(name=f"branch{i}").bind(seconds).__call__.bind(_inp["x"]) for i, seconds in enumerate(FANOUT_S)
    ]
    fanout3 = gs.graph(Join.bind().__call__.bind(*_branches), name="fanout3")

with gs.InputNode() as _inp:
    _score = Stage.options(name="cheap").bind(CHEAP_S).__call__.bind(_inp["x"])
    _expensive = Stage.options(name="expensive").bind(EXPENSIVE_S).__call__.bind(_score)
    conditional = gs.graph(gs.cond(_score >= THRESHOLD, _expensive, _score), name="conditional")

with gs.InputNode() as _inp:
    batched = gs.graph(Batched.bind().predict.bind(_inp["x"]), name="batched")

#: graph name -> app, in the order the benchmark runs them
APPS = {"chain3": chain3, "fanout3": fanout3, "conditional": conditional, "batched": batched}
#: the sample requests: x = 0.00, 0.01, ..., 0.99 (x >= 0.9 for exactly 10% of them)
BODIES = [b'{"x": %.2f}' % (i / 100) for i in range(100)]
