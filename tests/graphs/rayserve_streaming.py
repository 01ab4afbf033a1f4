"""Streaming deployments as Ray Serve's HTTP and handle guides write them (issue 14, item 7)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

import graphserve as serve
from graphserve.handle import DeploymentHandle, DeploymentResponseGenerator

RELEASE = threading.Event()  # the test lets the stream go on once it has read the first chunk
CLOSED = threading.Event()  # set when a stream's generator is closed (its client left)
CANCELLED = threading.Event()  # set when a slow request's work is cancelled


@serve.deployment
class StreamingResponder:
    async def generate(self, first: str) -> AsyncGenerator[str, None]:
        try:
            yield first
            await asyncio.to_thread(RELEASE.wait, 30)
            yield "second"
        finally:
            CLOSED.set()

    def __call__(self, request: Request) -> StreamingResponse:
        return StreamingResponse(self.generate(request.query_params.get("first", "first")), media_type="text/plain")


@serve.deployment
class Lines:
    """__call__ is a generator: each item is a chunk (text as it is, objects as JSON lines)."""

    def __call__(self, request: Request) -> Generator[Any, None, None]:
        yield "text "
        yield {"n": 1}
        yield [2]


@serve.deployment
class AsyncLines:
    async def __call__(self, request: Request) -> AsyncGenerator[bytes, None]:
        for i in range(3):
            yield f"{i};".encode()
            await asyncio.sleep(0)


@serve.deployment
class Streamer:
    def __call__(self, limit: int) -> Generator[int, None, None]:
        yield from range(limit)


@serve.deployment
class Caller:
    def __init__(self, streamer: DeploymentHandle):
        self._streamer = streamer.options(stream=True)

    async def __call__(self, limit: int) -> AsyncGenerator[int, None]:
        r: DeploymentResponseGenerator = self._streamer.remote(limit)
        async for i in r:
            yield i

    async def total(self, limit: int) -> int:
        return sum([i async for i in self._streamer.remote(limit)])


@serve.deployment
class Slow:
    async def __call__(self, request: Request) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            CANCELLED.set()
            raise
        return "too late"


@serve.deployment
class BatchedStream:
    """The batching guide's streaming batch behind a StreamingResponse."""

    @serve.batch(max_batch_size=5, batch_wait_timeout_s=0.1)
    async def generate_numbers(self, max_list: list[int]) -> AsyncGenerator[list[Any], None]:
        for i in range(max(max_list)):
            yield [str(i) if requested > i else StopIteration for requested in max_list]
            await asyncio.sleep(0.01)

    async def __call__(self, request: Request) -> StreamingResponse:
        limit = int(request.query_params.get("max", "25"))
        return StreamingResponse(self.generate_numbers(limit), status_code=200, media_type="text/plain")
