"""A fused group on Ray (runtime/ray_fused.py): one actor process per replica hosts every member,
calls between members stay in process with the local backend's semantics.

The shared semantics suite (tests/test_backends.py) runs on Ray with fusion on too (plans
fuse by default); these tests show what fusion itself promises."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import NodeExecutionError
from graphserve.runtime import GraphRuntime
from graphserve.runtime.ray_backend import RayBackend
from tests.graphs import fusion_graphs as f

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _ray(ray_cluster: Any) -> Any:
    return ray_cluster


@contextlib.asynccontextmanager
async def running(app: gs.App) -> AsyncIterator[tuple[GraphRuntime, RayBackend]]:
    runtime = GraphRuntime(compile_app(app), backend="ray")
    await runtime.start()
    try:
        assert isinstance(runtime.backend, RayBackend)
        yield runtime, runtime.backend
    finally:
        await runtime.stop()


async def bounded(awaitable: Any, seconds: float = 60.0) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


async def test_a_fused_chain_of_three_runs_in_one_actor_process() -> None:
    async with running(f.chain(*f.stamps("a", "b", "c"))) as (runtime, backend):
        trail = await bounded(runtime.execute([]))
        assert [name for name, _ in trail] == ["a", "b", "c"]
        pids = {pid for _, pid in trail}
        assert len(pids) == 1 and os.getpid() not in pids  # one process, not the driver
        assert backend.actors("a") == backend.actors("b") == backend.actors("c")  # one actor per replica
        assert {pid for replicas in backend.replica_nodes().values() for pid, _ in replicas} == pids


async def test_opted_out_members_run_in_actors_of_their_own() -> None:
    async with running(f.chain(*f.stamps("a", "b", b={"fuse": False}))) as (runtime, _):
        trail = await bounded(runtime.execute([]))
        assert len({pid for _, pid in trail}) == 2


async def test_an_error_in_a_fused_actor_names_the_member_node() -> None:
    a, c = f.stamps("a", "c")
    app = f.chain(a, f.FailsOnNegative.options(name="check").bind(), c)
    async with running(app) as (runtime, _):
        with pytest.raises(NodeExecutionError) as info:
            await bounded(runtime.execute(["fail"]))
        assert info.value.node == "check.__call__" and info.value.deployment == "check"
        assert isinstance(info.value.__cause__, ValueError) and "asked to fail" in str(info.value)
        assert len(await bounded(runtime.execute(["fine"]))) == 3  # the group keeps serving


async def test_batching_still_gathers_calls_inside_a_fused_actor() -> None:
    a, c = f.stamps("a", "c")
    async with running(f.chain(a, f.BatchSize.bind(), c)) as (runtime, _):
        trails = await bounded(asyncio.gather(*[runtime.execute([]) for _ in range(8)]))
    sizes = [dict((k, v) for k, v in trail)["batch"] for trail in trails]
    assert max(sizes) > 1 and all(1 <= s <= 8 for s in sizes)
    assert len({pid for trail in trails for k, pid in trail if k != "batch"}) == 1


async def test_handles_and_sync_members_stay_in_the_fused_process() -> None:
    with gs.InputNode() as inp:
        out = f.Relay.bind(f.SyncStamp.bind()).__call__.bind(inp)
    async with running(gs.graph(out)) as (runtime, backend):
        trail = await bounded(runtime.execute([]))
        assert [name for name, _ in trail] == ["relay", "sync"]
        assert len({pid for _, pid in trail}) == 1
        assert backend.actors("Relay") == backend.actors("SyncStamp")


async def test_driver_handles_to_fused_members_compose_in_one_actor_call() -> None:
    async with running(f.chain(*f.stamps("a", "b"))) as (runtime, _):
        first, second = runtime.handle("a"), runtime.handle("b")
        trail = await bounded(second.remote(first.remote([])))  # b reads a's unsent call: one batch
        assert [name for name, _ in trail] == ["a", "b"] and len({pid for _, pid in trail}) == 1
        assert [name for name, _ in await bounded(first.remote([["x", 0]]))] == ["x", "a"]
