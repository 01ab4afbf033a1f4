"""Deployments for the Ray backend's call coalescing tests (tests/test_ray_coalesce.py):
each kept in actors of its own (``fuse=False``), so the driver's calls go through coalescing."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import graphserve as gs
from tests.graphs.backends import EventLog


@gs.deployment(fuse=False)
class Tag:
    """Answers ``[x, its pid]``; fails for ``x == 7``."""

    async def __call__(self, x: int) -> list[int]:
        if x == 7:
            raise ValueError("seven is not allowed")
        return [x, os.getpid()]


@gs.deployment(fuse=False)
class Square:
    async def __call__(self, x: int) -> int:
        return x * x


@gs.deployment(fuse=False)
class Pair:
    """Joins two results: reads ``Tag``'s and ``Square``'s references, passed actor to actor."""

    async def __call__(self, tagged: list[int], squared: int) -> list[int]:
        return [tagged[0], squared]


@gs.deployment(fuse=False)
class Sizes:
    """Answers each item with the size of the batch it went in (a long wait: only a full batch leaves soon)."""

    @gs.batch(max_batch_size=16, batch_wait_timeout_s=30.0)
    async def __call__(self, xs: list[int]) -> list[int]:
        return [len(xs)] * len(xs)


@gs.deployment(fuse=False)
class Napper:
    """Sleeps ``seconds`` and logs "finished" ``x``, or "cancelled" ``x`` when its call is cancelled."""

    def __init__(self, log: str) -> None:
        self.log = EventLog(log)

    async def __call__(self, request: dict[str, Any]) -> int:
        x = request["x"]
        start = time.time()
        try:
            await asyncio.sleep(request["seconds"])
        except asyncio.CancelledError:
            self.log.add("cancelled", start, time.time(), str(x))
            raise
        self.log.add("finished", start, time.time(), str(x))
        return int(x)


@gs.deployment
class Inc:
    """Fused with its neighbours (the default): ``x + 1``, failing for ``x == 7``."""

    async def __call__(self, x: int) -> int:
        if x == 7:
            raise ValueError("seven is not allowed")
        return x + 1


@gs.deployment
class Twice:
    async def __call__(self, x: int) -> int:
        return 2 * x
