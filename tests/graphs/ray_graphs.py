"""Deployments for the Ray-only tests (tests/test_ray_backend.py): replicas that die,
and replicas that report the resources Ray gave them."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import graphserve as gs
from tests.graphs.backends import EventLog


@gs.deployment
class Mortal:
    """``"die"`` kills its process; ``"sleepN"`` logs "sleeping" and sleeps N seconds; answers with its pid."""

    def __init__(self, log: str) -> None:
        self.log = EventLog(log)
        self.log.add("built", 0.0, 0.0, str(os.getpid()))

    async def __call__(self, command: str) -> int:
        if command == "die":
            os._exit(1)
        if command.startswith("sleep"):
            self.log.add("sleeping", 0.0, 0.0, str(os.getpid()))  # tests wait for this, not for time
            await asyncio.sleep(float(command[5:]))
        return os.getpid()


@gs.deployment
class Placement:
    """What Ray gave this replica: its resources, GPU ids, and whether torch sees CUDA."""

    async def __call__(self, _: Any = None) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except ImportError:  # pragma: no cover - torch is a dev dependency
            cuda = None
        return {
            "resources": context.get_assigned_resources(),
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda": cuda,
            "pid": os.getpid(),
        }
