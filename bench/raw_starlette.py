"""The ceiling: the benchmark's work inline in plain Starlette handlers (no graph, no hops).

Served by uvicorn with the same settings as graphserve's server (uvloop and httptools,
no access log, one process). W4 needs a batcher to do the same work, so a minimal one
is written inline here (gather up to 32 waiting requests, run them as one batch).

    python -m bench.raw_starlette --port 8001        # POST /w1 ... /w5
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import costs

BatchFn = Callable[[list[Any]], Awaitable[list[Any]]]


class InlineBatcher:
    """Requests wait in a queue; one loop sends up to ``MAX_BATCH_SIZE`` of them at a time, when
    full or when the oldest has waited ``BATCH_WAIT_S`` (the same rule as graphserve's batcher)."""

    def __init__(self, fn: BatchFn) -> None:
        self.fn = fn
        self.queue: deque[tuple[Any, asyncio.Future[Any], float]] = deque()
        self.wakeup = asyncio.Event()  # binds to a loop on first use, not here
        self.task: asyncio.Task[None] | None = None

    async def submit(self, x: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self.task is None:
            self.task = loop.create_task(self._run())
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append((x, future, loop.time()))
        if len(self.queue) == 1 or len(self.queue) >= costs.MAX_BATCH_SIZE:
            self.wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            while len(self.queue) < costs.MAX_BATCH_SIZE:
                remaining = self.queue[0][2] + costs.BATCH_WAIT_S - loop.time()
                if remaining <= 0:
                    break
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = [self.queue.popleft() for _ in range(min(costs.MAX_BATCH_SIZE, len(self.queue)))]
            try:
                results = await self.fn([x for x, _, _ in batch])
            except Exception as exc:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


async def _noop(x: Any) -> Any:
    return x


async def _model(x: float) -> float:
    await asyncio.sleep(costs.FANOUT_S)
    return x


async def w1(request: Request) -> Response:
    return _json(await _noop(orjson.loads(await request.body())))


async def w2(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return _json(await _noop(await _noop(await _noop(body))))


async def w3(request: Request) -> Response:
    x = orjson.loads(await request.body())["x"]
    a, b, c = await asyncio.gather(*(_model(x) for _ in range(costs.FANOUT_WIDTH)))
    return _json(a + b + c)


_gpu = InlineBatcher(costs.gpu_batch)
_cpu = InlineBatcher(costs.cpu_batch)


async def w4(request: Request) -> Response:
    return _json(await _gpu.submit(orjson.loads(await request.body())["x"]))


async def w4cpu(request: Request) -> Response:
    return _json(await _cpu.submit(orjson.loads(await request.body())["x"]))


async def w5(request: Request) -> Response:
    x = orjson.loads(await request.body())["x"]
    await asyncio.sleep(costs.CHEAP_S)
    if x >= costs.EXPENSIVE_THRESHOLD:
        await asyncio.sleep(costs.EXPENSIVE_S)
        x = 2 * x
    return _json(x)


HANDLERS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W4cpu": w4cpu, "W5": w5}
app = Starlette(routes=[Route(f"/{wid.lower()}", fn, methods=["POST"]) for wid, fn in HANDLERS.items()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0: a free port (printed as 'PORT <n>')")
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app, loop="auto", http="auto", ws="none", log_level="warning", access_log=False, server_header=False,
        lifespan="off",
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
