"""Correcting a profile from what a running server measured (``graphserve build --from-metrics``).

A server reports each node's mean call latency (``graphserve_node_latency_seconds``: from the
moment a replica takes the call to its result, batch forming included). The simulator
predicts the same node under the served plan at the observed rate; what it predicts beyond
the node's waits (its service time: batch or call run time) is compared with what the
server saw beyond those waits, and the node's whole cost curve is scaled by the ratio
(``Profile.with_costs_scaled``): a model that became twice as slow (a shared GPU, a larger
input, a busier machine) is planned at twice its profiled cost.

Only nodes with enough calls (``MIN_CALLS``) are corrected, only where the ratio leaves a
noise band of ``TOLERANCE`` around 1, and the factor is kept within ``[1/MAX_FACTOR,
MAX_FACTOR]``. The waits are the simulator's (the server's latency does not split them out),
so the correction is for service time, the part a profile measures.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphserve.plan import Plan

from .profile import Profile
from .simulate import Simulator

MIN_CALLS = 20
TOLERANCE = 0.1
MAX_FACTOR = 10.0
SIM_REQUESTS = 4000


def cost_factors(
    plan: Plan, profile: Profile, rate_rps: float, observed: Mapping[str, tuple[int, float]]
) -> dict[str, float]:
    """node -> observed service time / profiled service time, for the nodes worth correcting.

    ``observed``: node -> (calls, mean latency in seconds) as the server measured them while
    serving ``plan`` at about ``rate_rps``."""
    result = Simulator(plan, profile).run(rate=rate_rps, duration_s=max(1.0, SIM_REQUESTS / rate_rps), seed=0)
    factors: dict[str, float] = {}
    for node in result.nodes:
        calls, mean_s = observed.get(node.node, (0, 0.0))
        if calls < MIN_CALLS or node.latency.count == 0:
            continue
        wait = node.queue_wait.mean_s
        predicted = node.latency.mean_s - wait
        seen = mean_s - wait
        if predicted <= 1e-6 or seen <= 0:
            continue
        factor = min(MAX_FACTOR, max(1 / MAX_FACTOR, seen / predicted))
        if abs(factor - 1) >= TOLERANCE:
            factors[node.node] = round(factor, 3)
    return dict(sorted(factors.items()))


def corrected_profile(
    plan: Plan, profile: Profile, rate_rps: float, observed: Mapping[str, tuple[int, float]]
) -> tuple[Profile, dict[str, float]]:
    """``profile`` with each node's cost curve scaled by :func:`cost_factors`, and the factors."""
    factors = cost_factors(plan, profile, rate_rps, observed)
    return (profile.with_costs_scaled(factors) if factors else profile), factors
