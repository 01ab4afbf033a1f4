"""Batching: full batches, the wait bound, concurrency of batches, contract errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import NodeExecutionError
from graphserve.runtime import GraphRuntime
from graphserve.runtime.batcher import Batcher, BatchOutputError


async def test_full_batch_goes_out_without_waiting_for_the_timeout() -> None:
    sizes: list[int] = []

    async def double(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return [2 * x for x in xs]

    batcher = Batcher(double, "double", max_batch_size=4, batch_wait_timeout_s=30)
    results = await asyncio.wait_for(asyncio.gather(*[batcher.submit(i) for i in range(8)]), 5)
    assert results == [2 * i for i in range(8)] and sizes == [4, 4]


async def test_partial_batch_goes_out_after_the_wait_bound() -> None:
    sizes: list[int] = []

    async def ident(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return xs

    batcher = Batcher(ident, "ident", max_batch_size=10, batch_wait_timeout_s=0.02)
    assert await asyncio.gather(*[batcher.submit(i) for i in range(3)]) == [0, 1, 2]
    assert sizes == [3]


async def test_wrong_output_length_fails_exactly_that_batch() -> None:
    calls = 0

    async def broken(xs: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        return xs[:-1] if calls == 1 else xs

    batcher = Batcher(broken, "Model.broken", max_batch_size=2, batch_wait_timeout_s=10)
    first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, BatchOutputError) for r in first)
    assert "Model.broken" in str(first[0]) and "1 results for a batch of 2" in str(first[0])
    assert await asyncio.gather(batcher.submit(3), batcher.submit(4)) == [3, 4]


async def test_exception_fails_only_its_batch() -> None:
    async def picky(xs: list[int]) -> list[int]:
        if 13 in xs:
            raise ValueError("unlucky batch")
        return xs

    batcher = Batcher(picky, "picky", max_batch_size=2, batch_wait_timeout_s=10)
    bad = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
    good = await asyncio.gather(batcher.submit(2), batcher.submit(3))
    assert all(isinstance(r, ValueError) for r in bad) and good == [2, 3]


async def test_max_concurrent_batches_bounds_batches_in_flight() -> None:
    running = 0
    peak = 0

    async def slow(xs: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return xs

    batcher = Batcher(slow, "slow", max_batch_size=2, batch_wait_timeout_s=0, max_concurrent_batches=2)
    assert await asyncio.gather(*[batcher.submit(i) for i in range(12)]) == list(range(12))
    assert peak == 2


async def test_cancelled_calls_are_dropped_before_the_batch_is_sent() -> None:
    seen: list[list[int]] = []

    async def record(xs: list[int]) -> list[int]:
        seen.append(xs)
        return xs

    batcher = Batcher(record, "record", max_batch_size=3, batch_wait_timeout_s=0.05)
    doomed = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 2
    assert seen == [[2]]


async def test_keyword_and_multiple_arguments_become_lists() -> None:
    async def combine(a: list[int], b: list[str], *, c: list[float]) -> list[str]:
        return [f"{x}{y}{z}" for x, y, z in zip(a, b, c, strict=True)]

    batcher = Batcher(combine, "combine", max_batch_size=2, batch_wait_timeout_s=10)
    assert await asyncio.gather(batcher.submit(1, "a", c=0.5), batcher.submit(2, "b", c=1.5)) == ["1a0.5", "2b1.5"]


@gs.deployment
class Doubler:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def __call__(self, xs: list[float]) -> list[float]:
        self.sizes.append(len(xs))
        await asyncio.sleep(0.01)
        return [2 * x for x in xs]

    async def sizes_seen(self, _: Any = None) -> list[int]:
        return self.sizes


async def test_batched_deployment_in_a_graph_batches_concurrent_requests() -> None:
    with gs.InputNode() as inp:
        out = Doubler.bind().__call__.bind(inp)
    runtime = GraphRuntime(compile_app(gs.graph(out, name="doubler")))
    await runtime.start()
    assert await asyncio.gather(*[runtime.execute(float(i)) for i in range(16)]) == [2.0 * i for i in range(16)]
    sizes = await runtime.handle("Doubler", "sizes_seen").remote()
    assert sum(sizes) == 16 and max(sizes) > 1
    hist = runtime.metrics.histogram(
        "graphserve_batch_size", (("graph", "doubler"), ("deployment", "Doubler"), ("method", "Doubler.__call__"))
    )
    assert hist is not None and hist.count == len(sizes) and hist.sum == 16
    await runtime.stop()


async def test_batch_wrapper_inside_a_class_called_from_call() -> None:
    """Ray Serve's pattern: __call__ awaits a batched method with one item."""

    @gs.deployment
    class Model:
        @gs.batch
        async def handle_batch(self, xs: list[str]) -> list[str]:
            return [f"{x}:{len(xs)}" for x in xs]

        async def __call__(self, x: str) -> str:
            return await self.handle_batch(x)

    with gs.InputNode() as inp:
        out = Model.bind().__call__.bind(inp)
    runtime = GraphRuntime(compile_app(gs.graph(out)))
    await runtime.start()
    results = await asyncio.gather(*[runtime.execute(str(i)) for i in range(5)])
    assert [r.split(":")[0] for r in results] == [str(i) for i in range(5)]
    assert max(int(r.split(":")[1]) for r in results) > 1
    await runtime.stop()


async def test_batch_error_in_a_graph_names_the_node() -> None:
    @gs.deployment
    class Short:
        @gs.batch(max_batch_size=2, batch_wait_timeout_s=0.01)
        async def __call__(self, xs: list[int]) -> list[int]:
            return []

    with gs.InputNode() as inp:
        out = Short.bind().__call__.bind(inp)
    runtime = GraphRuntime(compile_app(gs.graph(out)))
    await runtime.start()
    with pytest.raises(NodeExecutionError, match="one result per input") as info:
        await runtime.execute(1)
    assert info.value.node == "Short.__call__"
    await runtime.stop()


def test_max_ongoing_requests_never_caps_a_batch() -> None:
    @gs.deployment(max_ongoing_requests=4)
    class Big:
        @gs.batch(max_batch_size=32, max_concurrent_batches=2)
        async def __call__(self, xs: list[int]) -> list[int]:
            return xs

    with gs.InputNode() as inp:
        plan = compile_app(gs.graph(Big.bind().__call__.bind(inp)))
    assert plan.deployment("Big").max_ongoing_requests == 64
    assert [w.code for w in plan.warnings] == ["GS110"]


async def test_next_batch_starts_before_the_previous_batch_callers_resume() -> None:
    events: list[tuple[str, Any]] = []

    async def ident(xs: list[int]) -> list[int]:
        events.append(("start", tuple(xs)))
        await asyncio.sleep(0.01)
        return xs

    batcher = Batcher(ident, "ident", max_batch_size=2, batch_wait_timeout_s=30)

    async def call(x: int) -> int:
        result: int = await batcher.submit(x)
        events.append(("done", x))
        return result

    assert await asyncio.wait_for(asyncio.gather(*[call(i) for i in range(4)]), 5) == [0, 1, 2, 3]
    # the queued batch (2, 3) is sent as soon as (0, 1) returns, before its callers go on
    assert events.index(("start", (2, 3))) < events.index(("done", 0))
    assert events.index(("start", (2, 3))) < events.index(("done", 1))


def test_the_plans_batching_values_replace_the_decorators() -> None:
    """``graphserve deploy plan.json`` runs the plan's (planned or edited) values, not ``@gs.batch``'s."""
    from graphserve.plan import BatchingPlan
    from graphserve.runtime.batcher import batch_limits, configure_batching, get_batcher

    class Owner:
        pass

    owner = Owner()
    planned = BatchingPlan(
        method="predict",
        max_batch_size=3,
        batch_wait_timeout_s=0.002,
        max_concurrent_batches=1,
        adaptive=True,
        latency_budget_s=0.02,
    )
    configure_batching(owner, [planned])

    async def fn(xs: list[int]) -> list[int]:
        return xs

    batcher = get_batcher(
        owner, "Owner.predict", fn, {"max_batch_size": 10, "batch_wait_timeout_s": 0.01, "max_concurrent_batches": 1}
    )
    assert (batcher.max_batch_size, batcher.batch_wait_timeout_s, batcher.adaptive is not None) == (3, 0.002, True)
    assert batch_limits(owner)["Owner.predict"]["size_limit"] == 3


def test_a_plan_changes_its_own_batcher_not_the_shared_decorator_settings() -> None:
    """Two owners of one ``@gs.batch`` method: the plan of one leaves the other's (and the
    decorator's) settings alone; the run-time setters still reach both."""
    from graphserve.batching import SETTINGS_ATTR
    from graphserve.plan import BatchingPlan
    from graphserve.runtime.batcher import configure_batching, get_batcher

    class Model:
        @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
        async def predict(self, xs: list[int]) -> list[int]:
            return xs

    planned, unplanned = Model(), Model()
    plan = BatchingPlan(method="predict", max_batch_size=2, batch_wait_timeout_s=0.001, max_concurrent_batches=3)
    configure_batching(planned, [plan])
    settings = getattr(Model.predict, SETTINGS_ATTR)
    shared = get_batcher(unplanned, "Model.predict", Model.predict, settings)
    own = get_batcher(planned, "Model.predict", Model.predict, settings)
    assert (own.max_batch_size, own.batch_wait_timeout_s, own.max_concurrent_batches) == (2, 0.001, 3)
    assert (settings.max_batch_size, settings.batch_wait_timeout_s, settings.max_concurrent_batches) == (8, 0.05, 1)
    assert (shared.max_batch_size, shared.max_concurrent_batches) == (8, 1)
    Model.predict.set_max_batch_size(5)  # e.g. from reconfigure: every batcher of the method follows
    assert (own.max_batch_size, shared.max_batch_size, Model.predict.get_max_batch_size()) == (5, 5, 5)


async def test_adaptive_limits_count_in_batch_size_fn_units() -> None:
    """``adaptive=True`` with ``batch_size_fn``: the adaptive limit, the batches it lets out and the
    fitted batch times all use the measure (tokens), not the number of calls."""
    observed: list[int] = []

    async def count_tokens(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    batcher = Batcher(
        count_tokens,
        "tokens",
        max_batch_size=12,
        batch_wait_timeout_s=0.05,
        batch_size_fn=lambda texts: sum(len(t.split()) for t in texts),
        adaptive=True,
        latency_budget_s=5.0,
    )
    assert batcher.adaptive is not None
    record = batcher.adaptive.observe

    def spy(size: int, latency_s: float, run_s: float, started: float | None = None) -> None:
        observed.append(size)
        record(size, latency_s, run_s, started)

    batcher.adaptive.observe = spy  # type: ignore[method-assign]
    texts = ["a b c", "d e f g", "h i", "j k l m n"]  # 3 + 4 + 2 = 9 tokens fit in 12; 5 more do not
    results = await asyncio.wait_for(asyncio.gather(*[batcher.submit(t) for t in texts]), 5)
    assert results == [3, 4, 2, 5]
    assert observed == [9, 5]  # tokens per batch, not 3 and 1 calls
    assert batcher.size_limit == 12  # inside the budget: the limit stays at max_batch_size (tokens)
    batcher.adaptive.limit = 6  # a backed-off limit (tokens) bounds the next batch by measure
    assert await asyncio.wait_for(asyncio.gather(*[batcher.submit(t) for t in ["a b c", "d e f", "g"]]), 5) == [3, 3, 1]
    assert observed[2:] == [6, 1]
