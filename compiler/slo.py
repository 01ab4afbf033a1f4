"""The SLO planner: one latency objective (p99 at a rate) -> every deployment's batch size,
batch wait, replicas, ``max_ongoing_requests``, resources and placement.

    planned = plan_for_slo(plan, profile, SLOPlan(p99_s=0.05, rate_rps=400), cluster)

A pure compiler pass over a Plan and a Profile (no runtime, no clock, no threads). The
search is InferLine's, with Nexus's budget split to seed it:

1. **Budgets** (Nexus): for the search, the objective times ``headroom`` is split across the
   deployment calls along each path of the graph in proportion to their single-item latency;
   a node's budget is its share on the longest path through it.
2. **Seed**: a batched method gets the largest batch size whose p99 batch time fits twice
   into three quarters of its budget (a batch may wait for the one running before it) and a
   wait of a quarter of its budget; ``max_ongoing_requests`` is two batches per batch slot
   (never below the batch size); replicas are sized for 70% utilization at the node's rate
   (the SLO's rate x its visit rate).
3. **Feasible**: while the simulator (``compiler/simulate.py``, seeded) predicts a p99 over
   the target, rejected or timed-out requests, or a batched method is loaded over
   ``MAX_LOAD`` of what its full batches serve, the bottleneck (the node furthest over its
   budget, in seconds; the most loaded one when only the load is over) gets larger batches
   or one more replica, as long as the cluster can place it.
4. **Headroom, then the p99**: the target is ``p99 x headroom`` first; when nothing reaches
   it, the search runs again for the p99 itself, and a plan meeting that is returned with the
   warning ``GS204`` (``prediction.within_headroom`` false), as InferLine judges candidates
   against the objective itself: a feasible SLO is never refused, the missing margin is said.
5. **Cheaper**: repeatedly remove the replica whose removal saves the most CPU+GPU units
   (with the same or larger batches, or shorter waits) while the simulator still predicts
   the target held.
6. **Written budgets**: the SLO's p99 split along the critical path in proportion to each
   node's predicted p99 under the chosen values (its latency contribution): they add up to
   the p99 along that path. The live page colours nodes by them (``NodePlan.latency_budget_s``)
   and the adaptive batcher keeps to them.

Values the user wrote (``DeploymentPlan.user_set``) are constraints, never changed. Every
value is recorded in ``DeploymentPlan.choices`` as ``user``, ``planned`` or ``default`` with
a reason; the plan carries the prediction end to end and per node. When no plan meets the
p99, even without headroom, the pass raises a ``GS203`` diagnostic naming the bottleneck
node, the headroom tried, the best p99 found at the rate and the highest rate at which a
plan meets the p99 (by bisection, planning at each rate).

Resources: a replica the user gave no resources to is planned with the CPU it uses at the
SLO's rate (profiled CPU share x busy time, 0.1 to 1 CPU in steps of 0.1); GPUs only where
the user asked for them.
Placement (``placement.py``, the rule plans without an SLO follow too): replicas in graph
order, each on the node that fits it and holds the fewest replicas of its deployment (a
deployment's replicas spread over the nodes, so losing one never takes them all), then
the most replicas of its neighbours in the graph (a chain stays together where spreading
allows, saving transfers), then the most room; a node is never over-committed; a node
without CPUs or GPUs takes none.

Deterministic: the same plan, profile, SLO and cluster give a byte-identical plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NoReturn

from graphserve.errors import Diagnostic, GraphValidationError, Location
from graphserve.plan import (
    ChoicePlan,
    ClusterNodePlan,
    ClusterPlan,
    DeploymentPlan,
    DiagnosticPlan,
    LatencyPrediction,
    NodePlan,
    Plan,
    PredictionPlan,
    ReplicaPlan,
    SLOPlan,
)

from . import fusion
from .codes import Code
from .placement import Demand, place
from .profile import NodeProfile, Profile, batch_service
from .simulate import SimulationResult, Simulator

SEED_UTILIZATION = 0.7
# the most load a batched method may get in a plan, as a share of what its replicas serve in full
# batches: a batcher near that keeps up in the simulator, but a few percent slower in real life
# (timers, a busy machine) and its queue grows without end
MAX_LOAD = 0.8
MAX_REPLICAS = 64  # per deployment
MAX_STEPS = 256  # simulator runs per search phase
SIM_REQUESTS = 4000  # simulated requests per candidate
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
_EPS = 1e-9


@dataclass(frozen=True)
class _Knobs:
    """The tunables of one deployment the search varies."""

    replicas: int
    ongoing: int
    cpus: float
    gpus: float
    batch: tuple[tuple[str, int, float], ...] = ()  # (method, max_batch_size, batch_wait_timeout_s)

    @property
    def units(self) -> float:
        return self.cpus + self.gpus


@dataclass
class _Eval:
    result: SimulationResult
    clean: bool  # every request completed: none rejected or timed out
    p99_s: float
    load: dict[str, float]  # deployment -> its batched methods' rate over what full batches serve (the most)

    @property
    def busiest(self) -> float:
        return max(self.load.values(), default=0.0)


@dataclass
class _Search:
    plan: Plan
    profile: Profile
    slo: SLOPlan
    cluster: ClusterPlan | None
    sim_requests: int
    calls: dict[str, NodePlan] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    evaluations: dict[tuple[tuple[str, _Knobs], ...], _Eval] = field(default_factory=dict)
    simulator: Simulator = field(init=False)
    best_p99_s: float = math.inf
    target_s: float = 0.0  # the predicted p99 a candidate must reach: p99 x headroom, or p99 without it
    relaxed: bool = False  # no plan met p99 x headroom: the target is the p99 itself

    def meets(self, evaluation: _Eval) -> bool:
        return evaluation.clean and evaluation.p99_s <= self.target_s and evaluation.busiest <= MAX_LOAD


def plan_for_slo(
    plan: Plan,
    profile: Profile,
    slo: SLOPlan,
    cluster: ClusterPlan | None = None,
    sim_requests: int = SIM_REQUESTS,
) -> Plan:
    """A copy of ``plan`` with the tunables chosen for ``slo`` (see the module docstring).

    Raises ProfileError when the profile is of another graph, GraphValidationError (GS203)
    when the SLO cannot be met, (GS201) when the user's fixed values cannot be placed."""
    profile.check_fits(plan)
    search = _new_search(plan, profile, slo, cluster, sim_requests)
    seed = {d.name: _seed(search, d) for d in plan.deployments}
    _check_placeable(search, seed)
    found = _make_feasible(search, seed)
    if not found[2] and slo.headroom < 1:  # nothing meets p99 x headroom: does anything meet the p99 itself?
        search.target_s, search.relaxed = slo.p99_s, True
        found = _make_feasible(search, seed)
    if not found[2]:
        _infeasible(search, found[0], found[1])
    knobs, last = _cut_cost(search, found[0], found[1])
    warnings = [_no_headroom_warning(search, last)] if search.relaxed else []
    return _write(search, knobs, last, warnings)


def _new_search(plan: Plan, profile: Profile, slo: SLOPlan, cluster: ClusterPlan | None, sim_requests: int) -> _Search:
    search = _Search(plan, profile, slo, cluster, sim_requests, target_s=slo.p99_s * slo.headroom)
    search.simulator = Simulator(plan, profile)
    search.calls = {n.id: n for n in plan.nodes if n.kind == "call" and n.deployment}
    search.budgets = _budgets(search, {c: _single_cost(profile.node(c)) for c in search.calls}, search.target_s)
    return search


# -- budgets ------------------------------------------------------------------------------------
def _single_cost(measured: NodeProfile) -> float:
    if measured.batches:
        return batch_service(measured.batches, 1, 0.5)
    return measured.latency.p50_s if measured.latency is not None else 0.0


def _budgets(search: _Search, costs: dict[str, float], total_s: float) -> dict[str, float]:
    """Each call node's share of ``total_s``, in proportion to its cost on the longest path
    (by those costs) through it: along the critical path the shares add up to ``total_s``.

    The search's budgets split ``p99 x headroom`` by single-item latency (before anything is
    chosen); the plan's written budgets split the SLO's p99 by each node's predicted p99
    under the chosen values (its latency contribution: batch wait and queueing included)."""
    plan, calls = search.plan, search.calls
    nodes = {n.id: n for n in plan.nodes}
    cost = {c: max(costs.get(c, 0.0), 1e-6) for c in calls}

    def upstream(node_id: str, seen: set[str]) -> set[str]:
        out: set[str] = set()
        for i in nodes[node_id].inputs:
            if i in seen:
                continue
            seen.add(i)
            out |= {i} if i in calls else upstream(i, seen)
        return out

    ups = {c: upstream(c, set()) for c in calls}
    downs: dict[str, set[str]] = {c: set() for c in calls}
    for c, before in ups.items():
        for u in before:
            downs[u].add(c)
    order = [n.id for n in plan.nodes if n.id in calls]  # the plan's nodes are in topological order
    to: dict[str, float] = {}
    for c in order:
        to[c] = cost[c] + max((to[u] for u in ups[c]), default=0.0)
    frm: dict[str, float] = {}
    for c in reversed(order):
        frm[c] = cost[c] + max((frm[d] for d in downs[c]), default=0.0)
    return {c: total_s * cost[c] / (to[c] + frm[c] - cost[c]) for c in order}


# -- the seed -----------------------------------------------------------------------------------
def _nodes_of(search: _Search, dep: str) -> list[NodePlan]:
    return [n for n in search.calls.values() if n.deployment == dep]


def _rate_of(search: _Search, dep: str) -> float:
    return search.slo.rate_rps * sum(search.profile.node(n.id).visit_rate for n in _nodes_of(search, dep))


def _cpus_for(share: float) -> float:
    return min(1.0, max(0.1, math.ceil(round(share * 10, 6)) / 10))


def _seed(search: _Search, dep: DeploymentPlan) -> _Knobs:
    user = set(dep.user_set)
    nodes = _nodes_of(search, dep.name)
    batch: list[tuple[str, int, float]] = []
    per_replica = math.inf  # requests/s one replica serves at full load
    for b in dep.batching:
        node = next((n for n in nodes if (n.method or "__call__") == b.method), None)
        measured = search.profile.node(node.id) if node is not None else None
        if node is None or measured is None or not measured.batches:
            batch.append((b.method, b.max_batch_size, b.batch_wait_timeout_s))
            continue
        budget = search.budgets[node.id]
        size = b.max_batch_size
        if f"{b.method}.max_batch_size" not in user:
            largest = max(p.batch_size for p in measured.batches)
            fits = [s for s in _sizes(largest) if 2 * batch_service(measured.batches, s, 0.99) <= 0.75 * budget]
            size = max(fits, default=1)
        wait = b.batch_wait_timeout_s
        if f"{b.method}.batch_wait_timeout_s" not in user:
            wait = round(0.25 * budget, 4)
        batch.append((b.method, size, wait))
        per_replica = min(per_replica, b.max_concurrent_batches * size / batch_service(measured.batches, size, 0.5))
    ongoing = dep.max_ongoing_requests
    if batch and "max_ongoing_requests" not in user:
        ongoing = max(2 * size * b.max_concurrent_batches for (_, size, _), b in zip(batch, dep.batching, strict=True))
    for n in nodes:
        measured = search.profile.node(n.id)
        if measured.batches or measured.latency is None:
            continue
        t = max(measured.latency.mean_s, 1e-6)
        per_replica = min(per_replica, (1 if measured.cpu_share >= 0.5 else ongoing) / t)
    replicas = dep.num_replicas
    if "num_replicas" not in user:
        rate = _rate_of(search, dep.name)
        replicas = 1 if per_replica == math.inf else math.ceil(rate / (per_replica * SEED_UTILIZATION) - _EPS)
        replicas = min(MAX_REPLICAS, max(1, replicas))
    cpus, gpus = dep.resources.num_cpus, dep.resources.num_gpus
    if "num_cpus" not in user and "num_gpus" not in user:
        # the CPU one replica uses at the SLO's rate: CPU share x its busy time per second
        used = 0.0
        for n in nodes:
            measured = search.profile.node(n.id)
            t = measured.latency.mean_s if measured.latency is not None else _single_cost(measured)
            used += measured.cpu_share * t * search.slo.rate_rps * measured.visit_rate
        cpus = _cpus_for(used / replicas)
    return _Knobs(replicas=replicas, ongoing=ongoing, cpus=cpus, gpus=gpus, batch=tuple(batch))


def _sizes(largest: int) -> list[int]:
    return sorted({s for s in BATCH_SIZES if s <= largest} | {largest})


# -- evaluating a candidate ---------------------------------------------------------------------
def _key(knobs: dict[str, _Knobs]) -> tuple[tuple[str, _Knobs], ...]:
    return tuple(sorted(knobs.items()))


def _evaluate(search: _Search, knobs: dict[str, _Knobs], rate: float | None = None) -> _Eval:
    key = _key(knobs)
    if rate is None and key in search.evaluations:
        return search.evaluations[key]
    sim = search.simulator
    for name, k in sorted(knobs.items()):
        sim = sim.with_deployment(name, num_replicas=k.replicas, max_ongoing_requests=k.ongoing)
        for method, size, wait in k.batch:
            sim = sim.with_deployment(name, method=method, max_batch_size=size, batch_wait_timeout_s=wait)
    at = rate if rate is not None else search.slo.rate_rps
    result = sim.run(rate=at, duration_s=max(1.0, search.sim_requests / at), seed=0)
    p99 = result.latency.p99_s
    clean = result.rejected == 0 and result.timed_out == 0 and result.completed == result.requests
    evaluation = _Eval(result, clean, p99, _load(search, knobs))
    if rate is None:
        search.evaluations[key] = evaluation
        if clean:
            search.best_p99_s = min(search.best_p99_s, p99)
    return evaluation


def _load(search: _Search, knobs: dict[str, _Knobs]) -> dict[str, float]:
    """deployment -> the largest share, over its batched methods, of the calls per second its
    replicas serve in full batches (median batch time) that the SLO's rate brings."""
    out: dict[str, float] = {}
    for name, k in sorted(knobs.items()):
        dep = search.plan.deployment(name)
        concurrent = {b.method: b.max_concurrent_batches for b in dep.batching}
        for method, size, _ in k.batch:
            node = next((n for n in _nodes_of(search, name) if (n.method or "__call__") == method), None)
            measured = search.profile.node(node.id) if node is not None else None
            if node is None or measured is None or not measured.batches:
                continue
            served = k.replicas * concurrent[method] * size / max(batch_service(measured.batches, size, 0.5), 1e-9)
            rate = search.slo.rate_rps * measured.visit_rate
            out[name] = max(out.get(name, 0.0), rate / served)
    return out


def _bottlenecks(search: _Search, evaluation: _Eval) -> list[str]:
    """Call nodes, the most pressing first: by seconds over their budget, or, when the latency
    is met, those of deployments loaded over MAX_LOAD (the most loaded first)."""
    order = [n for _, n in _over_budget(search, evaluation.result)]
    if evaluation.clean and evaluation.p99_s <= search.target_s:
        busy = {n: evaluation.load.get(search.calls[n].deployment or "", 0.0) for n in order}
        order = sorted((n for n in order if busy[n] > MAX_LOAD), key=lambda n: (-busy[n], n))
    return order


def _over_budget(search: _Search, result: SimulationResult) -> list[tuple[float, str]]:
    """(seconds over its budget, node) for every call node, worst first. Seconds, not a ratio:
    a node that costs nothing (a join) has a budget near zero, and any queueing there would
    otherwise rank it first."""
    over = []
    for node in result.nodes:
        budget = search.budgets.get(node.node)
        if budget is not None:
            over.append((node.latency.p99_s - budget, node.node))
    return sorted(over, key=lambda r: (-r[0], r[1]))


# -- the search ---------------------------------------------------------------------------------
def _bigger_batches(search: _Search, name: str, k: _Knobs) -> _Knobs | None:
    """``k`` with every planned batch size doubled (within what was profiled), or None."""
    dep = search.plan.deployment(name)
    batch, grew = [], False
    for method, size, wait in k.batch:
        node = next((n for n in _nodes_of(search, name) if (n.method or "__call__") == method), None)
        measured = search.profile.node(node.id) if node is not None else None
        largest = max((p.batch_size for p in measured.batches), default=0) if measured is not None else 0
        if f"{method}.max_batch_size" in dep.user_set or size * 2 > largest:
            batch.append((method, size, wait))
            continue
        batch.append((method, size * 2, wait))
        grew = True
    if not grew:
        return None
    ongoing = k.ongoing
    if "max_ongoing_requests" not in dep.user_set:
        mcb = {b.method: b.max_concurrent_batches for b in dep.batching}
        ongoing = max(2 * size * mcb[method] for method, size, _ in batch)
    return replace(k, batch=tuple(batch), ongoing=ongoing)


def _shorter_waits(search: _Search, name: str, k: _Knobs) -> _Knobs | None:
    """``k`` with every planned batch wait halved (a larger batch fills sooner), or None."""
    dep = search.plan.deployment(name)
    batch = tuple(
        (method, size, wait if f"{method}.batch_wait_timeout_s" in dep.user_set else round(wait / 2, 4))
        for method, size, wait in k.batch
    )
    return replace(k, batch=batch) if batch != k.batch else None


def _make_feasible(search: _Search, knobs: dict[str, _Knobs]) -> tuple[dict[str, _Knobs], _Eval, bool]:
    """Grow the bottleneck until the simulator predicts ``search.target_s`` held: larger batches
    first (free), then one more replica. Returns the values, their evaluation and whether they
    meet the target (False: the last values tried, when nothing helps any more)."""
    current = _evaluate(search, knobs)
    saturated: set[str] = set()
    for _ in range(MAX_STEPS):
        if search.meets(current):
            return knobs, current, True
        moves: list[tuple[str, str, dict[str, _Knobs]]] = []
        for node_id in _bottlenecks(search, current):
            dep = search.calls[node_id].deployment or ""
            if dep in saturated:
                continue
            k = knobs[dep]
            bigger = _bigger_batches(search, dep, k)
            if bigger is not None:
                moves.append((dep, node_id, {**knobs, dep: bigger}))
            if "num_replicas" not in search.plan.deployment(dep).user_set and k.replicas < MAX_REPLICAS:
                more = {**knobs, dep: replace(k, replicas=k.replicas + 1)}
                if _place(search, more) is not None:
                    moves.append((dep, node_id, more))
            if moves:
                break
            saturated.add(dep)
        if not moves:
            return knobs, current, False
        improved = False
        for _dep, node_id, candidate in moves:
            evaluation = _evaluate(search, candidate)
            before = {n: r for r, n in _over_budget(search, current.result)}[node_id]
            after = {n: r for r, n in _over_budget(search, evaluation.result)}[node_id]
            latency_met = current.clean and current.p99_s <= search.target_s  # then only the load is over
            dep_busy = latency_met and evaluation.load.get(_dep, 0.0) < current.load.get(_dep, 0.0) - _EPS
            if after < before - _EPS or evaluation.p99_s < current.p99_s - _EPS or dep_busy:
                knobs, current, improved = candidate, evaluation, True
                break
        if not improved:
            saturated.add(moves[0][0])  # neither helped (e.g. CPU-bound on a shared core)
    return knobs, current, False


def _cut_cost(search: _Search, knobs: dict[str, _Knobs], current: _Eval) -> tuple[dict[str, _Knobs], _Eval]:
    """Remove replicas (with the same or larger batches) while the target holds, most units saved first."""
    for _ in range(MAX_STEPS):
        best: tuple[float, float, str, dict[str, _Knobs], _Eval] | None = None
        for name in sorted(knobs):
            k = knobs[name]
            if k.replicas <= 1 or "num_replicas" in search.plan.deployment(name).user_set:
                continue
            options = [replace(k, replicas=k.replicas - 1)]
            while (bigger := _bigger_batches(search, name, options[-1])) is not None:
                options.append(bigger)  # the remaining replicas may serve the load in larger batches
            options += [s for o in options if (s := _shorter_waits(search, name, o)) is not None]
            for option in options:
                candidate = {**knobs, name: option}
                evaluation = _evaluate(search, candidate)
                if not search.meets(evaluation):
                    continue
                rank = (-k.units, evaluation.p99_s, name)
                if best is None or rank < best[:3]:
                    best = (*rank, candidate, evaluation)
                break
        if best is None:
            break
        knobs, current = best[3], best[4]
    return knobs, current


def _highest_rate(search: _Search, knobs: dict[str, _Knobs]) -> float:
    """The highest rate (to 1% of the SLO's) at which a plan meets the p99 itself (no headroom),
    by bisection: at each rate the values that failed, else a search of its own (0 if none)."""
    slo = search.slo
    lo, hi = 0.0, slo.rate_rps
    for _ in range(7):
        mid = (lo + hi) / 2
        ok = search.meets(_evaluate(search, knobs, rate=mid))
        if not ok:
            at = _new_search(search.plan, search.profile, slo.model_copy(update={"rate_rps": mid}), search.cluster,
                             search.sim_requests)  # fmt: skip
            at.target_s = slo.p99_s
            ok = _make_feasible(at, {d.name: _seed(at, d) for d in search.plan.deployments})[2]
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def _infeasible(search: _Search, knobs: dict[str, _Knobs], current: _Eval) -> NoReturn:
    """GS203: no plan meets the p99 itself. Names the bottleneck (the node furthest over its
    budget in the last values tried, or a node that alone takes longer than the p99), the
    best p99 found at the rate and the highest rate at which a plan meets the p99."""
    slo = search.slo
    worst = _over_budget(search, current.result)
    node_id = worst[0][1] if worst else next(iter(search.calls), "")
    alone = sorted((-_single_cost(search.profile.node(c)), c) for c in search.calls)
    too_slow = bool(alone) and -alone[0][0] >= slo.p99_s
    if too_slow:  # a node that alone takes longer than the whole p99 is the bottleneck, whatever the queues say
        node_id = alone[0][1]
    node = search.calls.get(node_id)
    dep = node.deployment if node is not None else None
    node_result = next((n for n in current.result.nodes if n.node == node_id), None)
    if too_slow:
        what = f"one call alone takes {_ms(-alone[0][0])}"
    elif node_result is not None and dep is not None:
        batch = "".join(f", batch {size}" for _, size, _ in knobs[dep].batch)
        what = (
            f"p99 {_ms(node_result.latency.p99_s)} with {knobs[dep].replicas} replica(s){batch}, "
            f"its share of the p99 being {_ms(search.budgets.get(node_id, 0.0))}"
        )
    else:
        what = "over its budget"
    best = (
        f"the best p99 found at {slo.rate_rps:g} req/s is {_ms(search.best_p99_s)}"
        if search.best_p99_s < math.inf
        else f"no plan found serves {slo.rate_rps:g} req/s without rejecting requests"
    )
    rate = 0.0 if too_slow else _highest_rate(search, knobs)
    highest = (
        f"the highest rate a plan meets p99 {_ms(slo.p99_s)} at is {rate:.0f} req/s"
        if rate > 0
        else f"no rate meets p99 {_ms(slo.p99_s)}"
    )
    cluster = search.cluster
    on = f" on {cluster.cpus:g} CPUs and {cluster.gpus:g} GPUs" if cluster is not None else ""
    headroom = (
        f" (the planner aims for p99 x headroom {slo.headroom:g} = {_ms(slo.p99_s * slo.headroom)}; "
        f"no plan meets even the full {_ms(slo.p99_s)})"
        if slo.headroom < 1
        else ""
    )
    message = (
        f"the SLO p99 {_ms(slo.p99_s)} at {slo.rate_rps:g} req/s cannot be met{on}{headroom}: "
        f"bottleneck {node_id} ({what}); {best}; {highest}"
    )
    hint = "lower the rate, relax the p99, give a bigger cluster, or make the bottleneck faster"
    location = _location(node.location if node is not None else None)
    raise GraphValidationError(
        [Diagnostic(Code.SLO_INFEASIBLE, message, node_id, location, hint)], graph=search.plan.name
    )


def _no_headroom_warning(search: _Search, final: _Eval) -> DiagnosticPlan:
    """GS204: the plan meets the p99 only without the planner's headroom."""
    slo = search.slo
    message = (
        f"the SLO p99 {_ms(slo.p99_s)} at {slo.rate_rps:g} req/s is met only without the planner's headroom: "
        f"no plan found reaches p99 x headroom {slo.headroom:g} = {_ms(slo.p99_s * slo.headroom)} (the best "
        f"predicted p99 is {_ms(search.best_p99_s)}); planned for the full p99 instead (predicted "
        f"{_ms(final.p99_s)}), so a measured p99 may exceed the SLO by the simulator's error"
    )
    hint = (
        "lower the rate or relax the p99 for a margin; gs.SLO(headroom=1) plans for the full p99 without this warning"
    )
    return DiagnosticPlan(code=Code.SLO_NO_HEADROOM, message=message, hint=hint, severity="warning")


def _location(text: str | None) -> Location | None:
    if not text:
        return None
    file, _, line = text.rpartition(":")
    return Location(file, int(line)) if line.isdigit() else None


# -- placement ----------------------------------------------------------------------------------
def _cluster_nodes(cluster: ClusterPlan | None) -> list[ClusterNodePlan] | None:
    if cluster is None:
        return None
    return list(cluster.nodes) or [ClusterNodePlan(name="node-0", cpus=cluster.cpus, gpus=cluster.gpus)]


def _neighbours(search: _Search, dep: str) -> set[str]:
    nodes = {n.id: n for n in search.plan.nodes}
    mine = {n.id for n in _nodes_of(search, dep)}
    out: set[str] = set()
    for n in search.calls.values():
        linked = set(n.inputs) | set(n.consumers)
        # through fused nodes: one hop of field reads / glue
        for i in list(linked):
            if i in nodes and nodes[i].fused:
                linked |= set(nodes[i].inputs) | set(nodes[i].consumers)
        if n.id in mine:
            out |= {search.calls[i].deployment or "" for i in linked if i in search.calls}
        elif linked & mine:
            out.add(n.deployment or "")
    out.discard(dep)
    return out


def _place(search: _Search, knobs: dict[str, _Knobs]) -> list[ReplicaPlan] | None:
    """Replicas on cluster nodes (``placement.py``: spread, then near their neighbours), or
    None when they do not fit."""
    nodes = _cluster_nodes(search.cluster)
    order = list(dict.fromkeys(n.deployment or "" for n in search.calls.values()))
    order += sorted(set(knobs) - set(order))
    if nodes is None:
        return [
            ReplicaPlan(deployment=dep, index=i, node="node-0", num_cpus=knobs[dep].cpus, num_gpus=knobs[dep].gpus)
            for dep in order
            for i in range(knobs[dep].replicas)
        ]
    demands = [
        Demand(dep, knobs[dep].replicas, knobs[dep].cpus, knobs[dep].gpus, frozenset(_neighbours(search, dep)))
        for dep in order
    ]
    replicas, unplaced = place(demands, nodes)
    return None if unplaced else replicas


def _check_placeable(search: _Search, knobs: dict[str, _Knobs]) -> None:
    """The user's fixed replicas and resources must fit even at one replica for the rest."""
    floor = {
        name: k if "num_replicas" in search.plan.deployment(name).user_set else replace(k, replicas=1)
        for name, k in knobs.items()
    }
    if _place(search, floor) is not None:
        return
    cluster = search.cluster
    assert cluster is not None
    cpus = sum(k.replicas * k.cpus for k in floor.values())
    gpus = sum(k.replicas * k.gpus for k in floor.values())
    message = (
        f"even the smallest plan (the replicas you fixed, one of every other deployment) needs {cpus:g} CPUs "
        f"and {gpus:g} GPUs, which the cluster ({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs in "
        f"{len(_cluster_nodes(cluster) or [])} node(s)) cannot place"
    )
    raise GraphValidationError(
        [Diagnostic(Code.INFEASIBLE, message, None, None, "plan for a bigger cluster")], graph=search.plan.name
    )


# -- writing the plan ---------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def _choices(dep: DeploymentPlan, k: _Knobs, why: str) -> Iterator[ChoicePlan]:
    user = set(dep.user_set)

    def choice(name: str, value: object, planned: bool = True) -> ChoicePlan:
        if name in user:
            return ChoicePlan(field=name, value=value, source="user", reason="set by the user: kept as a constraint")
        return ChoicePlan(
            field=name, value=value, source="planned" if planned else "default", reason=why if planned else "default"
        )

    yield choice("num_replicas", k.replicas)
    yield choice("max_ongoing_requests", k.ongoing, planned=bool(k.batch))
    yield choice("num_cpus", k.cpus)
    yield choice("num_gpus", k.gpus, planned=False)
    for method, size, wait in k.batch:
        yield choice(f"{method}.max_batch_size", size)
        yield choice(f"{method}.batch_wait_timeout_s", wait)


def _write(search: _Search, knobs: dict[str, _Knobs], final: _Eval, warnings: list[DiagnosticPlan]) -> Plan:
    slo, result = search.slo, final.result
    # the written budgets: the SLO's p99 split by each node's predicted p99 under the chosen values
    predicted = {n.node: n.latency.p99_s for n in result.nodes}
    budgets = _budgets(
        search, {c: predicted.get(c, _single_cost(search.profile.node(c))) for c in search.calls}, slo.p99_s
    )
    out = search.plan.model_copy(deep=True)
    for path, obj in search.plan._objects.items():
        out.register(path, obj)
    replicas = _place(search, knobs)
    assert replicas is not None  # every candidate the search kept was placed
    utilization: dict[str, list[float]] = {}
    for replica_result in result.replicas:
        utilization.setdefault(replica_result.deployment, []).append(replica_result.utilization)
    util = {d: round(sum(v) / len(v), 3) for d, v in sorted(utilization.items())}
    node_results = {n.node: n for n in result.nodes}
    for dep in out.deployments:
        k = knobs[dep.name]
        user = set(dep.user_set)
        worst = max(
            (node_results[n.id].latency.p99_s for n in _nodes_of(search, dep.name) if n.id in node_results), default=0.0
        )
        budget = max((budgets[n.id] for n in _nodes_of(search, dep.name)), default=0.0)
        batch_text = "".join(f", batch {size}, wait {_ms(wait)}" for _, size, wait in k.batch)
        why = (
            f"{dep.name}: {k.replicas} replica(s){batch_text}: p99 {_ms(worst)} of its {_ms(budget)} budget "
            f"({_ms(slo.p99_s)} end to end) at {slo.rate_rps:g} req/s, utilization {util.get(dep.name, 0.0):.2f}"
        )
        dep.num_replicas = k.replicas
        dep.max_ongoing_requests = k.ongoing
        dep.resources.num_cpus = k.cpus
        dep.resources.num_gpus = k.gpus
        for b, (_, size, wait) in zip(dep.batching, k.batch, strict=True):
            b.max_batch_size = size
            b.batch_wait_timeout_s = wait
            planned_size = f"{b.method}.max_batch_size" not in user
            if f"{b.method}.adaptive" not in user:
                b.adaptive = planned_size
            node = next((n for n in _nodes_of(search, dep.name) if (n.method or "__call__") == b.method), None)
            b.latency_budget_s = round(budgets[node.id], 6) if node is not None else None
        dep.reason = why
        dep.choices = list(_choices(dep, k, why))
    for node in out.nodes:
        if node.id in budgets:
            node.latency_budget_s = round(budgets[node.id], 6)
            r = node_results.get(node.id)
            if r is not None:
                node.predicted = LatencyPrediction(p50_s=round(r.latency.p50_s, 6), p99_s=round(r.latency.p99_s, 6))
    out.replicas = replicas
    out.cluster = search.cluster
    out.slo = slo
    out.warnings = [*out.warnings, *warnings]
    out.prediction = PredictionPlan(
        rate_rps=slo.rate_rps,
        p50_s=round(result.latency.p50_s, 6),
        p99_s=round(result.latency.p99_s, 6),
        throughput_rps=round(result.throughput_rps, 3),
        rejected=result.rejected,
        requests=result.requests,
        nodes={
            n: LatencyPrediction(p50_s=round(r.latency.p50_s, 6), p99_s=round(r.latency.p99_s, 6))
            for n, r in sorted(node_results.items())
        },
        utilization=util,
        within_headroom=not search.relaxed,
    )
    fusion.fuse(out, enabled=out.fusion is None or out.fusion.enabled)  # replicas and placement changed
    return out
