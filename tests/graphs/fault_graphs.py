"""Graphs the fault suite (``tests/faults/``) and ``bench/reliability.py`` serve with
``graphserve deploy`` (module level, so a plan or a Ray worker can re-import them)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

import graphserve as gs


class Nap(BaseModel):
    delay: float = Field(ge=0, le=30)


@gs.deployment
class Sleeper:
    """Sleeps ``delay`` seconds (async) and says which process it ran in."""

    async def __call__(self, delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"slept": delay, "pid": os.getpid()}


with gs.InputNode(schema=Nap) as nap:
    sleepy = gs.graph(Sleeper.bind().__call__.bind(nap.delay), name="sleepy")


# two replicas (on Ray: two worker processes), four calls each at most
Replicated = Sleeper.options(name="Replicated", num_replicas=2, max_ongoing_requests=4)

with gs.InputNode(schema=Nap) as req:
    replicated = gs.graph(Replicated.bind().__call__.bind(req.delay), name="replicated")


@gs.deployment
class GrabsSigterm:
    """Its constructor installs a SIGTERM handler that exits at once, as ``ray.init`` does."""

    def __init__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(15))

    async def __call__(self, delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"slept": delay}


with gs.InputNode(schema=Nap) as grab:
    grabby = gs.graph(GrabsSigterm.bind().__call__.bind(grab.delay), name="grabby")


@gs.deployment
def echo(body: Any) -> Any:
    """The JSON body back (no schema): fast normal traffic, and anything a fuzzer sends."""
    return body


with gs.InputNode() as raw:
    echoed = gs.graph(echo.bind(raw), name="echo")


class Point(BaseModel):
    x: float
    y: float = 0.0


class Order(BaseModel):
    """A schema with most JSON types, bounds and nesting, for the fuzzer."""

    id: int
    name: str = Field(min_length=1, max_length=40)
    quantity: int = Field(ge=1, le=1000)
    price: float = Field(gt=0)
    express: bool = False
    kind: Literal["book", "food", "tool"] = "book"
    tags: list[str] = Field(default_factory=list, max_length=8)
    at: Point | None = None
    notes: dict[str, int] = Field(default_factory=dict)


class Priced(BaseModel):
    id: int
    total: float
    label: str


@gs.deployment
class Pricer:
    async def __call__(self, order: Order) -> Priced:
        total = order.quantity * order.price * (1.5 if order.express else 1.0)
        return Priced(id=order.id, total=total, label=f"{order.kind}:{order.name}")


@gs.deployment
class Tagger:
    def __call__(self, tags: list[str], notes: dict[str, int]) -> dict[str, Any]:
        return {"tags": sorted(set(tags)), "notes": sum(notes.values())}


with gs.InputNode(schema=Order) as order:
    priced = Pricer.bind().__call__.bind(order)
    tagged = Tagger.bind().__call__.bind(order.tags, order.notes)
    orders = gs.graph({"priced": priced, "tagged": tagged}, name="orders")


def pair(a: Any, b: Any) -> list[Any]:
    return [a, b]


with gs.InputNode() as fields:
    picked = gs.graph(gs.glue(pair).bind(fields["a"], fields["b"]), name="picked")


@gs.deployment(max_ongoing_requests=1)
class OneAtATime:
    """A synchronous model that must run one call at a time (a GPU): counts overlapping calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, delay: float) -> dict[str, int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(delay)
        finally:
            with self.lock:
                self.running -= 1
        return {"most_at_once": self.most}


with gs.InputNode(schema=Nap) as sync_nap:
    one_at_a_time = gs.graph(OneAtATime.bind().__call__.bind(sync_nap.delay), name="one_at_a_time", timeout_s=0.2)
