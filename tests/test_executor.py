"""The executor on the local backend: concurrency, branches, handles, replicas, errors, deadlines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import (
    DeadlineExceededError,
    DeploymentStartError,
    NodeExecutionError,
    OverloadedError,
    RequestValidationError,
)
from graphserve.runtime import GraphRuntime
from tests.graphs import models as m


@pytest.fixture(autouse=True)
def _clear() -> None:
    m.RECORDER.clear()


async def started(app: Any) -> GraphRuntime:
    runtime = GraphRuntime(compile_app(app))
    await runtime.start()
    return runtime


def overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


async def test_fan_out_runs_concurrently() -> None:
    with gs.InputNode() as inp:
        parts = [m.Slow.bind(name).__call__.bind(inp) for name in ("a", "b", "c")]
        out = m.Combiner.bind().__call__.bind(*parts)
    runtime = await started(gs.graph(out))
    assert await runtime.execute(1.0) == 6.0
    events = {name: (name, s, e) for name, s, e in m.RECORDER.events}
    assert overlap(events["a"], events["b"]) and overlap(events["b"], events["c"]) and overlap(events["a"], events["c"])
    await runtime.stop()


async def test_chain_runs_in_order() -> None:
    with gs.InputNode() as inp:
        first = m.Slow.bind("first", 0.01).__call__.bind(inp)
        out = m.Slow.bind("second", 0.01).__call__.bind(first)
    runtime = await started(gs.graph(out))
    assert await runtime.execute(1.0) == 3.0
    (_, _, first_end), (_, second_start, _) = m.RECORDER.events
    assert first_end <= second_start
    await runtime.stop()


async def test_sync_methods_run_in_threads_and_do_not_block_the_loop() -> None:
    with gs.InputNode() as inp:
        out = [m.SyncSlow.bind().__call__.bind(inp), m.Slow.bind("async", 0.05).__call__.bind(inp)]
    runtime = await started(gs.graph(out))
    assert await runtime.execute(2.0) == [4.0, 3.0]
    events = {name: (name, s, e) for name, s, e in m.RECORDER.events}
    assert overlap(events["sync"], events["async"])
    await runtime.stop()


async def test_cond_runs_only_the_taken_branch() -> None:
    with gs.InputNode() as inp:
        out = gs.cond(
            m.positive.bind(inp),
            m.Counter.bind("then").__call__.bind(m.Counter.bind("then-feeder").__call__.bind(inp)),
            m.Counter.bind("else").__call__.bind(inp),
        )
    runtime = await started(gs.graph(out))
    assert await runtime.execute(1) == "then"
    assert (m.RECORDER.count("then"), m.RECORDER.count("then-feeder"), m.RECORDER.count("else")) == (1, 1, 0)
    m.RECORDER.clear()
    assert await runtime.execute(-1) == "else"
    assert (m.RECORDER.count("then"), m.RECORDER.count("then-feeder"), m.RECORDER.count("else")) == (0, 0, 1)
    await runtime.stop()


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


async def test_switch_with_default_and_no_match() -> None:
    with gs.InputNode() as inp:
        arms = {k: m.Counter.bind(k).__call__.bind(inp) for k in ("a", "b")}
        with_default = gs.switch(inp["kind"], arms, default=m.Counter.bind("other").__call__.bind(inp))
        no_default = gs.switch(inp["kind"], {"a": m.Counter.bind("only-a").__call__.bind(inp)})
    runtime = await started(gs.graph(with_default))
    assert [await runtime.execute({"kind": k}) for k in ("a", "b", "zzz")] == ["a", "b", "other"]
    assert [m.RECORDER.count(k) for k in ("a", "b", "other")] == [1, 1, 1]
    await runtime.stop()
    runtime = await started(gs.graph(no_default))
    with pytest.raises(NodeExecutionError, match="matches no branch") as info:
        await runtime.execute({"kind": "b"})
    assert info.value.node == "switch"
    await runtime.stop()


async def test_shared_node_runs_once_per_request() -> None:
    with gs.InputNode() as inp:
        shared = m.Counter.bind("shared").__call__.bind(inp)
        out = [m.Takes.bind().text.bind(shared), m.Takes.bind().text.bind(shared)]
    runtime = await started(gs.graph(out))
    assert await runtime.execute(0) == ["shared", "shared"]
    assert m.RECORDER.count("shared") == 1
    await runtime.stop()


async def test_handles_to_other_deployments() -> None:
    with gs.InputNode() as inp:
        a = m.Caller.bind(m.Slow.bind("inner", 0.0)).__call__.bind(inp)
        b = m.Caller.options(name="Caller2").bind(m.Scorer.bind()).via_method.bind("abc")
    runtime = await started(gs.graph({"a": a, "b": b}))
    result = await runtime.execute(1.0)
    assert result["a"] == 20.0 and result["b"].score == pytest.approx(0.3)
    await runtime.stop()


async def test_handle_gather_and_wait() -> None:
    @gs.deployment
    class Fan:
        def __init__(self, models: list[Any]) -> None:
            self.models = models

        async def __call__(self, x: float) -> list[float]:
            responses = [model.remote(x) for model in self.models]
            done, _ = await asyncio.wait(responses)
            assert len(done) == len(responses)
            return sorted(await asyncio.gather(*[model.remote(x) for model in self.models]))

    with gs.InputNode() as inp:
        out = Fan.bind([m.Slow.bind(str(i), 0.01) for i in range(3)]).__call__.bind(inp)
    runtime = await started(gs.graph(out))
    assert await runtime.execute(1.0) == [2.0, 2.0, 2.0]
    await runtime.stop()


async def test_failing_node_is_named_and_others_unaffected() -> None:
    with gs.InputNode() as inp:
        out = gs.cond(m.positive.bind(inp), m.Fails.bind().__call__.bind(inp), m.double.bind(inp))
    runtime = await started(gs.graph(out))
    failing = asyncio.ensure_future(runtime.execute(1.0))
    fine = [asyncio.ensure_future(runtime.execute(-float(i))) for i in range(1, 5)]
    with pytest.raises(NodeExecutionError) as info:
        await failing
    assert info.value.node == "Fails.__call__" and info.value.deployment == "Fails"
    assert isinstance(info.value.__cause__, ValueError) and "bad input 1.0" in str(info.value)
    assert await asyncio.gather(*fine) == [-2.0, -4.0, -6.0, -8.0]
    await runtime.stop()


async def test_failure_inside_a_handle_names_the_deployment_called() -> None:
    with gs.InputNode() as inp:
        out = m.Caller.bind(m.Fails.bind()).__call__.bind(inp)
    runtime = await started(gs.graph(out))
    with pytest.raises(NodeExecutionError) as info:
        await runtime.execute(1.0)
    assert info.value.node == "Fails.__call__"
    await runtime.stop()


async def test_failing_constructor_names_the_deployment() -> None:
    with gs.InputNode() as inp:
        out = m.BrokenInit.bind().__call__.bind(inp)
    runtime = GraphRuntime(compile_app(gs.graph(out)))
    with pytest.raises(DeploymentStartError, match="weights missing") as info:
        await runtime.start()
    assert info.value.deployment == "BrokenInit"


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


async def test_deadline_cancels_remaining_work() -> None:
    finished: list[str] = []

    @gs.deployment
    class Sleeper:
        async def __call__(self, x: float) -> float:
            await asyncio.sleep(0.3)
            finished.append("sleeper")
            return x

    with gs.InputNode() as inp:
        out = Sleeper.bind().__call__.bind(inp)
    runtime = await started(gs.graph(out, timeout_s=0.05))
    with pytest.raises(DeadlineExceededError):
        await runtime.execute(1.0)
    with pytest.raises(DeadlineExceededError):
        await runtime.execute(1.0, timeout_s=0.01)
    await asyncio.sleep(0.4)
    assert finished == []  # cancelled, not left running
    assert await runtime.execute(1.0, timeout_s=5) == 1.0
    await runtime.stop()


async def test_replicas_share_load_and_respect_max_ongoing() -> None:
    active: dict[int, int] = {}
    peak: dict[int, int] = {}

    @gs.deployment(num_replicas=2, max_ongoing_requests=2)
    class Worker:
        def __init__(self) -> None:
            self.id = id(self)

        async def __call__(self, x: int) -> int:
            active[self.id] = active.get(self.id, 0) + 1
            peak[self.id] = max(peak.get(self.id, 0), active[self.id])
            await asyncio.sleep(0.02)
            active[self.id] -= 1
            return x

    with gs.InputNode() as inp:
        out = Worker.bind().__call__.bind(inp)
    runtime = await started(gs.graph(out))
    results = await asyncio.gather(*[runtime.execute(i) for i in range(20)])
    assert results == list(range(20))
    assert len(peak) == 2 and max(peak.values()) == 2  # both replicas used, never above the limit
    await runtime.stop()


async def test_overload_when_queue_is_full() -> None:
    @gs.deployment(max_ongoing_requests=1, max_queued_requests=1)
    class One:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0.05)
            return x

    with gs.InputNode() as inp:
        out = One.bind().__call__.bind(inp)
    runtime = await started(gs.graph(out))
    outcomes = await asyncio.gather(*[runtime.execute(i) for i in range(4)], return_exceptions=True)
    assert outcomes[:2] == [0, 1]
    assert all(isinstance(o, OverloadedError) for o in outcomes[2:])
    assert await runtime.execute(9) == 9  # recovers
    await runtime.stop()


async def test_glue_failure_is_named() -> None:
    def explode(x: Any) -> Any:
        raise KeyError("nope")

    with gs.InputNode() as inp:
        out = gs.glue(explode).bind(inp)
    runtime = await started(gs.graph(out))
    with pytest.raises(NodeExecutionError) as info:
        await runtime.execute(1)
    assert info.value.node == "explode" and info.value.deployment is None
    await runtime.stop()


async def test_output_structures_and_constants() -> None:
    with gs.InputNode() as inp:
        d = m.double.bind(inp)
        packed = m.Combiner.bind().__call__.bind(*[d, 1.0])
    runtime = await started(gs.graph({"d": d, "t": (d, packed), "l": [packed]}))
    assert await runtime.execute(2.0) == {"d": 4.0, "t": (4.0, 5.0), "l": [5.0]}
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
        started_at = time.monotonic()
        assert handle.call(1.0, timeout_s=5) == 2.0
        assert time.monotonic() - started_at < 5
