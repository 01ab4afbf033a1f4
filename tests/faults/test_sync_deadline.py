"""A synchronous model with ``max_ongoing_requests=1`` (a GPU) whose calls outlive the
request's deadline: each request is answered 504 on time, and the model never runs two
calls at once (its place is held until its thread returns), on both backends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.reliability import sync_deadline
from graphserve.compiler import compile_app
from graphserve.errors import DeadlineExceededError
from graphserve.runtime import GraphRuntime
from tests.graphs import fault_graphs


def test_a_sync_call_past_its_deadline_keeps_its_place_on_the_local_backend() -> None:
    figures = sync_deadline(requests=6, call_s=0.6, gap_s=0.25)
    assert figures["statuses"] == {"504": 6}
    assert figures["slowest_answer_s"] < 0.6  # answered at the 0.2 s deadline, not when the call ended
    assert figures["most_at_once"] == 1  # before the fix: 3


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
async def test_the_place_of_a_sync_call_past_its_deadline_is_freed_when_its_thread_returns(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    runtime = GraphRuntime(compile_app(fault_graphs.one_at_a_time), backend=backend)
    await runtime.start()
    try:
        backend: Any = runtime.backend
        started = time.perf_counter()
        with pytest.raises(DeadlineExceededError):
            await asyncio.wait_for(runtime.execute({"delay": 0.6}), 30)
        answered = time.perf_counter() - started
        while backend.load()["OneAtATime"].ongoing:  # the call's place, as the driver counts it
            await asyncio.sleep(0.005)
        freed = time.perf_counter() - started
        assert answered < 0.5  # 504 at the 0.2 s deadline
        assert freed >= 0.55  # but the place stays taken until the thread returned (before the fix: 0.21 s)
        answer = await asyncio.wait_for(runtime.execute({"delay": 0}, 30), 60)
        assert answer == {"most_at_once": 1}
    finally:
        await runtime.stop()
