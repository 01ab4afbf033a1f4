"""GS201, the one resource rule (graphserve/resources.py), on plain numbers: as the Ray
backend checks a Ray cluster (no Ray needed) and as the planner checks the cluster it
plans for."""

from __future__ import annotations

import pytest

import graphserve as gs
from graphserve.compiler import compile_app
from graphserve.errors import GraphValidationError
from graphserve.plan import Plan
from graphserve.resources import Capacity, shortfalls
from graphserve.runtime.ray_backend import ray_capacity
from tests.graphs import ray_graphs as r


def check_fits(plan: Plan, totals: dict[str, float], nodes: list[dict[str, float]]) -> None:
    """What the Ray backend runs before any actor starts."""
    from graphserve.resources import check_fits

    check_fits(plan.deployments, ray_capacity(totals, nodes), plan.name)


def plan_for(**options: float) -> Plan:
    with gs.InputNode() as inp:
        out = r.Placement.options(name="Model", **options).bind().__call__.bind(inp)
    return compile_app(gs.graph(out), cluster=None)


def test_a_plan_that_fills_the_cluster_fits_and_one_more_replica_does_not() -> None:
    cluster = {"CPU": 2.0, "GPU": 1.0}
    assert check_fits(plan_for(num_replicas=2, num_gpus=0.5, num_cpus=1), cluster, [cluster]) is None
    with pytest.raises(GraphValidationError) as info:
        check_fits(plan_for(num_replicas=3, num_gpus=0.5, num_cpus=1), cluster, [cluster])
    assert info.value.codes == ["GS201", "GS201"]
    cpus, gpus = (d.message for d in info.value.diagnostics)
    assert "needs 3 cpus" in cpus and "short by 1" in cpus
    assert "needs 1.5 gpus" in gpus and "short by 0.5" in gpus


def test_too_few_gpus_in_all_names_the_deployment() -> None:
    plan = plan_for(num_replicas=3, num_gpus=1)
    with pytest.raises(GraphValidationError) as info:
        check_fits(plan, {"CPU": 8.0, "GPU": 2.0}, [{"CPU": 8.0, "GPU": 2.0}])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "GS201" and diagnostic.node == "Model"
    assert "needs 3 gpus" in diagnostic.message and "short by 1" in diagnostic.message


def test_a_replica_bigger_than_every_node_is_refused() -> None:
    plan = plan_for(num_gpus=2)
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    with pytest.raises(GraphValidationError, match="no node of the Ray cluster has more than 1") as info:
        check_fits(plan, {"CPU": 8.0, "GPU": 2.0}, nodes)
    assert info.value.codes == ["GS201"]


def test_no_gpus_at_all() -> None:
    plan = plan_for(num_gpus=1)
    with pytest.raises(GraphValidationError, match="the Ray cluster has 0"):
        check_fits(plan, {"CPU": 2.0}, [{"CPU": 2.0}])


def test_a_deployment_that_asks_for_none_is_never_reported() -> None:
    with gs.InputNode() as inp:
        a = r.Placement.options(name="Needy", num_cpus=2).bind().__call__.bind(inp)
        b = r.Placement.options(name="Modest").bind().__call__.bind(a)
    plan = compile_app(gs.graph(b), cluster=None)
    capacity = Capacity(1, 0, "the cluster (given)", "plan for a bigger cluster (--cluster {resource}=N)")
    (problem,) = shortfalls(plan.deployments, capacity)
    assert problem.node == "Needy" and problem.location is None
    assert "the cluster (given) has 1: short by 1" in problem.message
    assert problem.hint == "lower num_replicas or num_cpus, or plan for a bigger cluster (--cluster cpus=N)"
    assert shortfalls(plan.deployments, Capacity(2, 0, "c", "r")) == []  # exactly full fits
