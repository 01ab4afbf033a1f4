"""Ray Serve's ensemble pattern, written as Ray Serve code with only the import changed:
the ingress starts every model through its handle and gathers them with ``asyncio.wait``.
Each model records when it ran, so tests can check that they overlapped."""

import asyncio
import time

import numpy as np

import graphserve as serve

RUNS = []  # (model weight, start, end), appended by the models


@serve.deployment
class Model:
    def __init__(self, weight: float):
        self.weight = weight

    async def __call__(self, x: float) -> float:
        start = time.monotonic()
        await asyncio.sleep(0.2)
        RUNS.append((self.weight, start, time.monotonic()))
        return self.weight * x


@serve.deployment
class Ensemble:
    def __init__(self, *models):
        self.models = models

    async def __call__(self, request):
        x = (await request.json())["x"]
        responses = [model.remote(x) for model in self.models]
        done, pending = await asyncio.wait(responses)
        outputs = sorted([await response for response in done])
        return {"outputs": np.array(outputs), "mean": np.mean(outputs), "pending": len(pending)}


app = Ensemble.bind(*(Model.options(name=f"model_{i}").bind(float(i)) for i in (1, 2, 3)))
