"""Where each replica's actor runs on Ray: the plan's placement, made Ray scheduling options.

- A replica the plan put on a named cluster node (``ReplicaPlan.node`` naming one of
  ``plan.cluster.nodes``) is scheduled there with a *soft* ``NodeAffinitySchedulingStrategy``:
  Ray starts it on that node, and when the node is gone (it died, or was removed) Ray
  restarts the actor on another node that fits. The node is found by its Ray id, else by
  its address when exactly one live node has it; a planned node the live cluster lacks is
  GS201 naming the replica, before any actor starts.
- A deployment planned without named nodes (``node-0``) and with several replicas is
  scheduled ``SPREAD``: Ray puts its replicas on different nodes when they fit.
- One replica on no named node: Ray's default.

GPUs and CPUs per replica are the plan's (``ReplicaPlan.num_gpus``/``num_cpus``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphserve.errors import Diagnostic, GraphValidationError
from graphserve.plan import ClusterNodePlan, Plan, ReplicaPlan

INFEASIBLE = "GS201"


def live_node_id(planned: ClusterNodePlan, alive: Sequence[Mapping[str, Any]]) -> str | None:
    """The Ray node id of ``planned`` among the ``alive`` entries of ``ray.nodes()``."""
    if planned.id is not None:
        return planned.id if any(n.get("NodeID") == planned.id for n in alive) else None
    if planned.address is not None:
        matches = [str(n["NodeID"]) for n in alive if n.get("NodeManagerAddress") == planned.address]
        return matches[0] if len(matches) == 1 else None
    return None


class Placement:
    """Ray options per replica, from the plan and the live cluster."""

    def __init__(self, plan: Plan, alive: Sequence[Mapping[str, Any]]) -> None:
        self.plan = plan
        self._replicas = {(r.deployment, r.index): r for r in plan.replicas}
        named = {n.name: n for n in plan.cluster.nodes} if plan.cluster is not None else {}
        self._node_ids: dict[str, str] = {}
        problems: list[Diagnostic] = []
        for replica in plan.replicas:
            planned = named.get(replica.node)
            if planned is None or replica.node in self._node_ids:
                continue
            node_id = live_node_id(planned, alive)
            if node_id is None:
                where = f"id {planned.id}" if planned.id else f"address {planned.address}"
                problems.append(
                    Diagnostic(
                        INFEASIBLE,
                        f"replica {replica.index} of {replica.deployment} is planned on node {planned.name} ({where}), "
                        f"which the Ray cluster does not have (alive: {len(alive)} nodes)",
                        replica.deployment,
                        None,
                        "rebuild the plan against this cluster (graphserve build --cluster ray:auto)",
                    )
                )
                continue
            self._node_ids[replica.node] = node_id
        if problems:
            raise GraphValidationError(problems, graph=plan.name)

    def replica(self, deployment: str, index: int) -> ReplicaPlan | None:
        return self._replicas.get((deployment, index))

    def options(self, deployment: str, index: int) -> dict[str, Any]:
        """``num_cpus``, ``num_gpus`` and a ``scheduling_strategy`` for one replica's actor."""
        dep = self.plan.deployment(deployment)
        replica = self.replica(deployment, index)
        options: dict[str, Any] = {
            "num_cpus": replica.num_cpus if replica is not None else dep.resources.num_cpus,
            "num_gpus": replica.num_gpus if replica is not None else dep.resources.num_gpus,
        }
        node_id = self._node_ids.get(replica.node) if replica is not None else None
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
        elif dep.num_replicas > 1:
            options["scheduling_strategy"] = "SPREAD"
        return options

    def node_id(self, deployment: str, index: int) -> str | None:
        """The Ray node the plan put this replica on (None: Ray chooses)."""
        replica = self.replica(deployment, index)
        return self._node_ids.get(replica.node) if replica is not None else None
