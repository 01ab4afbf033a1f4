"""Streaming responses over HTTP and through handles (issue 14, item 7).

An ingress returning a Starlette ``StreamingResponse``, a generator or an async generator
streams its chunks as they are produced (chunked transfer, no buffering); handles called
with ``.options(stream=True)`` return iterators; a client that disconnects cancels the
request's work.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import graphserve as serve
from graphserve.errors import GraphError
from graphserve.handle import DeploymentHandle, DeploymentResponseGenerator
from tests.graphs import rayserve_streaming as rs


@pytest.fixture(autouse=True)
def _fresh_events() -> None:
    for event in (rs.RELEASE, rs.CLOSED, rs.CANCELLED):
        event.clear()


def test_a_streaming_response_sends_each_chunk_as_it_comes() -> None:
    handle = serve.run(rs.StreamingResponder.bind())
    with httpx.stream("GET", handle.url, timeout=30) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["content-type"].startswith("text/plain")
        chunks = response.iter_text()
        assert next(chunks) == "first"  # sent while the generator still waits: nothing is buffered
        rs.RELEASE.set()
        assert "".join(chunks) == "second"


def test_generators_returned_by_an_ingress_stream_too() -> None:
    lines = serve.run(rs.Lines.bind(), name="lines", route_prefix="/lines")
    assert httpx.get(lines.url, timeout=30).text == 'text {"n":1}\n[2]\n'
    chunks = serve.run(rs.AsyncLines.bind(), name="async", route_prefix="/async")
    assert httpx.get(chunks.url, timeout=30).content == b"0;1;2;"


def test_a_streaming_batch_over_http_gives_each_client_its_numbers() -> None:
    handle = serve.run(rs.BatchedStream.bind())

    def numbers(limit: int) -> list[str]:
        with httpx.stream("GET", f"{handle.url}/?max={limit}", timeout=30) as response:
            return list(response.iter_text())

    maxes = [1, 2, 5, 6, 9]
    with ThreadPoolExecutor(max_workers=5) as pool:
        got = list(pool.map(numbers, maxes))
    assert ["".join(chunks) for chunks in got] == ["".join(str(i) for i in range(m)) for m in maxes]


def test_stream_handles_iterate_in_async_and_blocking_code() -> None:
    handle: DeploymentHandle = serve.run(rs.Caller.bind(rs.Streamer.bind())).options(stream=True)
    r = handle.remote(10)
    assert isinstance(r, DeploymentResponseGenerator)
    assert list(r) == list(range(10))  # blocking code iterates it too
    assert serve.get_app_handle("default").total.remote(5).result(timeout_s=30) == 10


async def test_stream_handles_from_another_event_loop() -> None:
    handle = serve.run(rs.Caller.bind(rs.Streamer.bind())).options(stream=True)
    assert [i async for i in handle.remote(4)] == [0, 1, 2, 3]


def test_a_client_that_leaves_a_stream_closes_its_generator() -> None:
    handle = serve.run(rs.StreamingResponder.bind())
    with httpx.stream("GET", handle.url, timeout=30) as response:
        assert next(response.iter_text()) == "first"
    # the connection is closed while the generator waits for RELEASE: the server closes it
    assert rs.CLOSED.wait(10)
    assert not rs.RELEASE.is_set()
    rs.RELEASE.set()  # frees the worker thread the generator waited in


def test_a_client_that_leaves_cancels_the_requests_work() -> None:
    handle = serve.run(rs.Slow.bind())
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(handle.url, timeout=0.3)
    assert rs.CANCELLED.wait(10)


def test_stream_handles_are_refused_on_ray_with_a_clear_error() -> None:
    class References:
        async def submit(self, *args: Any) -> Any: ...

        async def fetch(self, reference: Any) -> Any: ...

        def forget(self, reference: Any) -> None: ...

    async def call(*args: Any) -> Any: ...

    loop = asyncio.new_event_loop()
    try:
        handle = DeploymentHandle("Streamer", call, loop, references=References(), stream=True)
        with pytest.raises(GraphError, match="not supported on the Ray backend"):
            handle.remote(3)
    finally:
        loop.close()


@serve.deployment
class Counter:
    def count(self, limit: int) -> Any:
        yield from range(limit)

    async def acount(self, limit: int) -> Any:
        for i in range(limit):
            yield i


@serve.deployment
class CallsWithoutStream:
    def __init__(self, counter: DeploymentHandle) -> None:
        self.counter = counter

    async def __call__(self) -> str:
        try:
            await self.counter.acount.remote(2)
        except TypeError as exc:  # Ray Serve raises a TypeError too
            return f"refused: {exc}"
        return "not refused"


def test_a_generator_method_called_without_stream_is_a_clear_error() -> None:
    from graphserve.errors import StreamRequiredError

    handle = serve.run(Counter.bind())
    for method in (handle.count, handle.acount):
        with pytest.raises(StreamRequiredError, match=r"options\(stream=True\)"):
            method.remote(3).result(timeout_s=30)
        assert list(method.options(stream=True).remote(3)) == [0, 1, 2]  # the right call still works
    inside = serve.run(CallsWithoutStream.bind(Counter.bind()), name="inside", route_prefix="/inside")
    assert inside.remote().result(timeout_s=30).startswith("refused: the deployment method is a generator")
