"""Actor fusion (compiler/fusion.py): which neighbouring deployments share a Ray actor, and why not."""

from __future__ import annotations

import json
from pathlib import Path

from graphserve.compiler import compile_app
from graphserve.compiler.fusion import fuse
from graphserve.plan import Plan
from tests.graphs import fusion_graphs as f


def groups(plan: Plan) -> list[list[str]]:
    assert plan.fusion is not None
    return [g.deployments for g in plan.fusion.groups]


def kept_apart(plan: Plan) -> dict[tuple[str, ...], str]:
    assert plan.fusion is not None
    return {tuple(k.deployments): k.reason for k in plan.fusion.kept_apart}


def test_a_chain_of_cpu_deployments_is_one_group_saving_its_hops() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b", "c")))
    assert groups(plan) == [["a", "b", "c"]]
    assert plan.fusion is not None
    group = plan.fusion.groups[0]
    assert group.name == "a+b+c" and group.hops_saved == 2
    assert "in process instead of a Ray hop" in group.reason and "none needing a GPU" in group.reason
    assert plan.fused_group("b") is group and plan.fused_group("nope") is None


def test_two_gpu_deployments_are_kept_apart_but_a_cpu_one_joins_a_gpu_one() -> None:
    a, b, c = f.stamps("pre", "gpu1", "gpu2", gpu1={"num_gpus": 1}, gpu2={"num_gpus": 1})
    plan = compile_app(f.chain(a, b, c))
    assert groups(plan) == [["pre", "gpu1"]]
    assert "gpu1 and gpu2 each need a GPU" in kept_apart(plan)[("gpu1", "gpu2")]


def test_two_members_asking_for_a_whole_cpu_are_kept_apart() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b", a={"num_cpus": 1}, b={"num_cpus": 2})))
    assert groups(plan) == []
    assert "each ask for a whole CPU" in kept_apart(plan)[("a", "b")]


def test_different_num_replicas_are_scaled_separately() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b", "c", b={"num_replicas": 2}, c={"num_replicas": 2})))
    assert groups(plan) == [["b", "c"]]  # b and c have the same count: they still fuse
    assert "different num_replicas (a: 1, b: 2)" in kept_apart(plan)[("a", "b")]


def test_different_max_retries_are_kept_apart() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b", b={"max_retries": 2})))
    assert "different max_retries" in kept_apart(plan)[("a", "b")]


def test_fuse_false_opts_a_deployment_out() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b", "c", b={"fuse": False})))
    assert groups(plan) == []
    assert kept_apart(plan) == {("a", "b"): "b opted out (fuse=False)", ("b", "c"): "b opted out (fuse=False)"}
    assert "fuse" in plan.deployment("b").user_set and plan.deployment("b").fuse is False


def test_fusion_never_spans_a_planned_node_boundary(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"nodes": [{"name": "n1", "cpus": 1}, {"name": "n2", "cpus": 1}]}))
    app = f.chain(*f.stamps("a", "b", a={"num_cpus": 0.6}, b={"num_cpus": 0.6}))  # both cannot fit on one node
    plan = compile_app(app, cluster=f"nodes={nodes}")
    assert {r.node for r in plan.replicas} == {"n1", "n2"}
    assert groups(plan) == []
    assert "replica 0 is planned on different nodes" in kept_apart(plan)[("a", "b")]


def test_neighbours_that_fit_on_one_node_are_placed_together_and_fused(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"nodes": [{"name": "n1", "cpus": 2}, {"name": "n2", "cpus": 2}]}))
    app = f.chain(*f.stamps("a", "b", a={"num_cpus": 0.5}, b={"num_cpus": 0.5}))
    plan = compile_app(app, cluster=f"nodes={nodes}")
    assert len({r.node for r in plan.replicas}) == 1 and groups(plan) == [["a", "b"]]


def test_a_handle_makes_neighbours_too() -> None:
    with f.gs.InputNode() as inp:
        out = f.Relay.bind(f.Stamp.options(name="callee").bind("callee")).__call__.bind(inp)
    plan = compile_app(f.gs.graph(out))
    assert groups(plan) == [["Relay", "callee"]]
    assert plan.fusion is not None and plan.fusion.groups[0].hops_saved == 1


def test_no_fuse_turns_fusion_off_with_the_reason() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b")))
    fusion = fuse(plan, enabled=False)
    assert fusion is plan.fusion and not fusion.enabled and fusion.groups == []
    assert kept_apart(plan) == {("a", "b"): "fusion is off for this plan (--no-fuse)"}


def test_the_fusion_survives_json_byte_for_byte_and_a_version_1_plan_still_reads() -> None:
    plan = compile_app(f.chain(*f.stamps("a", "b")))
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again.to_json() == text and groups(again) == [["a", "b"]]
    old = json.loads(text)
    old["version"] = 1
    del old["fusion"]
    for dep in old["deployments"]:
        del dep["fuse"]
    legacy = Plan.from_json(json.dumps(old))
    assert legacy.fusion is None and legacy.fused_group("a") is None


def test_branches_side_by_side_and_a_join_waiting_outside_are_kept_apart() -> None:
    plan = compile_app(f.fan_out_and_join())
    apart = kept_apart(plan)
    # the first branch fuses with its producer; the second runs side by side with the first: apart
    assert groups(plan) == [["first", "branch0"]]
    assert "branch0 and branch1 run side by side" in apart[("first", "branch1")]
    # the join waits for both branches: fused with one, its call would still be an actor call of its own
    assert "join also waits for" in apart[("branch0", "join")]
