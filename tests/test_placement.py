"""Placement (compiler/placement.py): replicas spread over named nodes, then near their neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.compiler.placement import Demand, place
from graphserve.errors import GraphValidationError
from graphserve.plan import ClusterNodePlan
from tests.graphs import backends as g


@gs.deployment(num_replicas=3, num_cpus=1)
class Wide:
    def __call__(self, x: int) -> int:
        return x


@gs.deployment(num_gpus=1)
class Gpu:
    def __call__(self, x: int) -> int:
        return x


def nodes_file(tmp_path: Path, nodes: list[dict[str, object]]) -> str:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": nodes}))
    return f"nodes={path}"


def app() -> gs.App:
    with gs.InputNode() as inp:
        out = Gpu.bind().__call__.bind(Wide.bind().__call__.bind(inp))
    return gs.graph(out)


def test_replicas_of_a_deployment_spread_over_nodes_and_skip_a_head_without_cpus(tmp_path: Path) -> None:
    cluster = nodes_file(
        tmp_path,
        [{"name": "head", "cpus": 0}, {"name": "a", "cpus": 4}, {"name": "b", "cpus": 4, "gpus": 1}],
    )
    plan = compile_app(app(), cluster=cluster)
    wide = [r.node for r in plan.replicas if r.deployment == "Wide"]
    assert sorted(wide) in (["a", "a", "b"], ["a", "b", "b"])
    assert [r.node for r in plan.replicas if r.deployment == "Gpu"] == ["b"]
    assert "head" not in {r.node for r in plan.replicas}


def test_a_replica_that_fits_on_no_single_node_is_gs201_naming_it(tmp_path: Path) -> None:
    cluster = nodes_file(tmp_path, [{"name": "a", "cpus": 1.5, "gpus": 1}, {"name": "b", "cpus": 1.5}])
    with pytest.raises(GraphValidationError) as caught:
        compile_app(app(), cluster=cluster)  # 3 x 1 cpu: 3 in all, but only one fits per node
    text = str(caught.value)
    assert "GS201" in text and "1 replica(s) of Wide" in text


def test_without_named_nodes_every_replica_is_on_node_0() -> None:
    with gs.InputNode() as inp:
        plan = compile_app(gs.graph(g.Add.bind().__call__.bind(inp)), cluster="cpus=4")
    assert {r.node for r in plan.replicas} == {"node-0"}


def test_place_spreads_a_deployment_first_then_keeps_neighbours_together() -> None:
    nodes = [ClusterNodePlan(name="a", cpus=4), ClusterNodePlan(name="b", cpus=4), ClusterNodePlan(name="head", cpus=0)]
    demands = [Demand("First", 1, 1, 0), Demand("Second", 2, 1, 0, frozenset({"First"})), Demand("Alone", 1, 3, 0)]
    placed, unplaced = place(demands, nodes)
    where = {(r.deployment, r.index): r.node for r in placed}
    assert where[("First", 0)] == "a"  # most room, then by name
    assert where[("Second", 0)] == "a"  # next to its neighbour
    assert where[("Second", 1)] == "b"  # its second replica spreads, although a still has room
    assert where[("Alone", 0)] == "b"  # only b has 3 CPUs left; the CPU-less head takes nothing
    assert unplaced == []
    _, unplaced = place([Demand("Big", 1, 5, 0)], nodes)
    assert [(u.deployment, u.index) for u in unplaced] == [("Big", 0)]
