"""Does a Plan fit a Ray cluster? Checked before any actor starts.

The same rule as the planner's GS201 check, against the resources Ray reports: the
CPUs and GPUs all replicas ask for must not exceed the cluster's totals, and every
single replica must fit on at least one node. Every shortfall is reported at once, each
naming its deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphserve.errors import Diagnostic, GraphValidationError
from graphserve.plan import Plan

INFEASIBLE = "GS201"  # the planner's code for "the cluster cannot hold this graph"
_RESOURCES = (("cpus", "CPU", "num_cpus"), ("gpus", "GPU", "num_gpus"))


def check_fits(plan: Plan, totals: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> None:
    """Raise GraphValidationError (GS201) naming every deployment the cluster cannot hold.

    ``totals`` is ``ray.cluster_resources()``; ``nodes`` the resources of each live node.
    """
    problems: list[Diagnostic] = []
    for word, key, field in _RESOURCES:
        have = float(totals.get(key, 0.0))
        biggest = max((float(n.get(key, 0.0)) for n in nodes), default=have)
        wanted = {d.name: d.num_replicas * getattr(d.resources, field) for d in plan.deployments}
        asked = sum(wanted.values())
        for dep in plan.deployments:
            each = getattr(dep.resources, field)
            if each <= 0:
                continue
            if asked > have + 1e-9:
                problems.append(
                    Diagnostic(
                        INFEASIBLE,
                        f"{dep.name} needs {wanted[dep.name]:g} {word} ({dep.num_replicas} replica(s) x {each:g}); "
                        f"the graph asks {asked:g} {word} in all but the Ray cluster has {have:g}: "
                        f"short by {asked - have:g}",
                        dep.name,
                        None,
                        f"lower num_replicas or {field}, or add {word} to the Ray cluster",
                    )
                )
            elif each > biggest + 1e-9:
                problems.append(
                    Diagnostic(
                        INFEASIBLE,
                        f"one replica of {dep.name} needs {each:g} {word} but no node of the Ray cluster has "
                        f"more than {biggest:g}",
                        dep.name,
                        None,
                        f"lower {field} per replica, or add a node with {each:g} {word}",
                    )
                )
    if problems:
        raise GraphValidationError(problems, graph=plan.name)
