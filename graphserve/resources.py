"""Does a graph fit a cluster? The GS201 rule, in one place.

Plain functions on plan data (``graphserve.plan``) and ``graphserve.errors``, so both
sides may import it: the planner checks a plan against the cluster it plans for (this
machine, or ``--cluster``), the Ray backend against the Ray cluster's resources before
any actor starts.

The rule, for CPUs and for GPUs: the replicas together must not ask for more than the
cluster has, and (where the cluster's nodes are known) one replica must fit on one
node. Every shortfall is reported at once, each naming its deployment; a deployment
that asks for none of a resource is never reported for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from graphserve.errors import Diagnostic, GraphValidationError, Location
from graphserve.plan import DeploymentPlan

INFEASIBLE = "GS201"  # the cluster cannot place the replicas
_EPSILON = 1e-9  # fractional GPUs add up with rounding errors


@dataclass(frozen=True)
class Capacity:
    """What a cluster offers, for the messages: its name and the remedy to suggest."""

    cpus: float
    gpus: float
    name: str  # "the cluster (detected)", "the Ray cluster"
    remedy: str  # how to add a resource, with {resource} (cpus, gpus) in it
    largest_node: Mapping[str, float] | None = None  # the most of each resource one node has; None: unknown

    def total(self, resource: str) -> float:
        return self.cpus if resource == "cpus" else self.gpus


def shortfalls(
    deployments: Sequence[DeploymentPlan],
    capacity: Capacity,
    locations: Mapping[str, Location | None] | None = None,
) -> list[Diagnostic]:
    """One GS201 diagnostic per deployment and resource the cluster cannot hold."""
    problems: list[Diagnostic] = []
    for resource in ("cpus", "gpus"):
        field = "num_" + resource
        total = capacity.total(resource)
        each = {d.name: float(getattr(d.resources, field)) for d in deployments}
        wanted = {d.name: d.num_replicas * each[d.name] for d in deployments}
        asked = sum(wanted.values())
        biggest = capacity.largest_node.get(resource, total) if capacity.largest_node is not None else None
        for dep in deployments:
            if each[dep.name] <= 0:
                continue
            where = (locations or {}).get(dep.name)
            if asked > total + _EPSILON:
                problems.append(
                    Diagnostic(
                        INFEASIBLE,
                        f"{dep.name} needs {wanted[dep.name]:g} {resource} ({dep.num_replicas} replica(s) x "
                        f"{each[dep.name]:g}); the graph asks {asked:g} {resource} in all but {capacity.name} "
                        f"has {total:g}: short by {asked - total:g}",
                        dep.name,
                        where,
                        f"lower num_replicas or {field}, or {capacity.remedy.format(resource=resource)}",
                    )
                )
            elif biggest is not None and each[dep.name] > biggest + _EPSILON:
                problems.append(
                    Diagnostic(
                        INFEASIBLE,
                        f"one replica of {dep.name} needs {each[dep.name]:g} {resource} but no node of "
                        f"{capacity.name} has more than {biggest:g}",
                        dep.name,
                        where,
                        f"lower {field} per replica, or add a node with {each[dep.name]:g} {resource}",
                    )
                )
    return problems


def check_fits(deployments: Sequence[DeploymentPlan], capacity: Capacity, graph: str) -> None:
    """Raise GraphValidationError listing every GS201 shortfall of ``graph`` on ``capacity``."""
    problems = shortfalls(deployments, capacity)
    if problems:
        raise GraphValidationError(problems, graph=graph)
