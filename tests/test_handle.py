"""Deployment handles and their responses, on a fake call function (no backend): a call
starts at once whether or not it is awaited, and a response behaves as a future."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from graphserve.runtime.handle import DeploymentHandle


class Calls:
    """A fake backend call: records starts, waits for its gate, returns its argument."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.gate = asyncio.Event()
        self.ran = asyncio.Event()

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.started.append(args[0])
        self.ran.set()
        await self.gate.wait()
        if args[0] == "fail":
            raise ValueError("failed as asked")
        return args[0]

    def handle(self) -> DeploymentHandle:
        return DeploymentHandle("Model", self.call, asyncio.get_running_loop())


async def test_calls_start_at_once_when_awaited_one_by_one() -> None:
    calls = Calls()
    handle = calls.handle()
    responses = [handle.remote(i) for i in range(3)]
    first = asyncio.ensure_future(_await(responses[0]))
    while len(calls.started) < 3:  # the others start although only the first is awaited
        await asyncio.sleep(0)
    assert sorted(calls.started) == [0, 1, 2] and not first.done()
    calls.gate.set()
    assert [await first, await responses[1], await responses[2]] == [0, 1, 2]


async def test_a_call_nobody_awaits_still_runs() -> None:
    calls = Calls()
    calls.gate.set()
    calls.handle().remote("fire and forget")
    await asyncio.wait_for(calls.ran.wait(), 5)
    assert calls.started == ["fire and forget"]


async def test_a_response_awaited_at_once_is_a_future_afterwards() -> None:
    calls = Calls()
    calls.gate.set()
    response = calls.handle().remote("x")
    assert not response.done()
    assert await response == "x"
    assert await response == "x"  # twice
    assert response.done() and not response.cancelled() and response.exception() is None
    assert response.result() == "x"

    failing = calls.handle().remote("fail")
    with pytest.raises(ValueError, match="failed as asked"):
        await failing
    assert isinstance(failing.exception(), ValueError)


async def test_two_tasks_awaiting_one_response_share_its_result() -> None:
    calls = Calls()
    response = calls.handle().remote("shared")
    both = asyncio.gather(_await(response), _await(response))
    await asyncio.wait_for(calls.ran.wait(), 5)
    calls.gate.set()
    assert await both == ["shared", "shared"]
    assert calls.started == ["shared"]


async def test_asyncio_wait_and_done_callbacks() -> None:
    calls = Calls()
    calls.gate.set()
    handle = calls.handle()
    responses = [handle.remote(i) for i in range(3)]
    seen: list[Any] = []
    responses[0].add_done_callback(lambda future: seen.append(future.result()))
    done, pending = await asyncio.wait(responses)  # type: ignore[type-var]
    assert len(done) == 3 and not pending
    assert sorted(r.result() for r in responses) == [0, 1, 2] and seen == [0]


async def test_cancel_before_start_and_while_running() -> None:
    calls = Calls()
    handle = calls.handle()
    never = handle.remote("never")
    assert never.cancel() and never.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await never
    await asyncio.sleep(0)
    assert calls.started == []

    running = handle.remote("running")
    waiter = asyncio.ensure_future(_await(running))
    await asyncio.wait_for(calls.ran.wait(), 5)
    assert running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert running.cancelled()


async def test_result_blocks_a_worker_thread_until_the_call_is_done() -> None:
    calls = Calls()
    response = calls.handle().remote("from a thread")
    with pytest.raises(RuntimeError, match="would block the event loop"):
        response.result()
    blocked = asyncio.get_running_loop().run_in_executor(None, response.result, 5.0)
    await asyncio.wait_for(calls.ran.wait(), 5)
    calls.gate.set()
    assert await asyncio.wait_for(blocked, 5) == "from a thread"


async def _await(response: Any) -> Any:
    return await response
