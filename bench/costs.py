"""The work the benchmark's workloads do, shared by every system so they all do the same.

W3's models sleep 10 ms; W4's batched model costs 2 ms + 0.5 ms per item, either
sleeping (GPU-like: the CPU is free) or busy-looping (CPU-bound); W5 runs a cheap
model (2 ms) and, for requests with ``x >= 0.9`` (10% of the request mix), an
expensive one (20 ms). Requests are ``{"x": <float>}``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

FANOUT_S = 0.010
FANOUT_WIDTH = 3
BATCH_FIXED_S = 0.002
BATCH_PER_ITEM_S = 0.0005
MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.005
CHEAP_S = 0.002
EXPENSIVE_S = 0.020
EXPENSIVE_FRACTION = 0.1
EXPENSIVE_THRESHOLD = 0.9

#: The request every workload but W5 gets; W5 cycles through ``W5_BODIES``.
BODY = b'{"x": 1.0}'
W5_BODIES = [b'{"x": %.1f}' % (i / 10) for i in range(10)]  # x = 0.9 for exactly 10% of requests


def theoretical_batch_rps() -> float:
    """W4's ceiling: full batches back to back, 32 / (0.002 + 0.0005 * 32) ~ 1778 req/s."""
    return MAX_BATCH_SIZE / (BATCH_FIXED_S + BATCH_PER_ITEM_S * MAX_BATCH_SIZE)


def conditional_ideal_s() -> float:
    """W5's ideal mean latency: the cheap model plus 10% of the expensive one."""
    return CHEAP_S + EXPENSIVE_FRACTION * EXPENSIVE_S


def batch_cost_s(size: int) -> float:
    return BATCH_FIXED_S + BATCH_PER_ITEM_S * size


def busy(seconds: float) -> None:
    """Burn the CPU for ``seconds`` (the CPU-bound model)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def gpu_batch(xs: list[Any]) -> list[Any]:
    await asyncio.sleep(batch_cost_s(len(xs)))
    return list(xs)


async def cpu_batch(xs: list[Any]) -> list[Any]:
    busy(batch_cost_s(len(xs)))
    return list(xs)


def expected(workload: str, x: float) -> Any:
    """What each workload answers for ``{"x": x}`` (checked on every system before loading it)."""
    if workload in ("W1", "W2"):
        return {"x": x}
    if workload == "W3":
        return FANOUT_WIDTH * x
    if workload in ("W4", "W4cpu"):
        return x
    if workload == "W5":
        return 2 * x if x >= EXPENSIVE_THRESHOLD else x
    raise KeyError(workload)
