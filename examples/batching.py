"""Batching: single requests in, vectorized batches to the model.

Serve it:   graphserve deploy examples.batching:app
Request:    POST /  {"x": 3.0}
Response:   {"y": 6.0, "batch_size": 1}
            y is 2 * x, computed by one numpy call for the whole batch; batch_size is how
            many requests shared that call: 1 for a request that arrives alone, up to 16
            under concurrent load. /-/metrics reports the sizes as graphserve_batch_size.

``@gs.batch`` turns a method that takes a list into one that callers (graph nodes,
handles) call with single items: the runtime gathers concurrent calls into a list of at
most ``max_batch_size`` and sends it once it is full or the oldest call has waited
``batch_wait_timeout_s``. The method must return a list of the same length.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import graphserve as gs


class Request(BaseModel):
    x: float


@gs.deployment
class Doubler:
    """A vectorized "model": one numpy call per batch."""

    @gs.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def predict(self, xs: list[float]) -> list[dict[str, Any]]:
        import numpy as np

        ys = 2.0 * np.asarray(xs, dtype=np.float64)
        return [{"y": float(y), "batch_size": len(xs)} for y in ys]


with gs.InputNode(schema=Request) as inp:
    prediction = Doubler.bind().predict.bind(inp.x)

app = gs.graph(prediction, name="batching")
