"""Placement: which cluster node each replica runs on (``ReplicaPlan.node``, the one field
the runtime reads), for plans made with or without an SLO.

The rule, for a cluster that names its nodes (``--cluster nodes=FILE`` or ``ray:auto``):
deployments in the caller's order; each replica goes to the node that fits it and

1. holds the fewest replicas of its deployment so far (a deployment's replicas spread over
   nodes: losing one node never takes all of them),
2. then holds the most replicas of the deployment's neighbours in the graph (the SLO
   planner passes them: a chain stays on one node where spreading allows, saving
   transfers),
3. then has the most room left, then by name.

A node with neither CPUs nor GPUs (a Ray head started with ``--num-cpus=0``) takes no
replicas. A node is never over-committed: a replica that fits nowhere is returned as a
problem naming it. The planner without an SLO (:func:`spread`) orders GPU deployments first
(they are the scarce ones) and passes neighbours too; the SLO planner (``slo.py``) uses graph
order and neighbours. Replicas of neighbours on one node may share a fused actor (``fusion.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from graphserve.plan import ClusterNodePlan, DeploymentPlan, ReplicaPlan

_EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """One deployment's replicas to place: how many, what each needs, and whom it talks to."""

    deployment: str
    replicas: int
    cpus: float
    gpus: float
    near: frozenset[str] = field(default_factory=frozenset)  # neighbours: preferred on the same node


@dataclass
class Unplaced:
    """A replica no node had room for."""

    deployment: str
    index: int
    cpus: float
    gpus: float


def usable(nodes: Sequence[ClusterNodePlan]) -> list[ClusterNodePlan]:
    """The nodes that may take replicas: those with some CPUs or GPUs."""
    return [n for n in nodes if n.cpus > _EPS or n.gpus > _EPS]


def place(demands: Sequence[Demand], nodes: Sequence[ClusterNodePlan]) -> tuple[list[ReplicaPlan], list[Unplaced]]:
    """Replicas of ``demands`` (in that order) on ``nodes`` (see the module docstring), and
    those that fit nowhere."""
    candidates = usable(nodes)
    free = {n.name: [n.cpus, n.gpus] for n in candidates}
    held: dict[str, dict[str, int]] = {n.name: {} for n in candidates}
    placed: list[ReplicaPlan] = []
    unplaced: list[Unplaced] = []
    for demand in demands:
        name, cpus, gpus = demand.deployment, demand.cpus, demand.gpus
        for index in range(demand.replicas):
            fits = [n for n in free if free[n][0] + _EPS >= cpus and free[n][1] + _EPS >= gpus]
            if not fits:
                unplaced.append(Unplaced(name, index, cpus, gpus))
                continue
            chosen = min(
                fits,
                key=lambda node: (
                    held[node].get(name, 0),
                    -sum(held[node].get(d, 0) for d in demand.near),
                    -sum(free[node]),
                    node,
                ),
            )
            free[chosen][0] -= cpus
            free[chosen][1] -= gpus
            held[chosen][name] = held[chosen].get(name, 0) + 1
            placed.append(ReplicaPlan(deployment=name, index=index, node=chosen, num_cpus=cpus, num_gpus=gpus))
    return placed, unplaced


def spread(
    deployments: list[DeploymentPlan],
    nodes: list[ClusterNodePlan],
    near: Mapping[str, frozenset[str]] | None = None,
) -> tuple[list[ReplicaPlan], list[Unplaced]]:
    """A plan's replicas without an SLO: GPU deployments first, then in plan order, each near
    its ``near`` neighbours where spreading allows; the replicas come back in plan order."""
    near = near or {}
    demands = [
        Demand(d.name, d.num_replicas, d.resources.num_cpus, d.resources.num_gpus, near.get(d.name, frozenset()))
        for d in sorted(deployments, key=lambda d: d.resources.num_gpus <= 0)  # stable: GPU deployments first
    ]
    placed, unplaced = place(demands, nodes)
    order = {d.name: i for i, d in enumerate(deployments)}
    placed.sort(key=lambda r: (order[r.deployment], r.index))
    return placed, unplaced
