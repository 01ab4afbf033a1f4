"""Deployments for the shared backend suite (tests/test_backends.py).

Module-level so the Ray backend's actors import them by path. Replicas may live in
other processes, so they report what they did (calls, start/end times, replica ids,
batch sizes) to an :class:`EventLog`, an append-only file that every process can write
and the test reads back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from pydantic import BaseModel

import graphserve as gs


class EventLog:
    """JSON lines of (name, start, end, who): one small append per event, from any process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)

    def add(self, name: str, start: float, end: float, who: str = "") -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps([name, start, end, who]) + "\n")

    def events(self) -> list[tuple[str, float, float, str]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return [tuple(json.loads(line)) for line in f if line.strip()]  # type: ignore[misc]
        except FileNotFoundError:
            return []

    def count(self, name: str) -> int:
        return sum(1 for event in self.events() if event[0] == name)

    def spans(self) -> dict[str, tuple[float, float]]:
        return {name: (start, end) for name, start, end, _ in self.events()}


def who(instance: Any) -> str:
    """An id for one replica, unique across processes."""
    return f"{os.getpid()}:{id(instance)}"


class Text(BaseModel):
    text: str


class Scores(BaseModel):
    score: float
    label: str


@gs.deployment
class Sleep:
    """Sleeps ``delay`` seconds and logs when it ran."""

    def __init__(self, name: str, log: str, delay: float = 0.2) -> None:
        self.name, self.log, self.delay = name, EventLog(log), delay

    async def __call__(self, x: float) -> float:
        start = time.time()
        await asyncio.sleep(self.delay)
        self.log.add(self.name, start, time.time(), who(self))
        return x + 1


@gs.deployment
class SyncSleep:
    """A blocking method: must run in a worker thread, not on the event loop."""

    def __init__(self, log: str, delay: float = 0.2) -> None:
        self.log, self.delay = EventLog(log), delay

    def __call__(self, x: float) -> float:
        start = time.time()
        time.sleep(self.delay)
        self.log.add(f"sync-{x}", start, time.time(), who(self))
        return x * 2


@gs.deployment
class Count:
    """Logs each call under its name and answers with the name."""

    def __init__(self, name: str, log: str) -> None:
        self.name, self.log = name, EventLog(log)

    async def __call__(self, x: Any) -> str:
        now = time.time()
        self.log.add(self.name, now, now, who(self))
        return self.name


@gs.deployment
class Add:
    async def __call__(self, *parts: float) -> float:
        return sum(parts)


@gs.deployment
class Scorer:
    async def score(self, text: str) -> Scores:
        return Scores(score=min(len(text) / 10, 1.0), label=text)


@gs.deployment
class Echo:
    async def text(self, s: str) -> str:
        return s


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
class SyncCaller:
    """A blocking method that calls another deployment through a handle with ``.result()``."""

    def __init__(self, other: Any) -> None:
        self.other = other

    def __call__(self, x: float) -> float:
        return self.other.remote(x).result(timeout_s=30) + 100


@gs.deployment
class Fan:
    """Calls several deployments at once through handles (asyncio.wait and gather)."""

    def __init__(self, models: list[Any]) -> None:
        self.models = models

    async def __call__(self, x: float) -> list[float]:
        responses = [model.remote(x) for model in self.models]
        done, _ = await asyncio.wait(responses)
        assert len(done) == len(responses)
        return sorted(await asyncio.gather(*[model.remote(x) for model in self.models]))


@gs.deployment
class Slowpoke:
    """Sleeps, then logs that it finished (the deadline tests expect it never does)."""

    def __init__(self, log: str, delay: float = 0.6) -> None:
        self.log, self.delay = EventLog(log), delay

    async def __call__(self, x: float) -> float:
        start = time.time()
        await asyncio.sleep(self.delay)
        self.log.add("finished", start, time.time(), who(self))
        return x


@gs.deployment
class Worker:
    """Logs each call's span and replica, to check routing and per-replica concurrency."""

    def __init__(self, log: str, delay: float = 0.1) -> None:
        self.log, self.delay = EventLog(log), delay

    async def __call__(self, x: int) -> int:
        start = time.time()
        await asyncio.sleep(self.delay)
        self.log.add("work", start, time.time(), who(self))
        return x


@gs.deployment
class Batched:
    """Answers each item with the size of the batch it went in."""

    @gs.batch(max_batch_size=4, batch_wait_timeout_s=0.1)
    async def __call__(self, xs: list[float]) -> list[int]:
        await asyncio.sleep(0.05)
        return [len(xs)] * len(xs)


@gs.deployment
def double(x: float) -> float:
    return 2 * x


def is_positive(x: float) -> bool:
    return x > 0


def explode(x: Any) -> Any:
    raise KeyError("nope")


positive = gs.glue(is_positive)
boom = gs.glue(explode)
