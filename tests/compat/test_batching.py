"""Ray Serve's batching guide on graphserve (issue 14, item 4).

Each test follows the guide (or Ray's own batching tests): numpy arrays returned from a
batch, streaming batches with async generators, ``batch_size_fn``, the setters used in
``reconfigure``, and the exceptions Ray raises for bad arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import pytest

import graphserve as serve
from graphserve.errors import BatchItemTooLargeError, GraphError, NodeExecutionError
from graphserve.exceptions import RayServeException


def test_bad_arguments_raise_what_ray_raises() -> None:
    with pytest.raises(TypeError, match="async def"):

        @serve.batch
        def plain(requests: list[int]) -> list[int]:
            return requests

    with pytest.raises(TypeError, match="async def"):

        @serve.batch(max_batch_size=4)
        def plain_with_options(requests: list[int]) -> list[int]:
            return requests

    for bad, kind in [({"max_batch_size": 0}, ValueError), ({"max_batch_size": 1.1}, TypeError)]:
        with pytest.raises(kind, match="max_batch_size") as info:
            serve.batch(**bad)
        assert isinstance(info.value, GraphError)
    for bad, kind in [({"batch_wait_timeout_s": -0.1}, ValueError), ({"batch_wait_timeout_s": "a"}, TypeError)]:
        with pytest.raises(kind, match="batch_wait_timeout_s"):
            serve.batch(**bad)
    with pytest.raises(TypeError, match="batch_size_fn"):
        serve.batch(batch_size_fn=3)  # type: ignore[arg-type]

    @serve.batch(max_batch_size=2.0, batch_wait_timeout_s=0)  # type: ignore[arg-type]
    async def whole_float(requests: list[int]) -> list[int]:
        return requests

    assert whole_float.get_max_batch_size() == 2 and whole_float._get_batch_wait_timeout_s() == 0


@serve.deployment
class Doubler:
    """The guide's vectorised model: one numpy call per batch."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.1)
    async def __call__(self, multiple_samples: list[int]) -> list[int]:
        self.sizes.append(len(multiple_samples))
        return np.array(multiple_samples) * 2  # type: ignore[return-value]

    def batch_sizes(self) -> list[int]:
        return self.sizes


def test_numpy_array_results_give_one_item_per_caller() -> None:
    handle = serve.run(Doubler.bind())
    responses = [handle.remote(i) for i in range(8)]
    assert [r.result(timeout_s=30) for r in responses] == [i * 2 for i in range(8)]
    assert max(handle.batch_sizes.remote().result(timeout_s=30)) > 1


async def test_wrong_results_fail_the_batch_with_a_ray_serve_exception() -> None:
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=10)
    async def too_few(items: list[int]) -> Any:
        return np.array(items[:1])

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=10)
    async def not_a_sequence(items: list[int]) -> Any:
        return "ab"

    for fn in (too_few, not_a_sequence):
        results = await asyncio.gather(fn(1), fn(2), return_exceptions=True)
        assert all(isinstance(r, RayServeException) for r in results), results
        assert "one result per input" in str(results[0])


@serve.deployment
class StreamingResponder:
    """The guide's streaming batch: each yielded list is one step for every caller."""

    @serve.batch(max_batch_size=5, batch_wait_timeout_s=0.1)
    async def generate_numbers(self, max_list: list[int]) -> AsyncGenerator[list[Any], None]:
        for i in range(max(max_list)):
            yield [str(i) if requested > i else StopIteration for requested in max_list]
            await asyncio.sleep(0.01)

    async def collect(self, limit: int) -> list[str]:
        return [item async for item in self.generate_numbers(limit)]


async def test_streaming_batch_gives_each_caller_its_own_stream() -> None:
    responder = StreamingResponder.func_or_class()
    maxes = [1, 2, 5, 6, 9]
    streams = [responder.generate_numbers(m) for m in maxes]
    got = await asyncio.wait_for(asyncio.gather(*[_drain(s) for s in streams]), 10)
    assert got == [[str(i) for i in range(m)] for m in maxes]


def test_streaming_batch_inside_a_served_deployment() -> None:
    handle = serve.run(StreamingResponder.bind())
    responses = [handle.collect.remote(m) for m in (1, 3, 4)]
    assert [r.result(timeout_s=30) for r in responses] == [["0"], ["0", "1", "2"], ["0", "1", "2", "3"]]


async def test_streaming_batch_error_ends_every_stream_of_the_batch() -> None:
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=10)
    async def steps(keys: list[str]) -> AsyncGenerator[list[str], None]:
        yield keys
        yield [*keys, "one too many"]

    streams = [steps("a"), steps("b")]
    for key, stream in zip("ab", streams, strict=True):
        assert await stream.__anext__() == key
        with pytest.raises(RayServeException, match="one result per input"):
            await stream.__anext__()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


@serve.deployment
class TokenBatcher:
    """The guide's NLP example: batches hold at most 10 tokens, not 10 sequences."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    @serve.batch(
        max_batch_size=10,
        batch_wait_timeout_s=0.2,
        batch_size_fn=lambda sequences: sum(len(s.split()) for s in sequences),
    )
    async def process(self, sequences: list[str]) -> list[int]:
        self.batches.append(sequences)
        return [len(seq.split()) for seq in sequences]

    async def __call__(self, sequence: str) -> int:
        return await self.process(sequence)

    def seen(self) -> list[list[str]]:
        return self.batches


def test_batch_size_fn_batches_by_total_tokens() -> None:
    handle = serve.run(TokenBatcher.bind())
    sequences = ["one two three four", "five six seven eight", "nine ten", "a b c d e f g h"]
    responses = [handle.remote(s) for s in sequences]
    assert [r.result(timeout_s=30) for r in responses] == [4, 4, 2, 8]
    batches = handle.seen.remote().result(timeout_s=30)
    assert sorted(s for b in batches for s in b) == sorted(sequences)
    assert all(sum(len(s.split()) for s in b) <= 10 for b in batches)
    assert any(len(b) > 1 for b in batches)  # sequences were gathered, as long as they fit


def test_an_item_larger_than_the_batch_fails_alone() -> None:
    handle = serve.run(TokenBatcher.bind())
    too_long = handle.remote(" ".join(["word"] * 11))
    fits = handle.remote("just three words")
    with pytest.raises((BatchItemTooLargeError, NodeExecutionError)) as info:
        too_long.result(timeout_s=30)
    assert isinstance(info.value, RuntimeError) or isinstance(info.value.__cause__, RuntimeError)
    assert "greater than max_batch_size" in str(info.value)
    assert fits.result(timeout_s=30) == 3


@serve.deployment
class Resizable:
    """``reconfigure`` in the guide calls the setters; here a method does."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.2)
    async def __call__(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        return items

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.__call__.set_max_batch_size(config["max_batch_size"])
        self.__call__.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])

    def settings(self) -> tuple[int, float]:
        return self.__call__._get_max_batch_size(), self.__call__._get_batch_wait_timeout_s()

    def sizes_seen(self) -> list[int]:
        return self.sizes


def test_setters_change_the_next_batches() -> None:
    handle = serve.run(Resizable.bind())
    assert [r.result(timeout_s=30) for r in [handle.remote(i) for i in range(6)]] == list(range(6))
    assert max(handle.sizes_seen.remote().result(timeout_s=30)) == 2
    handle.reconfigure.remote({"max_batch_size": 6, "batch_wait_timeout_s": 1.0}).result(timeout_s=30)
    assert handle.settings.remote().result(timeout_s=30) == (6, 1.0)
    assert [r.result(timeout_s=30) for r in [handle.remote(i) for i in range(6)]] == list(range(6))
    assert handle.sizes_seen.remote().result(timeout_s=30)[-1] == 6


async def test_a_batch_whose_callers_all_left_is_cancelled() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    cancelled = asyncio.Event()

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=10)
    async def slow(items: list[int]) -> list[int]:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return items

    callers = [asyncio.ensure_future(slow(i)) for i in range(2)]
    await asyncio.wait_for(started.wait(), 5)
    callers[0].cancel()
    await asyncio.sleep(0.01)
    assert not cancelled.is_set()  # one caller still waits for the batch
    callers[1].cancel()
    await asyncio.wait_for(cancelled.wait(), 5)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(slow(7), slow(8)), 5) == [7, 8]
