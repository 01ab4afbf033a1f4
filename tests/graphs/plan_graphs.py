"""Graphs for the planner and Plan tests: nested switches, a node shared by two arms,
GPU resources, batching options and constructor arguments JSON cannot hold.

Deployments are module-level (plans re-import them); each graph is built by a function so a
test gets fresh bind objects.
"""

from __future__ import annotations

from typing import Any

import graphserve as gs


@gs.deployment
class Embed:
    async def __call__(self, text: str) -> float:
        return float(len(text))


@gs.deployment
class Branch:
    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, x: float) -> str:
        return f"{self.name}:{x}"


@gs.deployment(num_gpus=1, num_replicas=2)
class GpuModel:
    async def __call__(self, x: float) -> float:
        return x


@gs.deployment(ray_actor_options={"num_cpus": 0.5, "num_gpus": 0.25})
class ActorOptions:
    async def __call__(self, x: float) -> float:
        return x


@gs.deployment(max_ongoing_requests=16)
class WideEnough:
    @gs.batch(max_batch_size=4, max_concurrent_batches=4, batch_wait_timeout_s=0.01)
    async def __call__(self, xs: list[float]) -> list[float]:
        return xs


@gs.deployment(max_ongoing_requests=5)
class TooNarrow:
    @gs.batch(max_batch_size=4, max_concurrent_batches=2)
    async def __call__(self, xs: list[float]) -> list[float]:
        return xs


@gs.deployment
@gs.batch(max_batch_size=3)
async def batched_function(xs: list[float]) -> list[float]:
    return [2 * x for x in xs]


class Opaque:
    """Not JSON: a constructor argument the plan cannot write."""


@gs.deployment
class Configured:
    def __init__(self, config: Any, threshold: float = 0.5) -> None:
        self.config = config
        self.threshold = threshold

    async def __call__(self, x: float) -> float:
        return x


def is_big(x: float) -> bool:
    return x > 3


def size_class(x: float) -> str:
    return "big" if x > 10 else "small"


def nested_app() -> gs.App:
    """A cond inside the True arm of another cond, and a node (`shared`) read by both arms."""
    with gs.InputNode() as inp:
        x = Embed.bind().__call__.bind(inp["text"])
        shared = Branch.bind("shared").__call__.bind(x)
        inner = gs.switch(
            gs.glue(size_class).bind(x),
            {"big": Branch.bind("big").__call__.bind(x), "small": Branch.bind("small").__call__.bind(x)},
            default=shared,
        )
        outer = gs.cond(gs.glue(is_big).bind(x), inner, shared)
    return gs.graph(outer, name="nested")


def gpu_app() -> gs.App:
    with gs.InputNode() as inp:
        out = GpuModel.bind().__call__.bind(inp["x"])
        out2 = ActorOptions.bind().__call__.bind(out)
    return gs.graph(out2, name="gpu")


def batching_app() -> gs.App:
    with gs.InputNode() as inp:
        a = WideEnough.bind().__call__.bind(inp["x"])
        b = TooNarrow.bind().__call__.bind(a)
        c = batched_function.bind(b)
    return gs.graph(c, name="batching")


def configured_app(config: Any) -> gs.App:
    with gs.InputNode() as inp:
        out = Configured.bind(config, threshold=0.25).__call__.bind(inp["x"])
    return gs.graph(out, name="configured")
