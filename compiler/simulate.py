"""A discrete-event simulator of the local runtime: a Plan plus a Profile -> predicted
latency and throughput under an arrival process (InferLine's simulator, for graphserve).

    result = simulate(plan, profile, rate=200, duration_s=30, seed=1)
    sim = Simulator(plan, profile)                       # compile once ...
    sim.with_deployment("Model", num_replicas=3).run(rate=200)   # ... vary cheaply

It follows the runtime's semantics, not a queueing-theory idealisation:

- **Requests** follow the executor: a deployment call starts when every input it reads is
  ready (fan-out runs concurrently; a join waits for its slowest input); fused nodes
  (field reads, glue, switches, the output) cost nothing; a switch starts its chosen
  branch only once its selector is known. Each request takes one *path* (a combination
  of switch arms) drawn from the profile's measured paths, so a 10% branch runs for 10%
  of requests and correlated switches stay correlated.
- **Routing** (``runtime/routing.py``): each call goes to the replica with the fewest
  calls in flight (first such replica on ties; ``routing="power_of_two"``: the less loaded
  of two drawn at random, the least loaded of all when both are full); at most ``max_ongoing_requests`` per
  replica; the rest wait in one FIFO per deployment of at most ``max_queued_requests``
  (-1: unbounded); past that the request fails with 503 (``rejected``).
- **Batching** (``runtime/batcher.py``): per replica and method, a batch leaves when it
  is full (``max_batch_size``) or its oldest item has waited ``batch_wait_timeout_s``, and
  only while fewer than ``max_concurrent_batches`` run; a freed slot takes what queued
  meanwhile. Items hold their replica slot (``max_ongoing_requests``) from routing until
  their batch ends.
- **Service times** are drawn from the profile's measured distributions (119 quantiles;
  batches by size, linear between measured sizes).
- **CPU**: on the local runtime every replica lives in one process, so CPU work shares one
  core (the GIL). A call whose profiled ``cpu_share`` is at least ``CPU_SHARE_MIN`` first
  does ``cpu_share x service`` of CPU work, then waits the rest. The core is shared
  equally among the threads that want it (processor sharing); the event loop is one
  such thread and runs its async calls' CPU work one at a time, in order; each sync call
  (the runtime's thread pool) is a thread of its own. Calls under ``CPU_SHARE_MIN`` only
  wait: extra replicas of them add capacity, extra replicas of CPU-bound ones do not.
  Each request first does the profile's ``request_cpu_s`` of event-loop CPU work (the
  executor's own), then starts its calls.
- **Deadlines**: past the plan's ``timeout_s`` (or ``timeout_s=``) a request fails with
  504 (``timed_out``) and its queued and running calls are dropped, freeing their slots
  (CPU work already started runs on, as a thread cannot be interrupted).

Not modelled: the HTTP server's CPU time (tens of microseconds per request; the profiler
runs in process and does not see it), the executor's work where it really happens (one
lump on arrival here), calls made through handles inside deployments (they are part of the calling
node's measured time), Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from graphserve.errors import ProfileError
from graphserve.plan import ConstValue, NodePlan, NodeRef, Plan

from . import arrivals as arrival_times
from .profile import Profile
from .sim_engine import (
    CPU_SHARE_MIN,
    BatchSettings,
    DeploymentSettings,
    LatencySummary,
    NodeModel,
    NodeResult,
    PathTemplate,
    ReplicaResult,
    Routing,
    SimulationResult,
    SimulationRun,
)

#: the replica choice of ``runtime/routing.py`` (keep the two in step)
ROUTING: Routing = "least_loaded"

__all__ = [
    "CPU_SHARE_MIN",
    "ROUTING",
    "BatchSettings",
    "DeploymentSettings",
    "LatencySummary",
    "NodeResult",
    "ReplicaResult",
    "SimulationResult",
    "Simulator",
    "simulate",
]


class Simulator:
    """A plan compiled against a profile; :meth:`run` simulates it (see the module docstring)."""

    def __init__(self, plan: Plan, profile: Profile, routing: Routing = ROUTING) -> None:
        profile.check_fits(plan)
        if routing not in ("least_loaded", "power_of_two"):
            raise ProfileError(f"unknown routing {routing!r}: expected least_loaded or power_of_two")
        self.plan = plan
        self.profile = profile
        self.routing = routing
        self.settings: dict[str, DeploymentSettings] = {
            d.name: DeploymentSettings(
                num_replicas=d.num_replicas,
                max_ongoing_requests=d.max_ongoing_requests,
                max_queued_requests=d.max_queued_requests,
                batching=tuple(
                    BatchSettings(b.method, b.max_batch_size, b.batch_wait_timeout_s, b.max_concurrent_batches)
                    for b in d.batching
                ),
            )
            for d in plan.deployments
        }
        nodes = {n.id: n for n in plan.nodes}
        self.models: dict[str, NodeModel] = {}
        for n in plan.nodes:
            if n.kind == "call" and n.deployment:
                self.models[n.id] = NodeModel(len(self.models), n, profile.node(n.id))
        self.templates: list[PathTemplate] = []
        self.weights: list[float] = []
        paths = profile.paths or []
        total = sum(p.requests for p in paths)
        if total <= 0:
            raise ProfileError(f"profile of graph {profile.graph!r} has no measured request paths")
        acc = 0.0
        for path in paths:
            if path.requests <= 0:
                continue
            self.templates.append(self._template(nodes, path.arms))
            acc += path.requests / total
            self.weights.append(acc)
        self.weights[-1] = 1.0

    # -- variants --------------------------------------------------------------------------
    def with_deployment(
        self,
        name: str,
        *,
        num_replicas: int | None = None,
        max_ongoing_requests: int | None = None,
        max_queued_requests: int | None = None,
        method: str | None = None,
        max_batch_size: int | None = None,
        batch_wait_timeout_s: float | None = None,
        max_concurrent_batches: int | None = None,
    ) -> Simulator:
        """A copy with one deployment's tunables changed (the compiled graph is shared).

        As the planner does, ``max_ongoing_requests`` is raised to at least
        ``max_batch_size x max_concurrent_batches`` of each batched method."""
        if name not in self.settings:
            raise ProfileError(f"plan {self.plan.name!r} has no deployment {name!r}")
        current = self.settings[name]
        batching = current.batching
        if max_batch_size is not None or batch_wait_timeout_s is not None or max_concurrent_batches is not None:
            methods = [b.method for b in batching]
            if not methods:
                raise ProfileError(f"deployment {name!r} has no @gs.batch method")
            target = method or methods[0]
            if target not in methods:
                raise ProfileError(f"deployment {name!r} has no @gs.batch method {target!r} (it has {methods})")
            batching = tuple(
                replace(
                    b,
                    max_batch_size=max_batch_size if max_batch_size is not None else b.max_batch_size,
                    batch_wait_timeout_s=(
                        batch_wait_timeout_s if batch_wait_timeout_s is not None else b.batch_wait_timeout_s
                    ),
                    max_concurrent_batches=(
                        max_concurrent_batches if max_concurrent_batches is not None else b.max_concurrent_batches
                    ),
                )
                if b.method == target
                else b
                for b in batching
            )
        ongoing = max_ongoing_requests if max_ongoing_requests is not None else current.max_ongoing_requests
        ongoing = max([ongoing, *(b.max_batch_size * b.max_concurrent_batches for b in batching)])
        changed = DeploymentSettings(
            num_replicas=num_replicas if num_replicas is not None else current.num_replicas,
            max_ongoing_requests=ongoing,
            max_queued_requests=max_queued_requests if max_queued_requests is not None else current.max_queued_requests,
            batching=batching,
        )
        for label, value in (("num_replicas", changed.num_replicas), ("max_ongoing_requests", ongoing)):
            if value < 1:
                raise ProfileError(f"deployment {name!r}: {label} must be at least 1, got {value}")
        copy = object.__new__(Simulator)
        copy.__dict__.update(self.__dict__)
        copy.settings = {**self.settings, name: changed}
        return copy

    # -- running ------------------------------------------------------------------------------
    def run(
        self,
        rate: float | None = None,
        arrivals: Literal["poisson", "uniform"] | Sequence[float] = "poisson",
        duration_s: float = 10.0,
        seed: int = 0,
        timeout_s: float | None = None,
    ) -> SimulationResult:
        """Simulate ``rate`` requests/s for ``duration_s`` (Poisson or uniform), or replay ``arrivals``
        (times in seconds). ``timeout_s`` defaults to the plan's deadline."""
        if isinstance(arrivals, str):
            if rate is None:
                raise ProfileError("a rate (requests per second) is needed for poisson or uniform arrivals")
            if arrivals == "poisson":
                times = arrival_times.poisson(rate, duration_s, seed)
            elif arrivals == "uniform":
                times = arrival_times.uniform(rate, duration_s)
            else:
                raise ProfileError(f"unknown arrivals {arrivals!r}: expected poisson, uniform or a list of times")
            kind: str = arrivals
            offered, window = rate, duration_s
        else:
            times = arrival_times.from_times(arrivals)
            kind = "trace"
            window = times[-1] if len(times) > 1 else duration_s
            offered = len(times) / window if window > 0 else float(len(times))
        for name, s in self.settings.items():
            for b in s.batching:
                for model in self.models.values():
                    if model.deployment == name and model.method == b.method and not model.points:
                        raise ProfileError(
                            f"node {model.id!r} is batched in the plan but its profile has no batch measurements; "
                            "profile the graph again"
                        )
        deadline = timeout_s if timeout_s is not None else self.plan.timeout_s
        models = list(self.models.values())
        run = SimulationRun(
            models,
            self.templates,
            self.weights,
            self.settings,
            self.routing,
            seed,
            deadline,
            self.profile.request_cpu_s,
        )
        run.execute(times)
        return run.result(self.plan.name, kind, offered, window, seed, len(times))

    # -- compiling one path --------------------------------------------------------------------
    def _template(self, nodes: dict[str, NodePlan], arms: dict[str, int]) -> PathTemplate:
        """The executor's demand-driven evaluation for one combination of switch arms.

        ``gate[n]``: the calls that must finish before ``n`` is demanded (a switch's branch
        waits for its selector); a node demanded twice keeps the smaller gate."""
        gate: dict[str, frozenset[str]] = {}

        def inputs(node: NodePlan) -> list[str]:
            if node.kind != "switch":
                return list(node.inputs)
            return [node.selector or ""]

        def chosen(node: NodePlan) -> str | None:
            arm = arms.get(node.id)
            if arm is None:
                measured = self.profile.switch(node.id)
                if measured is None or not measured.arms:
                    raise ProfileError(f"profile has no measurements for switch {node.id!r}; profile the graph again")
                arm = int(max(measured.arms.items(), key=lambda kv: kv[1])[0])
            ref = node.default if arm == -1 else node.branches[arm].arg if arm < len(node.branches) else None
            if isinstance(ref, NodeRef):
                return ref.node
            if ref is None or not isinstance(ref, ConstValue):
                raise ProfileError(f"profile names arm {arm} of switch {node.id!r}, which the plan does not have")
            return None

        ready_memo: dict[str, frozenset[str]] = {}

        def ready(node_id: str) -> frozenset[str]:
            """Calls whose completion makes ``node_id``'s value ready (given the gates so far)."""
            found = ready_memo.get(node_id)
            if found is not None:
                return found
            node = nodes[node_id]
            if node.id in self.models:
                out: frozenset[str] = frozenset((node_id,))
            elif node.kind == "switch":
                branch = chosen(node)
                out = ready(node.selector or "") | (ready(branch) if branch is not None else frozenset())
                out |= gate.get(node_id, frozenset())
            else:
                out = gate.get(node_id, frozenset()).union(*(ready(i) for i in inputs(node)))
            ready_memo[node_id] = out
            return out

        def visit(node_id: str, g: frozenset[str]) -> None:
            old = gate.get(node_id)
            if old is not None and not g < old:
                return
            gate[node_id] = g
            ready_memo.clear()
            node = nodes[node_id]
            for i in inputs(node):
                visit(i, g)
            if node.kind == "switch":
                branch = chosen(node)
                if branch is not None:
                    visit(branch, g | ready(node.selector or ""))

        visit(self.plan.output, frozenset())
        ready_memo.clear()
        calls = [nid for nid in gate if nid in self.models]
        index = {nid: i for i, nid in enumerate(calls)}
        prereqs = []
        for nid in calls:
            node = nodes[nid]
            before = gate[nid].union(*(ready(i) for i in inputs(node)))
            prereqs.append({index[b] for b in before if b != nid})
        return PathTemplate([self.models[nid] for nid in calls], prereqs)


def simulate(
    plan: Plan,
    profile: Profile,
    rate: float | None = None,
    arrivals: Literal["poisson", "uniform"] | Sequence[float] = "poisson",
    duration_s: float = 10.0,
    seed: int = 0,
    timeout_s: float | None = None,
) -> SimulationResult:
    """Predict ``plan``'s latency and throughput from ``profile``; see :class:`Simulator`."""
    return Simulator(plan, profile).run(rate, arrivals, duration_s, seed, timeout_s)
