"""Small graphs served over HTTP by the ingress tests (module-level, so plans can re-import them)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs


class Item(BaseModel):
    x: float
    label: str = "a"


class Doubled(BaseModel):
    y: float
    label: str


class SlowRequest(BaseModel):
    delay: float = Field(ge=0, le=30)
    fail: bool = False


@gs.deployment
class Doubler:
    async def __call__(self, x: float, label: str) -> Doubled:
        return Doubled(y=2 * x, label=label)


@gs.deployment
class Sleeper:
    """Sleeps ``delay`` seconds; raises when asked to (a node failure)."""

    async def __call__(self, delay: float, fail: bool) -> dict[str, Any]:
        await asyncio.sleep(delay)
        if fail:
            raise ValueError(f"failing after {delay}s as asked")
        return {"slept": delay}


@gs.deployment(max_ongoing_requests=1, max_queued_requests=1)
class Narrow:
    """One call at a time, one waiting: the third concurrent request is refused (503)."""

    async def __call__(self, delay: float) -> float:
        await asyncio.sleep(delay)
        return delay


@gs.deployment
def keys(body: Any) -> Any:
    """Raw ingress (no InputNode): gets the JSON body itself."""
    return sorted(body) if isinstance(body, dict) else body


with gs.InputNode(schema=Item) as inp:
    doubled = Doubler.bind().__call__.bind(inp.x, inp.label)
echo_app = gs.graph(doubled, name="echo")

with gs.InputNode(schema=SlowRequest) as inp:
    slept = Sleeper.bind().__call__.bind(inp.delay, inp.fail)
slow_app = gs.graph(slept, name="slow", timeout_s=5.0)

with gs.InputNode() as inp:
    narrow = Narrow.bind().__call__.bind(inp["delay"])
narrow_app = gs.graph(narrow, name="narrow", route_prefix="/api/narrow")

raw_app = gs.graph(keys.bind(), name="raw")
