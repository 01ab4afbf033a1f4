"""Call coalescing on the Ray backend (``runtime/ray_backend.py``): calls the driver starts on
one replica in one step of its event loop go as one actor call, and each caller still gets its
own result, its own error, its own batch place and its own cancellation.

Counts are the actor's own (``ReplicaActor.received``: actor calls, and the calls they carried).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import DeadlineExceededError, NodeExecutionError
from graphserve.runtime import GraphRuntime
from tests.graphs import coalesce_graphs as c
from tests.graphs.backends import EventLog

pytestmark = pytest.mark.slow

CALLS = 16


@pytest.fixture(autouse=True)
def _ray(ray_cluster: Any) -> Any:
    return ray_cluster


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[GraphRuntime]:
    runtime = GraphRuntime(compile_app(app), backend="ray")
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def received(runtime: GraphRuntime, deployment: str) -> tuple[int, int]:
    """(actor calls, calls they carried) on ``deployment``'s only replica."""
    (actor,) = runtime.backend.actors(deployment)  # type: ignore[union-attr]
    actor_calls, calls = await actor.received.remote()
    return int(actor_calls), int(calls)


async def together(runtime: GraphRuntime, requests: list[Any], timeout_s: float | None = None) -> list[Any]:
    """Every request started in one loop step (their calls reach the backend in that step); results or errors."""
    return await asyncio.wait_for(
        asyncio.gather(*(runtime.execute(r, timeout_s) for r in requests), return_exceptions=True), 60
    )


async def test_concurrent_calls_to_one_replica_go_as_one_actor_call_each_caller_its_own_result() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(c.Tag.bind().__call__.bind(inp))
    async with running(app) as runtime:
        single = await runtime.execute(1)  # one call in a step: sent on its own
        assert await received(runtime, "Tag") == (1, 1)
        results = await together(runtime, [x for x in range(100, 100 + CALLS)])
        assert [r[0] for r in results] == list(range(100, 100 + CALLS))  # each caller its own result
        assert {r[1] for r in results} == {single[1]}  # one replica answered them all
        assert await received(runtime, "Tag") == (2, 1 + CALLS)  # the 16 came as one actor call


async def test_an_error_in_one_item_fails_only_its_caller_naming_the_node() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(c.Tag.bind().__call__.bind(inp))
    async with running(app) as runtime:
        results = await together(runtime, list(range(CALLS)))
        assert await received(runtime, "Tag") == (1, CALLS)
    for x, result in enumerate(results):
        if x == 7:
            assert isinstance(result, NodeExecutionError) and result.node == "Tag.__call__"
            assert "seven is not allowed" in str(result)
        else:
            assert result[0] == x


async def test_coalesced_references_pass_actor_to_actor_and_fail_alone() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(c.Pair.bind().__call__.bind(c.Tag.bind().__call__.bind(inp), c.Square.bind().__call__.bind(inp)))
    async with running(app) as runtime:
        results = await together(runtime, list(range(CALLS)))
        tag_calls = await received(runtime, "Tag")
        square_calls = await received(runtime, "Square")
    assert tag_calls[1] == CALLS and tag_calls[0] < CALLS
    assert square_calls[1] == CALLS and square_calls[0] < CALLS
    for x, result in enumerate(results):
        if x == 7:  # Tag failed for it: its Pair call fails with Tag's error, the others go on
            assert isinstance(result, NodeExecutionError) and result.node == "Tag.__call__"
        else:
            assert result == [x, x * x]


async def test_a_batch_method_gets_the_coalesced_calls_in_one_batch() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(c.Sizes.bind().__call__.bind(inp))
    async with running(app) as runtime:
        sizes = await together(runtime, list(range(CALLS)))
        assert await received(runtime, "Sizes") == (1, CALLS)
    assert sizes == [CALLS] * CALLS  # a full batch at once (its wait is 30 s)


async def test_a_cancelled_caller_does_not_cancel_the_others(tmp_path: Any) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    with gs.InputNode() as inp:
        app = gs.graph(c.Napper.bind(log.path).__call__.bind(inp))
    async with running(app) as runtime:
        late = runtime.execute({"x": 0, "seconds": 5.0}, 0.5)  # passes its deadline: its call is cancelled
        others = [runtime.execute({"x": x, "seconds": 1.0}, 30) for x in range(1, CALLS)]
        results = await asyncio.wait_for(asyncio.gather(late, *others, return_exceptions=True), 60)
        assert await received(runtime, "Napper") == (1, CALLS)
    assert isinstance(results[0], DeadlineExceededError)
    assert results[1:] == list(range(1, CALLS))
    events = log.events()
    assert {who for name, _, _, who in events if name == "cancelled"} == {"0"}
    assert {who for name, _, _, who in events if name == "finished"} == {str(x) for x in range(1, CALLS)}


async def test_requests_into_a_fused_group_go_as_one_actor_call_failing_alone() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(c.Twice.bind().__call__.bind(c.Inc.bind().__call__.bind(inp)))
    plan = compile_app(app)
    assert plan.fusion is not None and [g.deployments for g in plan.fusion.groups] == [["Inc", "Twice"]]
    async with running(app) as runtime:
        results = await together(runtime, list(range(CALLS)))
        assert await received(runtime, "Inc") == (1, CALLS)  # 16 requests' batches, one actor call
    for x, result in enumerate(results):
        if x == 7:
            assert isinstance(result, NodeExecutionError) and result.node == "Inc.__call__"
        else:
            assert result == 2 * (x + 1)
