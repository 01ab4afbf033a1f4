"""Small deployments shared by the core tests. Module-level so plans can re-import them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

from pydantic import BaseModel

import graphserve as gs


class Request(BaseModel):
    text: str
    value: float = 1.0


class Scores(BaseModel):
    score: float
    label: str


class Recorder:
    """Records (name, start, end) of calls, thread-safe, to assert overlap and counts."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def add(self, name: str, start: float, end: float) -> None:
        with self.lock:
            self.events.append((name, start, end))

    def count(self, name: str) -> int:
        return sum(1 for n, _, _ in self.events if n == name)

    def clear(self) -> None:
        with self.lock:
            self.events.clear()


RECORDER = Recorder()


@gs.deployment
class Slow:
    """Sleeps, and records when it ran."""

    def __init__(self, name: str, delay: float = 0.05) -> None:
        self.name = name
        self.delay = delay

    async def __call__(self, x: float) -> float:
        start = time.monotonic()
        await asyncio.sleep(self.delay)
        RECORDER.add(self.name, start, time.monotonic())
        return x + 1


@gs.deployment
class SyncSlow:
    """A blocking method: must run in a worker thread."""

    def __call__(self, x: float) -> float:
        start = time.monotonic()
        time.sleep(0.05)
        RECORDER.add("sync", start, time.monotonic())
        return x * 2


@gs.deployment
class Scorer:
    async def score(self, text: str) -> Scores:
        return Scores(score=min(len(text) / 10, 1.0), label=text)

    async def length(self, text: str) -> int:
        return len(text)


@gs.deployment
class Counter:
    """Counts its calls per instance name."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, x: Any) -> str:
        RECORDER.add(self.name, time.monotonic(), time.monotonic())
        return self.name


@gs.deployment
class Combiner:
    async def __call__(self, *parts: float) -> float:
        return sum(parts)


@gs.deployment
class Takes:
    async def number(self, x: float) -> float:
        return x

    async def text(self, s: str) -> str:
        return s

    async def maybe(self, s: Optional[str]) -> str:  # noqa: UP045 - Optional on purpose
        return s or ""

    async def ints(self, xs: list[int]) -> int:
        return sum(xs)

    async def scores(self, s: Scores) -> float:
        return s.score

    async def mapping(self, d: dict[str, float]) -> float:
        return sum(d.values())


@gs.deployment
class Fails:
    async def __call__(self, x: Any) -> Any:
        raise ValueError(f"bad input {x!r}")


@gs.deployment
class BrokenInit:
    def __init__(self) -> None:
        raise RuntimeError("weights missing")

    async def __call__(self, x: Any) -> Any:
        return x


@gs.deployment
class Caller:
    """Holds a handle to another deployment, Ray Serve style."""

    def __init__(self, other: Any) -> None:
        self.other = other

    async def __call__(self, x: float) -> float:
        return await self.other.remote(x) * 10

    async def via_method(self, text: str) -> Scores:
        return await self.other.score.remote(text)


@gs.deployment
def double(x: float) -> float:
    return 2 * x


def is_positive(x: float) -> bool:
    return x > 0


positive = gs.glue(is_positive)
