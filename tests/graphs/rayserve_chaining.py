"""Ray Serve's model composition guide: responses passed on to other calls (issue 14, item 1)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import graphserve as serve
from graphserve.handle import DeploymentHandle, DeploymentResponse


@serve.deployment
class Adder:
    def __init__(self, increment: int):
        self._increment = increment

    def __call__(self, val: int) -> int:
        return val + self._increment


@serve.deployment
class Multiplier:
    def __init__(self, multiple: int):
        self._multiple = multiple

    def __call__(self, val: int) -> int:
        return val * self._multiple


@serve.deployment
class Ingress:
    """The guide's chain: the adder's response goes straight into the multiplier."""

    def __init__(self, adder: DeploymentHandle, multiplier: DeploymentHandle):
        self._adder = adder
        self._multiplier = multiplier

    async def __call__(self, input: int) -> int:
        adder_response: DeploymentResponse = self._adder.remote(input)
        multiplier_response: DeploymentResponse = self._multiplier.remote(adder_response)
        return await multiplier_response


@serve.deployment
class Collector:
    """Receives responses nested in lists, tuples and dicts, positional and keyword."""

    def collect(self, items: list[Any], table: dict[str, Any], *, deep: Any = None) -> dict[str, Any]:
        return {"items": items, "table": table, "deep": deep}


@serve.deployment
class Slow:
    async def __call__(self, x: int, delay_s: float = 0.3) -> int:
        await asyncio.sleep(delay_s)
        return x


@serve.deployment
class Composer:
    def __init__(self, adder: DeploymentHandle, collector: DeploymentHandle, slow: DeploymentHandle):
        self.adder = adder
        self.collector = collector
        self.slow = slow

    async def nested(self, x: int) -> dict[str, Any]:
        a, b, c = self.adder.remote(x), self.adder.remote(x + 1), self.adder.remote(x + 2)
        return await self.collector.collect.remote([a, (b, 7)], {"c": c}, deep=[{"again": a}])

    def from_a_thread(self, x: int) -> int:
        """A sync method (run in a worker thread) chaining responses and waiting with .result()."""
        return self.adder.remote(self.adder.remote(x)).result(timeout_s=30)

    async def loop_stays_free(self, x: int) -> dict[str, float]:
        """While a call waits for a slow response it depends on, the event loop runs other work."""
        start = time.perf_counter()
        chained = self.adder.remote(self.slow.remote(x, 0.3))
        await asyncio.sleep(0.05)
        ticked = time.perf_counter() - start  # the loop ran this coroutine on, chained is still waiting
        result = await chained
        return {"result": result, "ticked_s": ticked, "total_s": time.perf_counter() - start}


chain_app = Ingress.bind(Adder.bind(increment=1), Multiplier.bind(multiple=2))
composer_app = Composer.bind(Adder.bind(increment=1), Collector.bind(), Slow.bind())
