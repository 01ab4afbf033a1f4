"""Several Ray nodes on this machine (``ray.cluster_utils.Cluster``): a head with no CPUs and
two workers with their own labels (``b`` also holds one logical GPU). Every answer says
which node computed it.

One cluster for the whole module (it takes ~15 s to start); the test that removes a node
runs last and adds a fresh one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graphserve.cli import main as cli_main
from graphserve.compiler import compile_app
from graphserve.errors import DeploymentStartError, GraphError, GraphValidationError, NodeExecutionError
from graphserve.plan import Plan
from graphserve.ray_cluster import read_ray_cluster
from graphserve.runtime import GraphRuntime
from graphserve.runtime.ray_backend import RayBackend
from graphserve.targets import cluster_option
from tests.conftest import start_session_ray
from tests.graphs import cluster_graphs as cg

pytestmark = pytest.mark.slow

# A killed node is noticed in about a second (Ray's default is 5 missed checks of 3 s).
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


@dataclass
class Nodes:
    cluster: Any
    a: Any
    b: Any


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    was_up = ray.is_initialized()
    if was_up:  # the session's single-node instance: give way, and come back after
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_NODE_DEATH},
    )
    a = cluster.add_node(num_cpus=1, labels={"zone": "a"}, resources={"zone_a": 1})
    b = cluster.add_node(num_cpus=1, num_gpus=1, labels={"zone": "b"}, resources={"zone_b": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    try:
        yield Nodes(cluster, a, b)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_up:
            start_session_ray(ray)


@contextlib.asynccontextmanager
async def running(plan: Plan, **options: Any) -> AsyncIterator[tuple[GraphRuntime, RayBackend]]:
    runtime = GraphRuntime(plan, backend="ray", **options)
    await runtime.start()
    assert isinstance(runtime.backend, RayBackend)
    try:
        yield runtime, runtime.backend
    finally:
        await runtime.stop()


async def until(condition: Any, seconds: float = 60.0) -> None:
    """Wait for ``condition()``; fail the test (never hang) after ``seconds``."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), seconds)


def live_plan(app: Any) -> Plan:
    return compile_app(app, cluster=read_ray_cluster())


# -- the plan names real nodes -----------------------------------------------------------------
def test_ray_auto_reads_the_live_nodes(nodes: Nodes) -> None:
    cluster = cluster_option("ray:auto")
    by_id = {n.id: n for n in cluster.nodes}
    assert set(by_id) == {nodes.cluster.head_node.node_id, nodes.a.node_id, nodes.b.node_id}
    assert by_id[nodes.a.node_id].labels == {"zone": "a"} and by_id[nodes.a.node_id].cpus == 1
    assert by_id[nodes.b.node_id].gpus == 1
    assert by_id[nodes.cluster.head_node.node_id].cpus == 0


def test_build_with_ray_auto_spreads_each_deployment_over_the_workers(nodes: Nodes, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert cli_main(["build", "tests.graphs.cluster_graphs:chain_app", "--cluster", "ray:auto", "-o", str(out)]) == 0
    plan = Plan.from_json(out.read_text())
    ids = {n.name: n.id for n in plan.cluster.nodes} if plan.cluster else {}
    for deployment in ("First", "Second"):
        placed = {ids[r.node] for r in plan.replicas if r.deployment == deployment}
        assert placed == {nodes.a.node_id, nodes.b.node_id}  # one replica per worker, none on the CPU-less head


async def test_replicas_run_on_the_nodes_the_plan_names(nodes: Nodes) -> None:
    plan = live_plan(cg.chain())
    ids = {n.name: n.id for n in plan.cluster.nodes} if plan.cluster else {}
    async with running(plan) as (runtime, backend):
        reported = backend.replica_nodes()
        for replica in plan.replicas:
            assert reported[replica.deployment][replica.index][1] == ids[replica.node]
        answers = await asyncio.gather(*(runtime.execute({"x": i}) for i in range(8)))
    assert [a["x"] for a in answers] == [(i + 1) * 10 for i in range(8)]
    assert {step["node"] for a in answers for step in a["path"]} == {nodes.a.node_id, nodes.b.node_id}


async def test_a_planned_assignment_pins_replicas_to_a_node(nodes: Nodes) -> None:
    plan = live_plan(cg.chain())
    on_a = next(n.name for n in plan.cluster.nodes if n.id == nodes.a.node_id) if plan.cluster else ""
    for replica in plan.replicas:
        replica.node = on_a  # what a planner (e.g. the SLO planner) may decide: everything on one node
    async with running(plan) as (_, backend):
        assert {node for replicas in backend.replica_nodes().values() for _, node in replicas} == {nodes.a.node_id}


async def test_a_plan_for_nodes_this_cluster_lacks_is_refused_before_any_actor(nodes: Nodes) -> None:
    plan = live_plan(cg.chain())
    assert plan.cluster is not None
    # a node that holds replicas (the nodes are sorted by id: the CPU-less head may be any of them)
    used = next(n for n in plan.cluster.nodes if any(r.node == n.name for r in plan.replicas))
    used.id = "f" * 56
    with pytest.raises(GraphValidationError) as caught:
        async with running(plan):
            pass
    assert caught.value.diagnostics[0].code == "GS201"
    assert "which the Ray cluster does not have" in str(caught.value)


async def test_a_gpu_deployment_goes_to_the_node_with_the_gpu(nodes: Nodes) -> None:
    plan = live_plan(cg.gpu())
    async with running(plan) as (runtime, _):
        answer = await runtime.execute(None)
    assert answer["node"] == nodes.b.node_id and answer["gpu_ids"] == ["0"]


# -- deployment code reaches the workers ---------------------------------------------------------
SHIPPED = """
import graphserve as gs

@gs.deployment
class Shipped:
    async def __call__(self, x):
        return {"x": x, "from": __file__}
"""


DRIVER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[2])  # this driver imports the module to compile; the workers get it from working_dir
import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.runtime import GraphRuntime
import shipped_module_gs17 as shipped

async def main():
    with gs.InputNode() as inp:
        app = gs.graph(shipped.Shipped.bind().__call__.bind(inp), name="shipped")
    env = {"working_dir": sys.argv[2]}
    runtime = GraphRuntime(compile_app(app), backend="ray", address=sys.argv[1], runtime_env=env)
    await runtime.start()
    try:
        print(json.dumps(await runtime.execute(3)))
    finally:
        await runtime.stop()

asyncio.run(main())
"""


async def test_deployment_code_reaches_workers_through_runtime_env_working_dir(nodes: Nodes, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "shipped_module_gs17.py").write_text(SHIPPED)
    sys.path.insert(0, str(code))  # the driver imports it to compile; the workers do not see this path
    try:
        import shipped_module_gs17 as shipped  # type: ignore[import-not-found]

        import graphserve as gs

        with gs.InputNode() as inp:
            app = gs.graph(shipped.Shipped.bind().__call__.bind(inp), name="shipped")
        plan = compile_app(app)
        with pytest.raises(DeploymentStartError, match=r"Shipped.*shipped_module_gs17"):  # workers cannot import it
            async with running(plan, start_timeout_s=60):
                pass
        with pytest.raises(DeploymentStartError, match="job level"):  # a local dir needs ray.init: a fresh driver
            async with running(plan, runtime_env={"working_dir": str(code)}):
                pass
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("shipped_module_gs17", None)
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DRIVER, nodes.cluster.address, str(code), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(driver.communicate(), 120)
    assert driver.returncode == 0
    answer = json.loads(out.decode().strip().splitlines()[-1])
    assert answer["x"] == 3 and not answer["from"].startswith(str(code))  # Ray's unpacked copy ran


async def test_ray_client_mode_is_refused_with_a_clear_error(nodes: Nodes) -> None:
    plan = live_plan(cg.chain())
    with pytest.raises(GraphError, match="ray:// client mode is not supported"):
        async with running(plan, address="ray://127.0.0.1:10001"):
            pass


# -- several ingress processes share one replica set -------------------------------------------
async def test_shared_backends_attach_to_one_replica_set_and_the_last_one_out_removes_it(nodes: Nodes) -> None:
    import ray

    plan = live_plan(cg.chain())
    async with running(plan, shared=True) as (first_runtime, first):
        async with running(plan, shared=True) as (second_runtime, second):
            assert second.replica_nodes() == first.replica_nodes()  # the same actors: same pids, same nodes
            answers = await asyncio.gather(*(r.execute({"x": 1}) for r in (first_runtime, second_runtime)))
            assert [a["x"] for a in answers] == [20, 20]
        assert await first_runtime.execute({"x": 2}) == {"x": 30, "path": ANY_PATH}  # the other one left
        controller = ray.get_actor("graphserve:chain", namespace="graphserve")
        assert len(await controller.attached.remote()) == 1
    with pytest.raises(ValueError):  # the last one out removed the replicas and the controller
        ray.get_actor("graphserve:chain:First:0", namespace="graphserve")
    with pytest.raises(ValueError):
        ray.get_actor("graphserve:chain", namespace="graphserve")


async def test_a_shared_graph_with_another_plan_is_refused_naming_it(nodes: Nodes) -> None:
    plan = live_plan(cg.chain())
    other = live_plan(cg.chain())
    other.deployments[0].max_ongoing_requests = 7
    async with running(plan, shared=True):
        with pytest.raises(GraphError, match=r"'chain' already runs on this Ray cluster .* different plan"):
            async with running(other, shared=True):
                pass


class _AnyPath:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, list) and len(other) == 2


ANY_PATH = _AnyPath()


async def _start_ingress(address: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "graphserve",
        "deploy",
        "tests.graphs.cluster_graphs:chain_app",
        "--backend",
        "ray",
        "--address",
        address,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    route = ""
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        assert line, "the ingress exited before it was ready"
        if " at POST " in line:
            route = line.rsplit(" at POST ", 1)[1].strip()
        if "ready at" in line:
            return process, route


async def test_two_ingress_processes_share_the_replicas_and_one_dying_leaves_the_other_serving(
    nodes: Nodes,
) -> None:
    import httpx
    import ray

    (one, url_one), (two, url_two) = await asyncio.gather(
        _start_ingress(nodes.cluster.address), _start_ingress(nodes.cluster.address)
    )
    try:
        async with httpx.AsyncClient(timeout=60) as client:

            async def pids(url: str) -> set[int]:
                answers = await asyncio.gather(*(client.post(url, json={"x": i}) for i in range(8)))
                assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
                return {step["pid"] for a in answers for step in a.json()["path"]}

            seen_one, seen_two = await pids(url_one), await pids(url_two)
            replicas = await asyncio.gather(  # First and Second are fused: one actor per replica
                *(
                    ray.get_actor(f"graphserve:chain:First+Second:{i}", namespace="graphserve").ready.remote()
                    for i in range(2)
                )
            )
            assert seen_one | seen_two <= {pid for pid, _ in replicas}  # both answered from the one set
            assert len({pid for pid, _ in replicas}) == 2

            statuses: list[int] = []

            async def load() -> None:
                while len(statuses) < 400:
                    statuses.append((await client.post(url_two, json={"x": 1})).status_code)

            loaders = [asyncio.ensure_future(load()) for _ in range(4)]
            await until(lambda: len(statuses) >= 40)
            one.kill()  # SIGKILL: it never detaches
            await one.wait()
            await asyncio.wait_for(asyncio.gather(*loaders), 120)
        assert statuses.count(200) == len(statuses) >= 400  # the other kept 100% success
    finally:
        for process in (one, two):
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 60)
    # the killed ingress is still counted: the replicas stay until deleted
    assert (await ray.get_actor("graphserve:chain:First+Second:0", namespace="graphserve").ready.remote())[0] > 0
    deleted = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "graphserve",
        "delete",
        "chain",
        "--address",
        nodes.cluster.address,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(deleted.communicate(), 120)
    assert deleted.returncode == 0 and "deleted (2 replicas)" in out.decode()
    with pytest.raises(ValueError):
        ray.get_actor("graphserve:chain", namespace="graphserve")


async def test_a_fused_group_whose_summed_resources_fit_on_no_node_is_refused_naming_it(nodes: Nodes) -> None:
    from tests.graphs import fusion_graphs as f

    plan = compile_app(f.chain(*f.stamps("a", "b", a={"num_cpus": 0.75}, b={"num_cpus": 0.75})))  # no nodes named
    assert plan.fusion is not None and [g.name for g in plan.fusion.groups] == ["a+b"]
    with pytest.raises(GraphValidationError, match=r"one replica of a\+b \(fused\) needs 1.5 cpus but no node"):
        async with running(plan):
            pass  # pragma: no cover - refused before any actor starts


# -- a node dies under load (last: it removes node b, then adds a fresh node) ---------------------
async def test_a_node_removed_under_load_fails_its_calls_naming_the_node_and_the_graph_recovers(
    nodes: Nodes,
) -> None:
    """Synchronised on events, never on time: calls are held on every replica before node b goes;
    every call either answers or fails naming node b; every replica comes back on node a; calls
    started after that all answer. Generous bounds (a loaded machine), but every wait is bounded."""
    plan = live_plan(cg.chain())
    assert plan.fusion is not None and [g.deployments for g in plan.fusion.groups] == [["First", "Second"]]
    outcomes: list[tuple[float, BaseException | None]] = []  # (when the call started, its error)
    load = asyncio.Event()
    async with running(plan) as (runtime, backend):
        group = backend.routers["First"]  # First and Second share one actor per replica (fused)
        on_b = [r for r in group.replicas if r.ray_node == nodes.b.node_id]
        assert len(on_b) == 1 and len(group.replicas) == 2  # one replica per worker

        async def call(request: dict[str, Any]) -> BaseException | None:
            try:
                await asyncio.wait_for(runtime.execute(request), 120)  # nothing may hang
            except NodeExecutionError as exc:
                return exc
            return None

        async def client() -> None:
            while len(outcomes) < 20_000:  # bounded, whatever happens
                await load.wait()
                started = time.monotonic()
                outcomes.append((started, await call({"x": 1})))

        clients = [asyncio.ensure_future(client()) for _ in range(4)]
        try:
            load.set()
            await until(lambda: len(outcomes) >= 20, 120)  # under load
            load.clear()  # pause the clients while the held calls take one place on each replica
            await until(lambda: group.ongoing == 0, 120)
            held = [asyncio.ensure_future(call({"x": 1, "sleep": 5})) for _ in range(2)]
            await until(lambda: all(r.ongoing == 1 for r in group.replicas), 120)
            load.set()
            removed_at = time.monotonic()
            await asyncio.to_thread(nodes.cluster.remove_node, nodes.b, False)  # killed, not drained
            results = await asyncio.wait_for(asyncio.gather(*held), 180)
            assert sum(error is not None for error in results) == 1, results  # the one held on node b

            async def recovered() -> float:
                while True:  # every replica answers again, each on the remaining worker
                    try:
                        where = [await a.ready.remote() for dep in ("First", "Second") for a in backend.actors(dep)]
                    except Exception:  # still restarting
                        await asyncio.sleep(0.05)
                        continue
                    if {node for _, node in where} == {nodes.a.node_id}:
                        return time.monotonic()
                    await asyncio.sleep(0.05)

            back_at = await asyncio.wait_for(recovered(), 180)
            await until(lambda: sum(started > back_at for started, _ in outcomes) >= 40, 120)
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    errors = [error for error in [*results, *(e for _, e in outcomes)] if error is not None]
    for error in errors:  # every failure names the replica that died and node b, never anything else
        assert isinstance(error, NodeExecutionError) and error.deployment in ("First", "Second"), error
        assert "died" in str(error) and nodes.b.node_id in str(error), error
    after = [error for started, error in outcomes if started > back_at]
    assert len(after) >= 40 and all(error is None for error in after)  # serves fully again
    print(json.dumps({"node_removed_recovery_s": round(back_at - removed_at, 2), "failed_calls": len(errors)}))

    fresh = nodes.cluster.add_node(num_cpus=1, labels={"zone": "c"})  # a node added later takes new replicas
    nodes.cluster.wait_for_nodes()
    plan = live_plan(cg.chain())
    assert {n.id for n in plan.cluster.nodes if n.cpus} == {nodes.a.node_id, fresh.node_id} if plan.cluster else False
    async with running(plan) as (_, backend):
        assert fresh.node_id in {node for _, node in backend.replica_nodes()["First"]}
