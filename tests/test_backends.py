"""One suite of executor semantics, run on every backend (local and Ray), so they cannot drift.

Replicas may run in other processes, so deployments report to an EventLog file; the
tests assert overlap, ordering and counts, never wall-clock budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
from graphserve.runtime.tracing import Trace
from tests.graphs import backends as g
from tests.graphs import page_graphs
from tests.graphs.backends import EventLog


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@pytest.fixture
def log(tmp_path: Any) -> EventLog:
    return EventLog(tmp_path / "events.jsonl")


@contextlib.asynccontextmanager
async def running(app: Any, backend: str) -> AsyncIterator[GraphRuntime]:
    runtime = GraphRuntime(compile_app(app), backend=backend)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def peak_concurrency(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda t: (t[0], t[1]))
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# -- concurrency and order -------------------------------------------------------------
async def test_fan_out_nodes_run_concurrently(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        parts = [g.Sleep.options(name=f"Sleep{n}").bind(n, log.path, 0.3).__call__.bind(inp) for n in "abc"]
        out = g.Add.bind().__call__.bind(*parts)
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute(1.0) == 6.0
    spans = log.spans()
    assert overlap(spans["a"], spans["b"]) and overlap(spans["b"], spans["c"]) and overlap(spans["a"], spans["c"])


async def test_chain_runs_in_order(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        first = g.Sleep.options(name="First").bind("first", log.path, 0.05).__call__.bind(inp)
        out = g.Sleep.options(name="Second").bind("second", log.path, 0.05).__call__.bind(first)
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute(1.0) == 3.0
    spans = log.spans()
    assert spans["first"][1] <= spans["second"][0]


async def test_sync_methods_run_in_threads(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.SyncSleep.bind(log.path, 0.3).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        assert await asyncio.gather(runtime.execute(1.0), runtime.execute(2.0)) == [2.0, 4.0]
    spans = log.spans()
    assert overlap(spans["sync-1.0"], spans["sync-2.0"])  # one replica, two calls at once: not on the loop


# -- branches and sharing --------------------------------------------------------------
async def test_cond_runs_only_the_taken_branch(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        feeder = g.Count.options(name="Feeder").bind("then-feeder", log.path).__call__.bind(inp)
        out = gs.cond(
            g.positive.bind(inp),
            g.Count.options(name="Then").bind("then", log.path).__call__.bind(feeder),
            g.Count.options(name="Else").bind("else", log.path).__call__.bind(inp),
        )
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute(1) == "then"
        assert [log.count(n) for n in ("then", "then-feeder", "else")] == [1, 1, 0]
        assert await runtime.execute(-1) == "else"
        assert [log.count(n) for n in ("then", "then-feeder", "else")] == [1, 1, 1]


async def test_switch_with_default_and_no_match(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        arms = {k: g.Count.options(name=f"Arm{k}").bind(k, log.path).__call__.bind(inp) for k in ("a", "b")}
        with_default = gs.switch(
            inp["kind"], arms, default=g.Count.options(name="Other").bind("other", log.path).__call__.bind(inp)
        )
    async with running(gs.graph(with_default), backend) as runtime:
        assert [await runtime.execute({"kind": k}) for k in ("a", "b", "zzz")] == ["a", "b", "other"]
    assert [log.count(k) for k in ("a", "b", "other")] == [1, 1, 1]

    with gs.InputNode() as inp:
        no_default = gs.switch(inp["kind"], {"a": g.Count.bind("only-a", log.path).__call__.bind(inp)})
    async with running(gs.graph(no_default), backend) as runtime:
        with pytest.raises(NodeExecutionError, match="matches no branch") as info:
            await runtime.execute({"kind": "b"})
        assert info.value.node == "switch"
    assert log.count("only-a") == 0


async def test_switch_on_a_deployment_output(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        score = g.Scorer.bind().score.bind(inp)
        out = gs.cond(
            score.score > 0.5,
            g.Count.options(name="Big").bind("big", log.path).__call__.bind(inp),
            g.Count.options(name="Small").bind("small", log.path).__call__.bind(inp),
        )
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute("a long piece of text") == "big"
        assert await runtime.execute("tiny") == "small"
    assert (log.count("big"), log.count("small")) == (1, 1)


async def test_shared_node_runs_once_per_request(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        shared = g.Count.bind("shared", log.path).__call__.bind(inp)
        out = [g.Echo.bind().text.bind(shared), g.Echo.options(name="Echo2").bind().text.bind(shared)]
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute(0) == ["shared", "shared"]
    assert log.count("shared") == 1


# -- handles ---------------------------------------------------------------------------
async def test_handles_between_deployments(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        a = g.Caller.bind(g.Sleep.bind("inner", log.path, 0.0)).__call__.bind(inp)
        b = g.Caller.options(name="Caller2").bind(g.Scorer.bind()).via_method.bind("abc")
        c = g.SyncCaller.bind(g.Add.bind()).__call__.bind(inp)
    async with running(gs.graph({"a": a, "b": b, "c": c}), backend) as runtime:
        result = await runtime.execute(1.0)
        assert result["a"] == 20.0 and result["b"].score == pytest.approx(0.3) and result["c"] == 101.0
        assert (await runtime.handle("Scorer").score.remote("abcd")).label == "abcd"  # a handle from the driver
    assert log.count("inner") == 1


async def test_handles_work_with_asyncio_wait_and_gather(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        models = [g.Sleep.options(name=f"Model{i}").bind(str(i), log.path, 0.05) for i in range(3)]
        out = g.Fan.bind(models).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute(1.0) == [2.0, 2.0, 2.0]
    assert sorted(name for name, *_ in log.events()) == ["0", "0", "1", "1", "2", "2"]


# -- replicas, limits, batching ----------------------------------------------------------
async def test_replicas_share_load_and_respect_max_ongoing(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.Worker.options(num_replicas=2, max_ongoing_requests=2).bind(log.path, 0.1).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        assert await asyncio.gather(*[runtime.execute(i) for i in range(12)]) == list(range(12))
    by_replica: dict[str, list[tuple[float, float]]] = {}
    for _, start, end, replica in log.events():
        by_replica.setdefault(replica, []).append((start, end))
    assert len(by_replica) == 2  # both replicas used
    peaks = [peak_concurrency(spans) for spans in by_replica.values()]
    assert max(peaks) == 2  # concurrent calls on one replica, never above the limit


async def test_overload_when_the_queue_is_full(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.Worker.options(max_ongoing_requests=1, max_queued_requests=1).bind(log.path, 0.2).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        outcomes = await asyncio.gather(*[runtime.execute(i) for i in range(4)], return_exceptions=True)
        assert outcomes[:2] == [0, 1]
        assert all(isinstance(o, OverloadedError) for o in outcomes[2:])
        assert await runtime.execute(9) == 9  # recovers
    assert log.count("work") == 3


async def test_calls_through_a_handle_obey_the_targets_limits_and_queue(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        worker = g.Worker.options(max_ongoing_requests=1, max_queued_requests=1).bind(log.path, 1.0)
        out = g.Caller.bind(worker).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        outcomes = await asyncio.gather(*[runtime.execute(i) for i in range(4)], return_exceptions=True)
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        # one running, one queued: which two depends on the order the calls reach the target (on Ray:
        # actors calling actors), not on the request order
        assert len(answered) == 2 and set(answered) <= {0, 10, 20, 30}
        assert [type(o) for o in outcomes if isinstance(o, BaseException)] == [OverloadedError, OverloadedError]
        assert await runtime.execute(9) == 90  # recovers
    assert log.count("work") == 3


async def test_batching_gathers_concurrent_calls(backend: str) -> None:
    with gs.InputNode() as inp:
        out = g.Batched.bind().__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        sizes = await asyncio.gather(*[runtime.execute(float(i)) for i in range(8)])
    assert max(sizes) > 1 and all(1 <= s <= 4 for s in sizes)


# -- errors ----------------------------------------------------------------------------
async def test_failing_node_is_named_and_others_unaffected(backend: str) -> None:
    with gs.InputNode() as inp:
        out = gs.cond(g.positive.bind(inp), g.Fails.bind().__call__.bind(inp), g.double.bind(inp))
    async with running(gs.graph(out), backend) as runtime:
        failing = asyncio.ensure_future(runtime.execute(1.0))
        fine = [asyncio.ensure_future(runtime.execute(-float(i))) for i in range(1, 5)]
        with pytest.raises(NodeExecutionError) as info:
            await failing
        assert info.value.node == "Fails.__call__" and info.value.deployment == "Fails"
        assert isinstance(info.value.__cause__, ValueError) and "bad input 1.0" in str(info.value)
        assert await asyncio.gather(*fine) == [-2.0, -4.0, -6.0, -8.0]


async def test_upstream_failure_is_named_not_its_consumer(backend: str) -> None:
    with gs.InputNode() as inp:
        out = g.Add.bind().__call__.bind(g.Fails.bind().__call__.bind(inp), g.double.bind(inp))
    async with running(gs.graph(out), backend) as runtime:
        with pytest.raises(NodeExecutionError) as info:
            await runtime.execute(1.0)
        assert info.value.node == "Fails.__call__" and "bad input" in str(info.value)


async def test_failure_inside_a_handle_names_the_deployment_called(backend: str) -> None:
    with gs.InputNode() as inp:
        out = g.Caller.bind(g.Fails.bind()).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        with pytest.raises(NodeExecutionError) as info:
            await runtime.execute(1.0)
        assert info.value.node == "Fails.__call__" and info.value.deployment == "Fails"
        assert isinstance(info.value.__cause__, ValueError)


async def test_glue_failure_is_named(backend: str) -> None:
    with gs.InputNode() as inp:
        out = g.boom.bind(g.double.bind(inp))
    async with running(gs.graph(out), backend) as runtime:
        with pytest.raises(NodeExecutionError) as info:
            await runtime.execute(1)
        assert info.value.node == "explode" and info.value.deployment is None


async def test_chains_of_calls_run_each_call_once_and_name_a_failing_link(backend: str, log: EventLog) -> None:
    # a chain (each call read only by the next) runs in its last call's frame; a call read
    # twice ends a chain (computed once), and a failing link is named, the ones after it never run
    def count(name: str, x: Any) -> Any:
        return g.Count.options(name=name.title()).bind(name, log.path).__call__.bind(x)

    with gs.InputNode() as inp:
        shared = g.Echo.options(name="Shared").bind().text.bind(count("first", inp))
        then = g.Echo.options(name="Second").bind().text.bind(count("then", shared))
        ok = gs.graph({"a": g.Echo.options(name="Last").bind().text.bind(then), "b": shared}, name="ok")
    with gs.InputNode() as inp:
        joined = g.Echo.options(name="Join").bind().text.bind(count("before", inp))
        bad = gs.graph(count("after", count("never", g.Fails.bind().__call__.bind(joined))), name="bad")
    async with running(ok, backend) as runtime:
        assert await runtime.execute("x") == {"a": "then", "b": "first"}
        assert [log.count(n) for n in ("first", "then")] == [1, 1]
    async with running(bad, backend) as runtime:
        with pytest.raises(NodeExecutionError) as info:
            await runtime.execute("y")
        assert info.value.node == "Fails.__call__" and "bad input 'before'" in str(info.value)
        assert [log.count(n) for n in ("before", "never", "after")] == [1, 0, 0]


async def test_failing_constructor_names_the_deployment(backend: str) -> None:
    with gs.InputNode() as inp:
        out = g.BrokenInit.bind().__call__.bind(inp)
    runtime = GraphRuntime(compile_app(gs.graph(out)), backend=backend)
    with pytest.raises(DeploymentStartError, match="weights missing") as info:
        await runtime.start()
    assert info.value.deployment == "BrokenInit"
    await runtime.stop()


# -- requests and deadlines --------------------------------------------------------------
async def test_request_validation(backend: str) -> None:
    with gs.InputNode(schema=g.Text) as inp:
        out = g.Echo.bind().text.bind(inp.text)
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute({"text": "hi"}) == "hi"
        with pytest.raises(RequestValidationError) as info:
            await runtime.execute({"txet": "hi"})
        assert [tuple(e["loc"]) for e in info.value.errors] == [("text",)]

    with gs.InputNode() as inp:
        out = g.double.bind(inp["x"])
    async with running(gs.graph(out), backend) as runtime:
        assert await runtime.execute({"x": 2}) == 4
        with pytest.raises(RequestValidationError, match="'x'"):
            await runtime.execute({"y": 2})


async def test_deadline_cancels_remaining_work(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.Slowpoke.bind(log.path, 0.6).__call__.bind(g.double.bind(inp))
    async with running(gs.graph(out, timeout_s=0.2), backend) as runtime:
        with pytest.raises(DeadlineExceededError):
            await runtime.execute(1.0)
        with pytest.raises(DeadlineExceededError):
            await runtime.execute(1.0, timeout_s=0.05)
        await asyncio.sleep(1.0)
        assert log.count("finished") == 0  # cancelled, not left running
        assert await runtime.execute(1.0, timeout_s=30) == 2.0
    assert log.count("finished") == 1


# -- outputs ---------------------------------------------------------------------------
async def test_output_structures_constants_and_packed_lists(backend: str) -> None:
    with gs.InputNode() as inp:
        d = g.double.bind(inp)
        packed = g.Add.bind().__call__.bind(d, 1.0)
        listed = g.Add.options(name="Add2").bind().__call__.bind(gs.glue(sum).bind([d, d, 1.0]))
    async with running(gs.graph({"d": d, "t": (d, packed), "l": [packed, listed]}), backend) as runtime:
        assert await runtime.execute(2.0) == {"d": 4.0, "t": (4.0, 5.0), "l": [5.0, 9.0]}


# -- traces (X-Graphserve-Trace, the live page's waterfall) --------------------------------
async def test_a_trace_records_the_nodes_that_ran_and_the_arm_skipped(backend: str) -> None:
    async with running(page_graphs.make_app(), backend) as runtime:
        trace = Trace(runtime.plan, "rid-1", backend=backend)
        assert await runtime.execute({"text": "a long text"}, None, trace) == {"path": "long", "n": 11}
        await trace.settle()
        untraced = await runtime.execute({"text": "tiny"})  # the same runtime, untraced
    assert untraced == {"path": "short", "n": 4}
    data = trace.to_json()
    assert data["backend"] == backend and data["request_id"] == "rid-1" and data["status"] == "ok"
    nodes = {n["node"]: n for n in data["nodes"]}
    ran = {
        "input",
        "input.text",
        "input.fail",
        "Classifier.__call__",
        "Embed.__call__",
        "long_path",
        "switch",
        "output",
    }
    assert set(nodes) == ran and data["skipped"] == ["short_path"]
    assert nodes["Embed.__call__"]["batch_size"] == 1 and nodes["Embed.__call__"]["kind"] == "deployment"
    assert nodes["long_path"]["replica"] in (0, 1) and nodes["input.text"]["kind"] == "field"
    assert all(n["status"] == "ok" and n["duration_ms"] >= 0 and n["start_ms"] >= 0 for n in nodes.values())
    embed, long_path = nodes["Embed.__call__"], nodes["long_path"]
    assert long_path["start_ms"] >= embed["start_ms"] + embed["duration_ms"] - 1  # it waited for its input
    assert data["duration_ms"] >= long_path["start_ms"] + long_path["duration_ms"] - 1


async def test_a_trace_shows_handle_calls_inside_a_node_as_its_children(backend: str, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.Caller.bind(g.Sleep.bind("inner", log.path, 0.05)).__call__.bind(inp)
    async with running(gs.graph(out), backend) as runtime:
        trace = Trace(runtime.plan, backend=backend)
        assert await runtime.execute(1.0, None, trace) == 20.0
        await trace.settle()
    nodes = {n["node"]: n for n in trace.to_json()["nodes"]}
    parent, child = nodes["Caller.__call__"], nodes["Sleep.__call__"]
    assert child["parent"] == "Caller.__call__" and child["kind"] == "handle" and child["replica"] == 0
    assert child["duration_ms"] >= 40
    assert parent["start_ms"] - 1 <= child["start_ms"]
    assert child["start_ms"] + child["duration_ms"] <= parent["start_ms"] + parent["duration_ms"] + 1


async def test_a_trace_marks_the_node_that_failed(backend: str) -> None:
    async with running(page_graphs.make_app(), backend) as runtime:
        trace = Trace(runtime.plan, backend=backend)
        with pytest.raises(NodeExecutionError):
            await runtime.execute({"text": "a long text", "fail": True}, None, trace)
        await trace.settle()
    nodes = {n["node"]: n for n in trace.to_json()["nodes"]}
    assert nodes["long_path"]["status"] == "error" and nodes["Classifier.__call__"]["status"] == "ok"
