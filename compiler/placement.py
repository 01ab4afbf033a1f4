"""Placement: which cluster node each replica runs on, for a plan made without an SLO.

The rule, for a cluster that names its nodes (``--cluster nodes=FILE`` or ``ray:auto``):
deployments in plan order, GPU deployments first (they are the scarce ones); each replica
goes to the node that fits it and holds the fewest replicas of its deployment so far (so a
deployment's replicas spread over nodes: losing one node never takes all of them), ties
to the node with most room left, then by name. A node with neither CPUs nor GPUs (a Ray head
started with ``--num-cpus=0``) takes no replicas. A node is never over-committed: a replica
that fits nowhere is returned as a problem naming it.

The SLO planner (``slo.py``) places its own plans; both write ``ReplicaPlan.node``, the one
field the runtime reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphserve.plan import ClusterNodePlan, DeploymentPlan, ReplicaPlan

_EPS = 1e-9


@dataclass
class Unplaced:
    """A replica no node had room for."""

    deployment: str
    index: int
    cpus: float
    gpus: float


def usable(nodes: list[ClusterNodePlan]) -> list[ClusterNodePlan]:
    """The nodes that may take replicas: those with some CPUs or GPUs."""
    return [n for n in nodes if n.cpus > _EPS or n.gpus > _EPS]


def spread(deployments: list[DeploymentPlan], nodes: list[ClusterNodePlan]) -> tuple[list[ReplicaPlan], list[Unplaced]]:
    """Replicas on ``nodes`` (see the module docstring), and those that fit nowhere."""
    candidates = usable(nodes)
    free = {n.name: [n.cpus, n.gpus] for n in candidates}
    held: dict[tuple[str, str], int] = {}
    placed: list[ReplicaPlan] = []
    unplaced: list[Unplaced] = []
    for dep in sorted(deployments, key=lambda d: d.resources.num_gpus <= 0):  # stable: GPU deployments first
        cpus, gpus = dep.resources.num_cpus, dep.resources.num_gpus
        for index in range(dep.num_replicas):
            fits = [n.name for n in candidates if free[n.name][0] + _EPS >= cpus and free[n.name][1] + _EPS >= gpus]
            if not fits:
                unplaced.append(Unplaced(dep.name, index, cpus, gpus))
                continue
            chosen = min(fits, key=lambda name: (held.get((name, dep.name), 0), -sum(free[name]), name))
            free[chosen][0] -= cpus
            free[chosen][1] -= gpus
            held[(chosen, dep.name)] = held.get((chosen, dep.name), 0) + 1
            placed.append(ReplicaPlan(deployment=dep.name, index=index, node=chosen, num_cpus=cpus, num_gpus=gpus))
    order = {d.name: i for i, d in enumerate(deployments)}
    placed.sort(key=lambda r: (order[r.deployment], r.index))
    return placed, unplaced
