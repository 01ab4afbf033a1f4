"""What only the Ray backend has: actors that die and restart, retries, resources given to
actors, references that stay out of the driver, and the ways into it (gs.run, HTTP).

The shared semantics (branches, handles, deadlines, errors, batching, ...) are in
tests/test_backends.py, which runs them on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import DeploymentStartError, GraphValidationError, NodeExecutionError
from graphserve.plan import Plan
from graphserve.runtime import GraphRuntime
from tests.graphs import backends as g
from tests.graphs import ray_graphs as r
from tests.graphs.backends import EventLog

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _ray(ray_cluster: Any) -> Any:
    return ray_cluster


@pytest.fixture
def log(tmp_path: Any) -> EventLog:
    return EventLog(tmp_path / "events.jsonl")


@contextlib.asynccontextmanager
async def running(app_or_plan: Any, **options: Any) -> AsyncIterator[GraphRuntime]:
    plan = app_or_plan if isinstance(app_or_plan, Plan) else compile_app(app_or_plan)
    runtime = GraphRuntime(plan, backend="ray", **options)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def bounded(awaitable: Any, seconds: float = 60.0) -> Any:
    """No request may hang: a test fails here instead of waiting for pytest's timeout."""
    return await asyncio.wait_for(awaitable, seconds)


async def logged(log: EventLog, name: str, count: int = 1) -> None:
    """Wait until ``log`` holds ``count`` events ``name`` (written by a replica, in its own process)."""
    while log.count(name) < count:
        await asyncio.sleep(0.01)


async def answered(runtime: GraphRuntime, request: Any, node: str = "Mortal.__call__") -> Any:
    """The first answer to ``request``: calls sent while the only replica restarts may fail, naming it."""
    for _ in range(50):
        try:
            return await bounded(runtime.execute(request))
        except NodeExecutionError as exc:
            assert exc.node == node and "died" in str(exc)
            await asyncio.sleep(0.2)
    pytest.fail(f"{node} did not come back")


async def restarted(actor: Any, old_pid: int) -> None:
    """Until Ray has restarted ``actor`` in a new process."""
    from ray.exceptions import RayError

    while True:
        try:
            pid, _ = await actor.ready.remote()
        except RayError:  # dead, or restarting
            pid = old_pid
        if pid != old_pid:
            return
        await asyncio.sleep(0.05)


# -- failures --------------------------------------------------------------------------
async def test_a_dead_replica_fails_its_calls_naming_the_node_and_is_restarted(log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = g.Add.bind().__call__.bind(r.Mortal.bind(log.path).__call__.bind(inp))
    async with running(gs.graph(out)) as runtime:
        first_pid = await runtime.execute("ping")
        in_flight = asyncio.ensure_future(runtime.execute("sleep2"))
        await bounded(logged(log, "sleeping"), 30)  # the call runs in the replica
        outcomes = await bounded(asyncio.gather(runtime.execute("die"), in_flight, return_exceptions=True))
        for outcome in outcomes:
            assert isinstance(outcome, NodeExecutionError), outcome
            assert outcome.node == "Mortal.__call__" and outcome.deployment == "Mortal"  # not its consumer
            assert "replica 0 of deployment 'Mortal' died" in str(outcome) and "max_retries" in str(outcome)
        second_pid = await bounded(answered(runtime, "ping"))  # the graph keeps serving, on a new process
        assert second_pid != first_pid
        assert [await bounded(runtime.execute("ping")) for _ in range(3)] == [second_pid] * 3
    assert log.count("built") == 2  # the restarted actor rebuilt the instance


async def test_calls_go_to_the_other_replicas_while_a_dead_one_restarts(log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = r.Mortal.options(num_replicas=2).bind(log.path).__call__.bind(inp)
    async with running(gs.graph(out)) as runtime:
        pids = set(await asyncio.gather(*[runtime.execute("sleep0.2") for _ in range(4)]))
        assert len(pids) == 2
        with pytest.raises(NodeExecutionError, match="died"):
            await bounded(runtime.execute("die"))
        answers = [await bounded(runtime.execute("ping")) for _ in range(6)]  # none fails
        survivor = answers[0]
        assert survivor in pids and (pids - {survivor}).isdisjoint(answers)  # never the dead process


async def test_a_replica_whose_restarts_are_exhausted_stays_out_of_routing(log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = r.Mortal.options(num_replicas=2).bind(log.path).__call__.bind(inp)
    async with running(gs.graph(out), max_restarts=0) as runtime:
        backend: Any = runtime.backend
        pids = set(await asyncio.gather(*[runtime.execute("sleep0.2") for _ in range(4)]))
        assert len(pids) == 2
        with pytest.raises(NodeExecutionError, match="died"):
            await bounded(runtime.execute("die"))
        while backend._probes:  # the probe of the dead replica gives up (Ray will not restart it)
            await asyncio.sleep(0.05)
        assert [replica.down for replica in backend.routers["Mortal"].replicas].count(True) == 1
        answers = [await bounded(runtime.execute("ping")) for _ in range(6)]  # none goes to the dead one
        assert len(set(answers)) == 1 and answers[0] in pids


async def test_max_retries_retries_calls_that_were_running_on_a_killed_replica(ray_cluster: Any, log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = r.Mortal.options(max_retries=2).bind(log.path).__call__.bind(inp)
    async with running(gs.graph(out)) as runtime:
        first_pid = await runtime.execute("ping")
        in_flight = asyncio.ensure_future(runtime.execute("sleep1"))
        await bounded(logged(log, "sleeping"), 30)  # the call runs in the replica
        (actor,) = runtime.backend.actors("Mortal")  # type: ignore[union-attr]
        ray_cluster.kill(actor, no_restart=False)
        retried_pid = await bounded(in_flight)  # retried on the restarted replica: the caller never sees it
        assert retried_pid != first_pid
        assert await runtime.execute("ping") == retried_pid


async def test_a_call_that_keeps_killing_its_replica_fails_after_its_retries(log: EventLog) -> None:
    with gs.InputNode() as inp:
        out = r.Mortal.options(max_retries=1).bind(log.path).__call__.bind(inp)
    async with running(gs.graph(out)) as runtime:
        with pytest.raises(NodeExecutionError, match="died while running this call after 1 retry") as info:
            await bounded(runtime.execute("die"))
        assert info.value.node == "Mortal.__call__"
        assert isinstance(await bounded(runtime.execute("ping")), int)


async def test_a_restarted_replica_gets_its_handles_back(ray_cluster: Any) -> None:
    with gs.InputNode() as inp:
        out = g.Caller.bind(g.Add.bind()).__call__.bind(inp)
    async with running(gs.graph(out)) as runtime:
        assert await runtime.execute(1.0) == 10.0
        (caller,) = runtime.backend.actors("Caller")  # type: ignore[union-attr]
        old_pid, _ = await caller.ready.remote()
        ray_cluster.kill(caller, no_restart=False)
        await bounded(restarted(caller, old_pid), 60)  # a call sent before the kill lands may still answer
        await answered(runtime, 2.0, node="Caller.__call__")
        outcomes = [await bounded(runtime.execute(2.0)) for _ in range(3)]
    assert outcomes == [20.0] * 3


# -- resources -------------------------------------------------------------------------
async def test_a_cluster_without_enough_resources_fails_before_any_actor_starts() -> None:
    with gs.InputNode() as inp:
        gpus = r.Placement.options(name="TwoGpus", num_gpus=2).bind().__call__.bind(inp)
        cpus = r.Placement.options(name="ManyCpus", num_cpus=64).bind().__call__.bind(inp)
    plan = compile_app(gs.graph([gpus, cpus]), cluster=None)  # the planner checks nothing: the runtime must
    runtime = GraphRuntime(plan, backend="ray")
    with pytest.raises(GraphValidationError) as info:
        await runtime.start()
    assert info.value.codes == ["GS201", "GS201"]
    assert sorted(d.node or "" for d in info.value.diagnostics) == ["ManyCpus", "TwoGpus"]
    assert "Ray cluster has 1" in str(info.value) and "Ray cluster has 2" in str(info.value)
    assert runtime.backend.routers == {}  # type: ignore[union-attr]


async def test_num_cpus_and_num_gpus_are_given_to_the_actors() -> None:
    with gs.InputNode() as inp:
        gpu = r.Placement.options(name="Gpu", num_cpus=1, num_gpus=1).bind().__call__.bind(inp)
        half = r.Placement.options(name="Half", num_cpus=0.5).bind().__call__.bind(inp)
    async with running(gs.graph({"gpu": gpu, "half": half})) as runtime:
        out = await runtime.execute(None)
    assert out["gpu"]["resources"] == {"CPU": 1.0, "GPU": 1.0}
    assert out["gpu"]["gpu_ids"] == ["0"] and out["gpu"]["cuda_visible_devices"] == "0"
    assert out["half"]["resources"] == {"CPU": 0.5} and out["half"]["gpu_ids"] == []
    assert out["gpu"]["pid"] != out["half"]["pid"]  # one actor (process) per replica


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a machine with a GPU")
async def test_a_gpu_deployment_sees_cuda() -> None:
    with gs.InputNode() as inp:
        out = r.Placement.options(num_gpus=1).bind().__call__.bind(inp)
    async with running(gs.graph(out)) as runtime:
        assert (await runtime.execute(None))["cuda"] is True


# -- references, batching, plans --------------------------------------------------------
async def test_intermediate_results_never_reach_the_driver(log: EventLog) -> None:
    with gs.InputNode() as inp:
        a = g.Sleep.options(name="A").bind("a", log.path, 0.0).__call__.bind(inp)
        b = g.Sleep.options(name="B").bind("b", log.path, 0.0).__call__.bind(a)
        out = g.Add.bind().__call__.bind(a, b)
    async with running(gs.graph(out)) as runtime:
        backend: Any = runtime.backend
        fetched: list[str] = []
        fetch = backend.fetch

        async def recording(values: list[Any]) -> list[Any]:
            fetched.extend(getattr(value, "node", repr(value)) for value in values)
            return await fetch(values)

        backend.fetch = recording
        assert await runtime.execute(1.0) == 2.0 + 3.0
    assert fetched == ["Add.__call__"]


async def test_batch_sizes_reach_the_driver_metrics() -> None:
    with gs.InputNode() as inp:
        out = g.Batched.bind().__call__.bind(inp)
    async with running(gs.graph(out), metrics_interval_s=3600) as runtime:
        sizes = await asyncio.gather(*[runtime.execute(float(i)) for i in range(8)])
        batches = round(sum(1 / size for size in sizes))  # a batch of n answers n items with n
        assert await runtime.backend.flush_batches() == batches  # type: ignore[union-attr]
        histogram = runtime.metrics.histogram(
            "graphserve_batch_size",
            (("graph", runtime.plan.name), ("deployment", "Batched"), ("method", "Batched.__call__")),
        )
        limits = runtime.backend.batch_limits()  # type: ignore[union-attr]  # read from the replica at the flush
    assert histogram is not None and histogram.sum == 8 and histogram.count == batches < 8
    batched = limits[("Batched", 0)]["Batched.__call__"]
    assert batched["size_limit"] == batched["max_batch_size"] and batched["adaptive"] is False


async def test_a_plan_read_from_json_runs_by_import_path() -> None:
    with gs.InputNode() as inp:
        out = g.Caller.bind(g.Scorer.bind()).via_method.bind(inp)
    plan = Plan.from_json(compile_app(gs.graph(out)).to_json())
    async with running(plan) as runtime:
        assert (await runtime.execute("abcde")).score == pytest.approx(0.5)


async def test_a_deployment_defined_in_a_function_is_shipped_by_value() -> None:
    factor = 7

    @gs.deployment
    class Local:
        async def __call__(self, x: float) -> float:
            return x * factor

    with gs.InputNode() as inp:
        out = Local.bind().__call__.bind(g.double.bind(inp))
    async with running(gs.graph(out)) as runtime:
        assert await runtime.execute(1.0) == 14.0


async def test_an_import_path_that_names_another_object_is_a_start_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with gs.InputNode() as inp:
        out = g.Add.bind().__call__.bind(inp)
    plan = compile_app(gs.graph(out))  # remembers the class it was built with
    monkeypatch.setattr(g, "Add", g.Scorer)  # the module attribute now names another class
    with pytest.raises(DeploymentStartError, match="imports another object") as info:
        await GraphRuntime(plan, backend="ray").start()
    assert info.value.deployment == "Add"


async def test_node_latency_is_measured_in_the_actors(log: EventLog) -> None:
    with gs.InputNode() as inp:
        a = g.Sleep.options(name="A").bind("a", log.path, 0.0).__call__.bind(inp)
        out = g.Add.bind().__call__.bind(a)
    async with running(gs.graph(out), metrics_interval_s=0.1) as runtime:
        await runtime.execute(1.0)

        def count() -> int:
            labels = (("graph", runtime.plan.name), ("node", "Add.__call__"))
            histogram = runtime.metrics.histogram("graphserve_node_latency_seconds", labels)
            return 0 if histogram is None else histogram.count

        while count() < 1:  # measured in the actor, collected every metrics_interval_s
            await asyncio.sleep(0.01)
        assert count() == 1


async def test_a_failed_start_stops_the_replicas_already_built(ray_cluster: Any) -> None:
    from graphserve.runtime.ray_backend import RayBackend

    with gs.InputNode() as inp:
        out = g.BrokenInit.bind().__call__.bind(g.Echo.bind().text.bind(inp))
    backend = RayBackend(compile_app(gs.graph(out)))
    created: list[Any] = []
    create = backend._create_actors

    async def recording(ray: Any) -> None:
        await create(ray)
        created.extend(replica.actor for router in backend.routers.values() for replica in router.replicas)

    backend._create_actors = recording  # type: ignore[method-assign]
    with pytest.raises(DeploymentStartError, match="weights missing") as info:
        await GraphRuntime(backend.plan, backend=backend).start()
    assert info.value.deployment == "BrokenInit"
    assert len(created) == 2 and backend.routers == {}
    for actor in created:  # both were killed, the one that was built too
        await bounded(_until_dead(ray_cluster, actor), 30)


async def _until_dead(ray: Any, actor: Any) -> None:
    """ray.kill is asynchronous: a call sent just after it may still reach the actor."""
    while True:
        try:
            await actor.ready.remote()
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.RayTaskError:  # still alive, failing its constructor: not killed yet
            pass
        await asyncio.sleep(0.1)


# -- the ways in ---------------------------------------------------------------------------
class _FailingRay:
    """Ray's kill and cancel raising what they raise for an actor or task that is gone (or a bug)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.killed: list[Any] = []

    def kill(self, actor: Any) -> None:
        self.killed.append(actor)
        raise self.error

    def cancel(self, ref: Any) -> None:
        raise self.error


class _ActorId:
    def hex(self) -> str:
        return "f00d"


class _Actor:
    _actor_id = _ActorId()


def _stopped_backend_with_two_replicas(error: Exception) -> Any:
    from graphserve.runtime.ray_backend import RayBackend, _Replica
    from graphserve.runtime.routing import ReplicaRouter
    from tests.graphs import fault_graphs

    plan = compile_app(fault_graphs.replicated)
    backend = RayBackend(plan)
    backend._ray = _FailingRay(error)
    dep = plan.deployments[0]
    backend.routers = {dep.name: ReplicaRouter(dep, [_Replica(_Actor(), 0), _Replica(_Actor(), 1)])}
    return backend


async def test_stop_and_cancel_pass_over_actors_and_tasks_that_are_gone() -> None:
    from ray.exceptions import ActorHandleNotFoundError, RaySystemError

    from graphserve.runtime.ray_backend import RayValue

    backend = _stopped_backend_with_two_replicas(RaySystemError("Ray has not been started yet"))
    replica = next(iter(backend.routers.values())).replicas[0]
    backend.cancel([RayValue(object(), "n", "d", replica, ())])  # the task's worker is gone
    fake = backend._ray
    await backend.stop()
    assert len(fake.killed) == 2  # every replica was tried
    backend = _stopped_backend_with_two_replicas(ActorHandleNotFoundError("not valid across Ray sessions"))
    await backend.stop()


async def test_stop_and_cancel_do_not_hide_an_error_that_is_not_rays() -> None:
    from graphserve.runtime.ray_backend import RayValue

    backend = _stopped_backend_with_two_replicas(TypeError("ray.cancel() only supported for object refs"))
    replica = next(iter(backend.routers.values())).replicas[0]
    with pytest.raises(TypeError, match="only supported for object refs"):
        backend.cancel([RayValue(object(), "n", "d", replica, ())])
    with pytest.raises(TypeError):
        await backend.stop()


def test_gs_run_on_ray_shares_the_running_cluster(ray_cluster: Any) -> None:
    with gs.InputNode() as inp:
        app = gs.graph(g.Caller.bind(g.Add.bind()).__call__.bind(inp))
    with gs.run(app, backend="ray") as handle:
        assert handle.call(2.0) == 20.0
        assert handle.remote(3.0).result(timeout_s=60) == 30.0  # a DeploymentResponse, as in Ray Serve
    assert ray_cluster.is_initialized()  # it joined the session's Ray; stopping did not shut that down


def test_gs_run_on_ray_checks_resources_against_ray_not_this_machine() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(r.Placement.options(num_gpus=1).bind().__call__.bind(inp))
    with gs.run(app, backend="ray") as handle:  # the session's Ray has a GPU slot; this machine may have none
        assert handle.call(None)["resources"]["GPU"] == 1.0


def test_http_ingress_serves_a_graph_on_ray() -> None:
    from tests.serving_utils import running_server

    with gs.InputNode(schema=g.Text) as inp:
        score = g.Scorer.bind().score.bind(inp.text)
        out = gs.cond(score.score > 0.5, g.Echo.bind().text.bind(inp.text), g.Fails.bind().__call__.bind(inp.text))
        app = gs.graph(out, name="scored")
    with running_server(app, backend="ray") as url:
        ok = httpx.post(f"{url}/scored", json={"text": "a long piece of text"}, timeout=60)
        assert ok.status_code == 200 and ok.json() == "a long piece of text"
        failed = httpx.post(f"{url}/scored", json={"text": "tiny"}, timeout=60)
        assert failed.status_code == 500 and failed.json()["node"] == "Fails.__call__"
        invalid = httpx.post(f"{url}/scored", json={"nope": 1}, timeout=60)
        assert invalid.status_code == 422


async def test_health_says_when_a_deployment_has_no_live_replica(ray_cluster: Any) -> None:
    from tests.graphs import fault_graphs

    async with running(fault_graphs.replicated, max_restarts=0, health_timeout_s=1.0) as runtime:
        assert await runtime.health() is None
        backend: Any = runtime.backend
        for actor in backend.actors("Replicated"):
            ray_cluster.kill(actor, no_restart=True)

        async def unhealthy() -> str:
            while (reason := await runtime.health()) is None:
                await asyncio.sleep(0.05)
            return reason

        reason = await bounded(unhealthy(), 30)
        assert "deployment 'Replicated' has no live replica" in reason


async def test_user_config_reaches_reconfigure_in_the_actors() -> None:
    """Ray Serve's user_config travels in the plan (JSON) and each actor calls reconfigure() with it."""
    from tests.compat.test_user_config import Thresholder

    with gs.InputNode() as inp:
        out = Thresholder.options(user_config={"threshold": 0.9}).bind().__call__.bind(inp)
    plan = Plan.from_json(compile_app(gs.graph(out)).to_json())
    assert plan.deployment("Thresholder").user_config == {"threshold": 0.9}
    async with running(plan) as runtime:
        assert await bounded(runtime.execute(0.7)) is False
        assert await bounded(runtime.execute(0.95)) is True
