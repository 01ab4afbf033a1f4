"""The planner: stages, branch guards, fusion, batching limits, replicas, resources and
cluster feasibility, on the fixture graphs of ``tests/graphs``."""

from __future__ import annotations

import pytest

import graphserve as gs
from graphserve.compiler import Plan, compile_app, detect_cluster, parse_cluster
from graphserve.plan import BatchingPlan, ClusterPlan
from tests.graphs import branching, plan_graphs


def _guard(plan: Plan, node: str) -> list[list[tuple[str, object]]] | None:
    """A node's guard as (switch, branch value or 'default') terms, to read like the graph."""
    guard = plan.node(node).guard
    if guard is None:
        return None
    out = []
    for conj in guard:
        terms: list[tuple[str, object]] = []
        for t in conj:
            value = "default" if t.arm == -1 else plan.node(t.switch).branches[t.arm].value
            terms.append((t.switch, value))
        out.append(terms)
    return out


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_app(branching.app, cluster={"cpus": 8})


# -- stages ------------------------------------------------------------------------------
def test_stages_cover_every_node_once_in_dependency_order(plan: Plan) -> None:
    flat = [n for wave in plan.stages for n in wave]
    assert sorted(flat) == sorted(n.id for n in plan.nodes)
    assert len(flat) == len(set(flat))
    for index, wave in enumerate(plan.stages):
        for node_id in wave:
            node = plan.node(node_id)
            assert node.stage == index
            for source in node.inputs:
                producer = plan.node(source)
                # a deployment call is a hop: whoever reads it runs in a later stage
                if not producer.fused:
                    assert producer.stage < node.stage, (source, node_id)
                else:
                    assert producer.stage <= node.stage, (source, node_id)


def test_independent_calls_share_a_stage_and_dependent_calls_follow(plan: Plan) -> None:
    assert plan.stages[0] == ["input"]
    first = {n for n in plan.stages[1] if plan.node(n).kind == "call"}
    # the score and both arms of the route switch read only the input: one wave
    assert first == {"Scorer.__call__", "Fast.__call__", "Slow.__call__"}
    # the cond's arms wait for the score (their predicate's input)
    assert plan.node("Heavy.run").stage == plan.node("light").stage == 2
    assert plan.output == "output" and plan.stages[-1][-1] == "output"
    assert plan.node("output").stage == len(plan.stages) - 1


def test_a_guarded_node_waits_for_the_selectors_of_its_switches() -> None:
    nested = gs.build(plan_graphs.nested_app())
    big = nested.node("Branch.__call__")
    # it reads only Embed, but runs only once is_big and size_class are known
    assert big.inputs == ["Embed.__call__"]
    assert big.stage > nested.node("Embed.__call__").stage
    assert nested.node("size_class").stage <= big.stage and nested.node("is_big").stage <= big.stage


# -- guards ------------------------------------------------------------------------------
def test_branch_guards_name_the_switch_outcomes(plan: Plan) -> None:
    assert _guard(plan, "Heavy.run") == [[("switch", True)]]
    assert _guard(plan, "light") == [[("switch", False)]]
    assert _guard(plan, "Fast.__call__") == [[("switch#2", "fast")]]
    assert _guard(plan, "Slow.__call__") == [[("switch#2", "slow")]]
    for always in ("input", "input.text", "input.route", "Scorer.__call__", "is_long", "switch", "switch#2", "output"):
        assert plan.node(always).guard is None, always


def test_nested_switch_guards_are_conjunctions_and_a_shared_node_runs_under_either_arm() -> None:
    nested = gs.build(plan_graphs.nested_app())
    assert _guard(nested, "Branch.__call__") == [[("switch", True), ("switch#2", "big")]]
    assert _guard(nested, "Branch_1.__call__") == [[("switch", True), ("switch#2", "small")]]
    # `shared` is the inner default and the outer False arm: any of the two
    assert _guard(nested, "Branch_2.__call__") == [[("switch", True), ("switch#2", "default")], [("switch", False)]]
    # the inner switch and its selector run only when the outer cond took True
    assert _guard(nested, "switch#2") == [[("switch", True)]]
    assert _guard(nested, "size_class") == [[("switch", True)]]
    assert nested.node("Embed.__call__").guard is None


# -- fusion ------------------------------------------------------------------------------
def test_fusion_inlines_glue_switches_and_selections_and_says_why(plan: Plan) -> None:
    fused = {n.id: n.fused_reason for n in plan.nodes if n.fused}
    assert set(fused) == {"input.text", "input.route", "is_long", "switch", "switch#2", "output"}
    assert "glue function" in fused["is_long"] and "inline" in fused["is_long"]
    assert "control flow" in fused["switch"]
    assert "field selection" in fused["input.text"]
    calls = [n for n in plan.nodes if n.kind == "call" and n.function is None]
    assert calls and all(not n.fused and n.fused_reason is None for n in calls)
    assert plan.node("is_long").function == "tests.graphs.branching:is_long"


# -- batching ----------------------------------------------------------------------------
def test_batching_is_in_the_plan_and_a_capping_limit_is_raised_with_gs110(plan: Plan) -> None:
    heavy = plan.deployment("Heavy")
    assert heavy.batching == [
        BatchingPlan(method="run", max_batch_size=8, batch_wait_timeout_s=0.005, max_concurrent_batches=1)
    ]
    assert heavy.max_ongoing_requests == 8  # the user's 4 would cap the batch at 4
    (warning,) = [w for w in plan.warnings if w.code == "GS110"]
    assert warning.node == "Heavy" and warning.severity == "warning"
    assert "max_ongoing_requests=4" in warning.message and "raised to 8" in warning.message
    assert warning.location and warning.location.endswith("branching.py:22")


def test_batching_limits_count_concurrent_batches_and_functions() -> None:
    batching = gs.build(plan_graphs.batching_app())
    assert batching.deployment("WideEnough").max_ongoing_requests == 16  # 4 x 4 fits: untouched
    assert batching.deployment("TooNarrow").max_ongoing_requests == 8  # 4 x 2 > 5: raised
    assert [w.node for w in batching.warnings if w.code == "GS110"] == ["TooNarrow"]
    (fn,) = batching.deployment("batched_function").batching
    assert (fn.method, fn.max_batch_size, fn.max_concurrent_batches) == ("__call__", 3, 1)


# -- replicas and resources ---------------------------------------------------------------
def test_replicas_and_resources(plan: Plan) -> None:
    scorer = plan.deployment("Scorer")
    assert scorer.num_replicas == 2 and scorer.resources.num_cpus == 1.0
    replicas = [(r.deployment, r.index, r.num_cpus) for r in plan.replicas]
    assert replicas.count(("Scorer", 0, 1.0)) == 1 and replicas.count(("Scorer", 1, 1.0)) == 1
    assert ("Heavy", 0, 2.0) in replicas
    assert len(plan.replicas) == sum(d.num_replicas for d in plan.deployments)
    assert plan.cluster == ClusterPlan(cpus=8, gpus=0, source="given")


def test_gpu_and_ray_actor_options_resources() -> None:
    gpu = gs.build(plan_graphs.gpu_app(), cluster="cpus=4,gpus=3")
    assert gpu.deployment("GpuModel").resources.num_gpus == 1.0
    assert [r.index for r in gpu.replicas if r.deployment == "GpuModel"] == [0, 1]
    actor = gpu.deployment("ActorOptions").resources
    assert (actor.num_cpus, actor.num_gpus) == (0.5, 0.25)


def test_infeasible_cpus_name_each_deployment_and_the_shortfall() -> None:
    with pytest.raises(gs.GraphValidationError) as caught:
        compile_app(branching.app, cluster={"cpus": 3})
    err = caught.value
    assert err.codes == ["GS201", "GS201"]
    by_node = {d.node: d for d in err.diagnostics}
    assert set(by_node) == {"Heavy", "Scorer"}
    assert "needs 2 cpus (2 replica(s) x 1)" in by_node["Scorer"].message
    assert "asks 4 cpus" in by_node["Scorer"].message and "has 3" in by_node["Scorer"].message
    assert "short by 1" in by_node["Heavy"].message
    assert str(by_node["Heavy"].location).endswith("branching.py:22")


def test_infeasible_gpus() -> None:
    with pytest.raises(gs.GraphValidationError) as caught:
        gs.build(plan_graphs.gpu_app(), cluster={"cpus": 8, "gpus": 1})
    messages = {d.node: d.message for d in caught.value.diagnostics}
    assert caught.value.codes == ["GS201", "GS201"]
    assert "needs 2 gpus" in messages["GpuModel"] and "short by 1.25" in messages["GpuModel"]
    assert "needs 0.25 gpus" in messages["ActorOptions"]


def test_no_cluster_checks_nothing_and_fits_exactly() -> None:
    assert gs.build(plan_graphs.gpu_app()).cluster is None
    exact = gs.build(plan_graphs.gpu_app(), cluster={"cpus": 0.5, "gpus": 2.25})
    assert exact.cluster is not None and exact.cluster.gpus == 2.25


def test_parse_and_detect_cluster() -> None:
    assert parse_cluster("cpus=8, gpus=2") == ClusterPlan(cpus=8, gpus=2, source="given")
    assert parse_cluster({"gpus": 1}) == ClusterPlan(cpus=0, gpus=1, source="given")
    assert parse_cluster(None) is None
    detected = parse_cluster("detect")
    assert detected is not None and detected.source == "detected" and detected.cpus >= 1
    assert detect_cluster().cpus == detected.cpus
    with pytest.raises(ValueError, match="unknown cluster keys"):
        parse_cluster("cpu=8")
    with pytest.raises(ValueError):
        parse_cluster("cpus=eight")


def test_autoscaling_min_replicas_sets_the_replica_count() -> None:
    import graphserve as gs
    from graphserve.compiler import compile_app

    @gs.deployment(num_replicas="auto", autoscaling_config={"min_replicas": 3, "max_replicas": 8})
    class Auto:
        async def __call__(self, x: int) -> int:
            return x

    @gs.deployment(num_replicas=2, autoscaling_config={"min_replicas": 5})
    class Fixed:
        async def __call__(self, x: int) -> int:
            return x

    with gs.InputNode() as inp:
        plan = compile_app(gs.graph([Auto.bind().__call__.bind(inp), Fixed.bind().__call__.bind(inp)]))
    assert plan.deployment("Auto").num_replicas == 3 and plan.deployment("Fixed").num_replicas == 2
    assert sum(1 for w in plan.warnings if "autoscaling_config" in w.message) == 2


def test_a_batch_sized_by_batch_size_fn_is_not_capped_by_max_ongoing_requests() -> None:
    """With ``batch_size_fn``, ``max_batch_size`` counts tokens (or the like), not calls: GS110 does
    not apply and ``max_ongoing_requests`` stays as written."""

    @gs.deployment(max_ongoing_requests=4)
    class Tokens:
        @gs.batch(max_batch_size=512, batch_size_fn=lambda texts: sum(len(t.split()) for t in texts))
        async def __call__(self, texts: list[str]) -> list[int]:
            return [len(t.split()) for t in texts]

    with gs.InputNode() as inp:
        plan = gs.build(gs.graph(Tokens.bind().__call__.bind(inp)))
    assert plan.deployment("Tokens").max_ongoing_requests == 4
    assert [w.code for w in plan.warnings if w.code == "GS110"] == []
    (batching,) = plan.deployment("Tokens").batching
    assert batching.sized_by_fn and batching.max_batch_size == 512
