"""Small deployments shared by the core tests. Module-level so plans can re-import them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

from pydantic import BaseModel, field_validator

import graphserve as gs
from tests.graphs.backends import BrokenInit as BrokenInit  # shared with the backend suite
from tests.graphs.backends import Fails as Fails


class Request(BaseModel):
    text: str
    value: float = 1.0


class Strict(BaseModel):
    """A schema whose validator has a bug (raises something pydantic does not turn into a ValidationError)."""

    value: float

    @field_validator("value")
    @classmethod
    def buggy(cls, value: float) -> float:
        if value < 0:
            raise RuntimeError("a bug in the validator")
        return value


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
def double(x: float) -> float:
    return 2 * x
