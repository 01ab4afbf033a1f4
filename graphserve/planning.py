"""Building for an SLO: the profile (a file or a Profile), then the compiler's SLO pass
(:mod:`graphserve.compiler.slo`) on the plan.

``graphserve build --slo-p99-ms/--rate`` and ``gs.run``/``gs.serve`` of an app made with
``gs.graph(..., slo=gs.SLO(...))`` come here. Measuring a profile first (``build --requests``)
is the CLI's step: profiling runs the graph, a layer above this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError

if TYPE_CHECKING:
    from graphserve.compiler.profile import Profile
    from graphserve.plan import Plan, SLOPlan

PROFILE_BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # batch sizes measured for a planned (not user-set) batch size


def plan_for_slo(
    plan: Plan,
    slo: SLOPlan,
    *,
    profile: str | Profile | None = None,
    cluster: Any = None,
) -> Plan:
    """``plan`` with its tunables chosen for ``slo`` from ``profile`` (a path or a Profile)."""
    from graphserve.compiler.planner import parse_cluster
    from graphserve.compiler.profile import Profile
    from graphserve.compiler.slo import plan_for_slo as plan_pass

    if isinstance(profile, str):
        measured = Profile.load(profile)
    elif profile is not None:
        measured = profile
    else:
        raise GraphError(
            f"graph {plan.name!r} has an SLO but no profile: give one (gs.SLO(profile=...), --profile FILE), "
            "measure one with `graphserve profile`, or let `graphserve build --requests FILE` measure it"
        )
    parsed = cluster if cluster is None or not isinstance(cluster, (str, dict)) else parse_cluster(cluster)
    return plan_pass(plan, measured, slo, parsed if parsed is not None else plan.cluster)


def batch_sizes(plan: Plan) -> list[int]:
    """The batch sizes to profile when planning: powers of two to 32 and every planned maximum."""
    largest = max((b.max_batch_size for d in plan.deployments for b in d.batching), default=1)
    return sorted({*PROFILE_BATCH_SIZES, largest})


def plan_app_slo(app: Any, plan: Plan, cluster: Any) -> Plan:
    """An app's own ``gs.SLO`` applied to its freshly compiled plan (unchanged without one)."""
    slo = getattr(app, "slo", None)
    if slo is None or plan.slo is None:
        return plan
    return plan_for_slo(plan, plan.slo, profile=slo.profile, cluster=cluster)
