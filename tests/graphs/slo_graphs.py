"""Graphs for the SLO planner's tests (and the W6 benchmark's shape): a CPU-bound
preprocess, two GPU-like batched models with different cost curves (one behind a 30%
branch) and a join; plus a variant with values the user fixed."""

from __future__ import annotations

import asyncio
import time

import graphserve as gs

DETECT_FIXED_S, DETECT_PER_ITEM_S = 0.004, 0.0006
CLASSIFY_FIXED_S, CLASSIFY_PER_ITEM_S = 0.010, 0.0002
PREPROCESS_CPU_S = 0.0003
BRANCH_AT = 0.7  # inputs are uniform in [0, 1): 30% take the branch


@gs.deployment
class Preprocess:
    def __call__(self, x: float) -> float:
        end = time.process_time() + PREPROCESS_CPU_S
        while time.process_time() < end:
            pass
        return float(x)


@gs.deployment
class Detector:
    @gs.batch
    async def __call__(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(DETECT_FIXED_S + DETECT_PER_ITEM_S * len(xs))
        return xs


@gs.deployment
class Classifier:
    @gs.batch
    async def __call__(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(CLASSIFY_FIXED_S + CLASSIFY_PER_ITEM_S * len(xs))
        return [x * 2 for x in xs]


@gs.deployment
class Join:
    async def __call__(self, detected: float, classified: float) -> dict[str, float]:
        return {"detected": detected, "classified": classified}


@gs.deployment(num_replicas=2)
class FixedDetector:
    @gs.batch(max_batch_size=4, batch_wait_timeout_s=0.001)
    async def __call__(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(DETECT_FIXED_S + DETECT_PER_ITEM_S * len(xs))
        return xs


def _pipeline(detector: gs.Deployment, name: str, slo: gs.SLO | None = None) -> gs.App:
    with gs.InputNode() as inp:
        x = Preprocess.bind().__call__.bind(inp["x"])
        detected = detector.bind().__call__.bind(x)
        classified = gs.cond(detected >= BRANCH_AT, Classifier.bind().__call__.bind(detected), detected)
        return gs.graph(Join.bind().__call__.bind(detected, classified), name=name, slo=slo)


pipeline = _pipeline(Detector, "pipeline")
fixed = _pipeline(FixedDetector, "fixed")
