"""Deployments for the actor fusion tests (tests/test_fusion.py, tests/test_ray_fused.py):
members that report the process they ran in, one that fails, one that batches."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import graphserve as gs


@gs.deployment
class Stamp:
    """Appends (its name, its pid) to the trail it was given."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, trail: list[Any]) -> list[Any]:
        return [*trail, [self.name, os.getpid()]]


@gs.deployment
class SyncStamp:
    """A synchronous member: runs in its own threads inside the fused actor."""

    def __call__(self, trail: list[Any]) -> list[Any]:
        return [*trail, ["sync", os.getpid()]]


@gs.deployment
class FailsOnNegative:
    async def __call__(self, trail: list[Any]) -> list[Any]:
        if trail and trail[0] == "fail":
            raise ValueError("asked to fail")
        return trail


@gs.deployment
class BatchSize:
    """Answers each item with the size of the batch it went in (and this pid)."""

    @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def __call__(self, trails: list[list[Any]]) -> list[list[Any]]:
        await asyncio.sleep(0.01)
        return [[*t, ["batch", len(trails)], ["batch-pid", os.getpid()]] for t in trails]


@gs.deployment
class Relay:
    """Calls its target through a handle."""

    def __init__(self, target: Any) -> None:
        self.target = target

    async def __call__(self, trail: list[Any]) -> list[Any]:
        return await self.target.remote([*trail, ["relay", os.getpid()]])


def chain(*stages: Any) -> gs.App:
    """input -> stages[0] -> stages[1] -> ... (each a bound deployment)."""
    with gs.InputNode() as inp:
        value = inp
        for stage in stages:
            value = stage.__call__.bind(value)
    return gs.graph(value)


def stamps(*names: str, **options: Any) -> list[Any]:
    return [Stamp.options(name=n, **options.get(n, {})).bind(n) for n in names]


#: ``graphserve build tests.graphs.fusion_graphs:app``: a chain of three that fuses, then a GPU
#: deployment kept apart from a second one.
with gs.InputNode() as _inp:
    _trail = _inp
    for _stage in (*stamps("a", "b", "c"), *stamps("gpu1", "gpu2", gpu1={"num_gpus": 1}, gpu2={"num_gpus": 1})):
        _trail = _stage.__call__.bind(_trail)
    app = gs.graph(_trail, name="fusion")


@gs.deployment
class Merge:
    async def __call__(self, *trails: list[Any]) -> list[Any]:
        return [item for trail in trails for item in trail]


def fan_out_and_join(width: int = 2) -> gs.App:
    """``first`` feeds ``width`` branches side by side, which ``join`` merges."""
    with gs.InputNode() as inp:
        first = Stamp.options(name="first").bind("first").__call__.bind(inp)
        branches = [Stamp.options(name=f"branch{i}").bind(f"branch{i}").__call__.bind(first) for i in range(width)]
        out = Merge.options(name="join").bind().__call__.bind(*branches)
    return gs.graph(out, name="fan")
