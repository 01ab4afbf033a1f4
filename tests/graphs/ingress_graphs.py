"""Small graphs served over HTTP by the ingress tests (module-level, so plans can re-import them)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse

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


#: Sleeps that ran to the end (a request cancelled past its deadline must not add one).
FINISHED: list[float] = []


@gs.deployment
class Sleeper:
    """Sleeps ``delay`` seconds; raises when asked to (a node failure)."""

    async def __call__(self, delay: float, fail: bool) -> dict[str, Any]:
        await asyncio.sleep(delay)
        FINISHED.append(delay)
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
class Batched:
    """Batches its calls; the batch sizes show in the metrics."""

    @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def __call__(self, xs: list[float]) -> list[float]:
        return [x + 1 for x in xs]


@gs.deployment
class Broken:
    def __init__(self) -> None:
        raise RuntimeError("weights missing")

    async def __call__(self, x: Any) -> Any:
        return x


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

with gs.InputNode(schema=SlowRequest) as inp:
    limited = Sleeper.bind().__call__.bind(inp.delay, inp.fail)
deadline_app = gs.graph(limited, name="deadline", timeout_s=0.3)

with gs.InputNode(schema=Item) as inp:
    batched = Batched.bind().__call__.bind(inp.x)
batched_app = gs.graph(batched, name="batched")

with gs.InputNode() as inp:
    broken = Broken.bind().__call__.bind(inp["x"])
broken_app = gs.graph(broken, name="broken")


class Line(BaseModel):
    sku: str = Field(min_length=1, max_length=20)
    qty: int = Field(ge=1, le=100)
    price: float = Field(ge=0, le=1e6)


class Order(BaseModel):
    lines: list[Line] = Field(max_length=50)
    coupon: str | None = None


@gs.deployment
class Totaler:
    async def __call__(self, order: Order) -> dict[str, Any]:
        total = sum(line.qty * line.price for line in order.lines)
        if order.coupon:
            total *= 0.9
        return {"total": round(total, 2), "lines": len(order.lines)}


with gs.InputNode(schema=Order) as inp:
    total = Totaler.bind().__call__.bind(inp)
order_app = gs.graph(total, name="order")


class Opaque:
    """Not JSON: a graph returning it is a 500 naming the output."""


@gs.deployment
def opaque(body: Any) -> Any:
    return {"value": Opaque()}


opaque_app = gs.graph(opaque.bind(), name="opaque")


@gs.deployment
class Headed:
    """Answers with a Response of its own, with a header the request chooses: ``{"header": "..."}``."""

    async def __call__(self, body: dict[str, str]) -> PlainTextResponse:
        return PlainTextResponse("headed", headers={"X-Chosen": body["header"]})


headed_app = gs.graph(Headed.bind(), name="headed")
