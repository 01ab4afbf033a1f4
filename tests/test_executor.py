"""Executor behaviour specific to the local runtime and the graph handle.

The semantics every backend shares (concurrency, branches, handles, replicas, errors,
deadlines) live in ``tests/test_backends.py``, which runs them on the local and the Ray
backend alike."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import DeadlineExceededError, RequestValidationError
from graphserve.runtime import GraphRuntime
from tests.graphs import models as m


@pytest.fixture(autouse=True)
def _clear() -> None:
    m.RECORDER.clear()


async def started(app: Any) -> GraphRuntime:
    runtime = GraphRuntime(compile_app(app))
    await runtime.start()
    return runtime


async def test_cond_with_comparison_operator_on_a_node() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        score = m.Scorer.bind().score.bind(inp.text)
        out = gs.cond(
            score.score > 0.5, m.Counter.bind("big").__call__.bind(inp), m.Counter.bind("small").__call__.bind(inp)
        )
    runtime = await started(gs.graph(out))
    assert await runtime.execute({"text": "a long piece of text"}) == "big"
    assert await runtime.execute({"text": "tiny"}) == "small"
    assert m.RECORDER.count("big") == 1 and m.RECORDER.count("small") == 1
    await runtime.stop()


async def test_missing_request_field_is_a_request_error() -> None:
    with gs.InputNode() as inp:
        out = m.double.bind(inp["x"])
    runtime = await started(gs.graph(out))
    assert await runtime.execute({"x": 2}) == 4
    with pytest.raises(RequestValidationError, match="'x'"):
        await runtime.execute({"y": 2})
    await runtime.stop()


async def test_schema_validation() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        out = m.Takes.bind().number.bind(inp.value)
    runtime = await started(gs.graph(out))
    assert await runtime.execute({"text": "a", "value": 3}) == 3
    with pytest.raises(RequestValidationError) as info:
        await runtime.execute({"value": "x"})
    locs = sorted(tuple(e["loc"]) for e in info.value.errors)
    assert locs == [("text",), ("value",)]
    await runtime.stop()


async def test_a_bug_in_a_schema_validator_is_not_an_invalid_request() -> None:
    with gs.InputNode(schema=m.Strict) as inp:
        out = m.double.bind(inp.value)
    runtime = await started(gs.graph(out))
    assert await runtime.execute({"value": 2}) == 4
    with pytest.raises(RequestValidationError):
        await runtime.execute({"value": "x"})  # the request's fault: 422
    with pytest.raises(RuntimeError, match="a bug in the validator"):
        await runtime.execute({"value": -1})  # the code's fault: not a 422 (the ingress answers 500)
    await runtime.stop()


async def test_lists_of_nodes_as_arguments_are_packed() -> None:
    @gs.deployment
    class Sum:
        async def __call__(self, values: list[float], extra: dict[str, float]) -> float:
            return sum(values) + sum(extra.values())

    with gs.InputNode() as inp:
        d = m.double.bind(inp)
        out = Sum.bind().__call__.bind([d, d, 1.0], {"k": d})
    runtime = await started(gs.graph(out))
    assert await runtime.execute(1.0) == 2.0 + 2.0 + 1.0 + 2.0
    await runtime.stop()


async def _awaited(response: Any) -> Any:
    return await response


def test_run_handle_blocking_and_awaitable() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(m.double.bind(inp))
    with gs.run(app) as handle:
        assert handle.call(2.0) == 4.0
        assert handle.remote(3.0).result() == 6.0  # a DeploymentResponse, as Ray Serve's handles return
        assert asyncio.run(_awaited(handle.remote(3.0))) == 6.0
        assert handle.call(1.0, timeout_s=5) == 2.0


def test_run_handle_call_applies_its_timeout() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(m.Slow.bind("slow", 2.0).__call__.bind(inp))
    with gs.run(app, http=False) as handle:
        started_at = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            handle.call(1.0, timeout_s=0.05)
        assert time.monotonic() - started_at < 1.0  # the deadline, not the node's 2 s
