"""Deployments for the multi-node tests (tests/test_ray_cluster.py): each answer says which
Ray node and process computed it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import graphserve as gs


def _where() -> dict[str, Any]:
    import ray

    return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}


@gs.deployment(num_replicas=2, num_cpus=0.25)
class First:
    """Adds 1; ``{"sleep": s}`` holds the call ``s`` seconds (so a node can die under it)."""

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("sleep"):
            await asyncio.sleep(float(request["sleep"]))
        return {"x": int(request.get("x", 0)) + 1, "path": [_where()]}


@gs.deployment(num_replicas=2, num_cpus=0.25)
class Second:
    async def __call__(self, value: dict[str, Any]) -> dict[str, Any]:
        return {"x": value["x"] * 10, "path": [*value["path"], _where()]}


@gs.deployment(num_gpus=1, num_cpus=0)
class OnGPU:
    async def __call__(self, _: Any = None) -> dict[str, Any]:
        import ray

        return {**_where(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}


def chain() -> gs.App:
    with gs.InputNode() as request:
        out = Second.bind().__call__.bind(First.bind().__call__.bind(request))
    return gs.graph(out, name="chain")


def gpu() -> gs.App:
    with gs.InputNode() as request:
        out = OnGPU.bind().__call__.bind(request)
    return gs.graph(out, name="gpu")


chain_app = chain()
