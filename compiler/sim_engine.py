"""The discrete-event engine behind :mod:`graphserve.compiler.simulate`: one run's
events, requests, replica routers, batchers and the shared core, and the result types.

``simulate.py`` compiles a Plan and a Profile into :class:`NodeModel` s and
:class:`PathTemplate` s (the calls one path of a request runs, with their prerequisites);
:class:`SimulationRun` plays arrival times through them and summarises what happened.
The semantics are documented in ``simulate.py``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from graphserve.plan import NodePlan

from .profile import BatchPoint, NodeProfile, draw

CPU_SHARE_MIN = 0.05  # calls with less CPU than this share of their time are modelled as waiting only
Routing = Literal["least_loaded", "power_of_two"]

# event kinds
_DONE, _BATCH_DONE, _BATCH_TIMER, _CPU = range(4)
# call states
_PENDING, _QUEUED, _RUNNING, _BATCHING, _IN_BATCH, _FINISHED, _CANCELLED = range(7)


# -- results ------------------------------------------------------------------------------
class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencySummary(_Data):
    """Seconds; nearest-rank percentiles (0 when there were no samples)."""

    count: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float

    @classmethod
    def of(cls, values: list[float]) -> LatencySummary:
        if not values:
            return cls(count=0, mean_s=0.0, p50_s=0.0, p95_s=0.0, p99_s=0.0, max_s=0.0)
        values.sort()
        return cls(
            count=len(values),
            mean_s=sum(values) / len(values),
            p50_s=_rank(values, 50),
            p95_s=_rank(values, 95),
            p99_s=_rank(values, 99),
            max_s=values[-1],
        )


class NodeResult(_Data):
    node: str
    deployment: str
    method: str
    calls: int = 0
    latency: LatencySummary
    queue_wait: LatencySummary
    batches: int = 0
    mean_batch_size: float | None = None


class ReplicaResult(_Data):
    deployment: str
    index: int
    utilization: float  # time-average of calls (or batches) running / the most that may run at once
    busy: float  # fraction of the time with at least one call or batch running


class SimulationResult(_Data):
    """What the simulator predicts for one plan, profile and arrival process."""

    graph: str
    arrivals: str
    offered_rps: float
    duration_s: float
    seed: int
    requests: int
    completed: int
    rejected: int
    timed_out: int
    throughput_rps: float
    latency: LatencySummary
    nodes: list[NodeResult]
    replicas: list[ReplicaResult]
    cpu_utilization: float

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def node(self, node_id: str) -> NodeResult:
        for node in self.nodes:
            if node.node == node_id:
                return node
        raise KeyError(node_id)


def _rank(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


# -- settings the planner varies ------------------------------------------------------------
@dataclass(frozen=True)
class BatchSettings:
    method: str
    max_batch_size: int
    batch_wait_timeout_s: float
    max_concurrent_batches: int


@dataclass(frozen=True)
class DeploymentSettings:
    """The tunables of one deployment (a Plan's values unless changed with ``with_deployment``)."""

    num_replicas: int
    max_ongoing_requests: int
    max_queued_requests: int
    batching: tuple[BatchSettings, ...] = ()

    def batch(self, method: str) -> BatchSettings | None:
        for b in self.batching:
            if b.method == method:
                return b
        return None


# -- the compiled graph ---------------------------------------------------------------------
class NodeModel:
    """A deployment call node and what the profile says about it."""

    __slots__ = ("cpu", "curve", "deployment", "id", "index", "method", "on_loop", "points", "quantiles")

    def __init__(self, index: int, node: NodePlan, measured: NodeProfile) -> None:
        self.index = index
        self.id = node.id
        self.deployment = node.deployment or ""
        self.method = node.method or "__call__"
        self.cpu = measured.cpu_share if measured.cpu_share >= CPU_SHARE_MIN else 0.0
        self.on_loop = measured.runs_on == "event_loop"
        self.points: list[BatchPoint] = list(measured.batches)
        self.quantiles: list[float] = measured.latency.quantiles_s if measured.latency is not None else []
        self.curve: list[tuple[list[float], list[float], float]] = []


class PathTemplate:
    """The deployment calls one path of a request runs: prerequisite counts and dependents."""

    __slots__ = ("counts", "dependents", "nodes", "roots")

    def __init__(self, nodes: list[NodeModel], prereqs: list[set[int]]) -> None:
        self.nodes = nodes
        self.counts = [len(p) for p in prereqs]
        self.dependents: list[list[int]] = [[] for _ in nodes]
        for i, before in enumerate(prereqs):
            for j in before:
                self.dependents[j].append(i)
        self.roots = [i for i, c in enumerate(self.counts) if c == 0]


# -- one simulation run -------------------------------------------------------------------------
class _Request:
    __slots__ = ("arrival", "calls", "counts", "done", "remaining", "template")

    def __init__(self, arrival: float, template: PathTemplate) -> None:
        self.arrival = arrival
        self.template = template
        self.counts = list(template.counts)
        self.remaining = len(template.nodes)
        self.calls: list[_Call] = []
        self.done = False


class _Call:
    __slots__ = ("batcher", "demanded", "model", "replica", "req", "started", "state", "task", "wait")

    def __init__(self, req: _Request, task: int, model: NodeModel, now: float) -> None:
        self.req = req
        self.task = task
        self.model = model
        self.demanded = now
        self.started = now  # when its service began (its batch, for a batched call)
        self.state = _PENDING
        self.replica: _Replica | None = None
        self.batcher: _Batcher | None = None
        self.wait = 0.0  # the wait part left after its CPU part


class _Replica:
    __slots__ = ("area", "batchers", "busy_area", "changed", "deployment", "index", "ongoing", "running")

    def __init__(self, deployment: str, index: int) -> None:
        self.deployment = deployment
        self.index = index
        self.ongoing = 0  # routed calls holding a slot (max_ongoing_requests)
        self.running = 0  # calls (or batches) in service, for utilization
        self.area = 0.0
        self.busy_area = 0.0
        self.changed = 0.0
        self.batchers: dict[str, _Batcher] = {}

    def level(self, now: float, delta: int) -> None:
        span = now - self.changed
        self.area += self.running * span
        if self.running:
            self.busy_area += span
        self.changed = now
        self.running += delta


class _Router:
    __slots__ = ("limit", "live", "max_queued", "name", "queue", "random", "replicas", "settings")

    def __init__(self, name: str, settings: DeploymentSettings, rng: random.Random | None) -> None:
        self.name = name
        self.random = rng  # power of two choices draws with it; None: least loaded
        self.settings = settings
        self.limit = settings.max_ongoing_requests
        self.max_queued = settings.max_queued_requests
        self.replicas = [_Replica(name, i) for i in range(settings.num_replicas)]
        self.queue: deque[_Call] = deque()
        self.live = 0  # calls in ``queue`` that are still waiting (cancelled ones are skipped)

    def pick(self) -> _Replica | None:
        replicas = self.replicas
        best = replicas[0]
        if len(replicas) > 1:
            if self.random is not None:
                first = self.random.randrange(len(replicas))
                second = self.random.randrange(len(replicas) - 1)
                a, b = replicas[first], replicas[second if second < first else second + 1]
                best = a if a.ongoing <= b.ongoing else b
                if best.ongoing < self.limit:
                    return best
            for r in replicas:
                if r.ongoing < best.ongoing:
                    best = r
        return best if best.ongoing < self.limit else None


class _Batcher:
    __slots__ = ("batches", "busy", "curve", "items", "live", "max_conc", "max_size", "queue", "timer", "wait")

    def __init__(self, settings: BatchSettings, curve: list[tuple[list[float], list[float], float]]) -> None:
        self.max_size = settings.max_batch_size
        self.wait = settings.batch_wait_timeout_s
        self.max_conc = settings.max_concurrent_batches
        self.curve = curve
        self.queue: deque[_Call] = deque()
        self.live = 0
        self.busy = 0
        self.timer = -1.0
        self.batches = 0
        self.items = 0


class _CpuJob:
    __slots__ = ("dead", "then", "work")

    def __init__(self, work: float, then: Any) -> None:
        self.work = work
        self.then = then  # a _Call, a _Request (the executor's work before its calls), or a (batcher, batch) tuple
        self.dead = False


class _Cpu:
    """One core shared equally by the threads that want it (virtual-time processor sharing).

    The event loop is one thread: its jobs run one after another from ``loop_queue``."""

    __slots__ = ("busy", "changed", "epoch", "heap", "loop_job", "loop_queue", "n", "seq", "v")

    def __init__(self) -> None:
        self.v = 0.0
        self.changed = 0.0
        self.n = 0
        self.heap: list[tuple[float, int, _CpuJob, bool]] = []
        self.epoch = 0
        self.seq = itertools.count()
        self.loop_job: _CpuJob | None = None
        self.loop_queue: deque[_CpuJob] = deque()
        self.busy = 0.0

    def advance(self, now: float) -> None:
        if self.n:
            self.v += (now - self.changed) / self.n
            self.busy += now - self.changed
        self.changed = now

    def start(self, job: _CpuJob, loop: bool) -> None:
        heapq.heappush(self.heap, (self.v + job.work, next(self.seq), job, loop))
        self.n += 1

    def next_time(self, now: float) -> float | None:
        if not self.n:
            return None
        return now + max(0.0, self.heap[0][0] - self.v) * self.n


class SimulationRun:
    """The state of one simulation; :meth:`execute` processes every event."""

    def __init__(
        self,
        models: list[NodeModel],
        templates: list[PathTemplate],
        weights: list[float],
        settings: dict[str, DeploymentSettings],
        routing: Routing,
        seed: int,
        timeout_s: float | None,
        request_cpu_s: float = 0.0,
    ) -> None:
        """``weights``: the cumulative probability of each template (the last is 1);
        ``request_cpu_s``: the runtime's own CPU work per request, on the event loop, before its calls."""
        self.models = models
        self.templates = templates
        self.weights = weights
        self.rng = random.Random(seed ^ 0x5EED)
        self.timeout_s = timeout_s
        self.request_cpu = request_cpu_s if request_cpu_s > 0 else 0.0
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.cpu = _Cpu()
        draws = self.rng if routing == "power_of_two" else None
        self.routers = {name: _Router(name, s, draws) for name, s in settings.items()}
        self.node_latency: list[list[float]] = [[] for _ in models]
        self.node_wait: list[list[float]] = [[] for _ in models]
        self.e2e: list[float] = []
        self.rejected = 0
        self.timed_out = 0
        self.last = 0.0  # when the last request finished or failed
        self.end = 0.0
        for name, router in self.routers.items():
            for b in router.settings.batching:
                model = next((m for m in models if m.deployment == name and m.method == b.method), None)
                curve = _curve(model.points, b.max_batch_size) if model is not None and model.points else []
                for replica in router.replicas:
                    replica.batchers[b.method] = _Batcher(b, curve)

    # -- the loop -----------------------------------------------------------------------------
    def execute(self, times: list[float]) -> None:
        heap = self.heap
        pop = heapq.heappop
        templates, weights = self.templates, self.weights
        single = templates[0] if len(templates) == 1 else None
        rng_random = self.rng.random
        timeout = self.timeout_s
        deadlines: deque[tuple[float, _Request]] = deque()  # arrival order is deadline order
        inf = math.inf
        i, n = 0, len(times)
        while True:
            while deadlines and deadlines[0][1].done:
                deadlines.popleft()
            t_arrival = times[i] if i < n else inf
            t_event = heap[0][0] if heap else inf
            t_deadline = deadlines[0][0] if deadlines else inf
            if t_arrival <= t_event and t_arrival <= t_deadline:
                if t_arrival == inf:
                    break
                now = t_arrival
                i += 1
                template = single or templates[bisect.bisect_left(weights, rng_random())]
                req = _Request(now, template)
                if not template.nodes:
                    self.finish(req, now)
                    continue
                if timeout is not None:
                    deadlines.append((now + timeout, req))
                if self.request_cpu:  # the executor's own work first, on the event loop
                    self.cpu_add(_CpuJob(self.request_cpu, req), True, now)
                    continue
                self.start(req, now)
                continue
            if t_deadline < t_event:
                now, req = deadlines.popleft()
                self.timed_out += 1
                self.fail(req, now)
                continue
            now, _, kind, obj = pop(heap)
            if kind == _DONE:
                if obj.state == _RUNNING:
                    self.call_done(obj, now)
            elif kind == _BATCH_DONE:
                self.batch_done(obj[0], obj[1], obj[2], now)
            elif kind == _BATCH_TIMER:
                if obj.timer == now:
                    obj.timer = -1.0
                    self.dispatch(obj, now)
            else:
                self.cpu_event(obj, now)
        self.end = max(self.last, times[-1] if times else 0.0)

    def start(self, req: _Request, now: float) -> None:
        """Submit the request's first calls (those with no inputs from other calls)."""
        for task in req.template.roots:
            self.submit(req, task, now)
            if req.done:
                break

    def push(self, when: float, kind: int, obj: Any) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), kind, obj))

    # -- routing ------------------------------------------------------------------------------
    def submit(self, req: _Request, task: int, now: float) -> None:
        model = req.template.nodes[task]
        call = _Call(req, task, model, now)
        req.calls.append(call)
        router = self.routers[model.deployment]
        if not router.live:
            replica = router.pick()
            if replica is not None:
                replica.ongoing += 1
                self.begin(call, replica, now)
                return
        if 0 <= router.max_queued <= router.live:
            self.rejected += 1
            self.fail(req, now)
            return
        call.state = _QUEUED
        router.queue.append(call)
        router.live += 1

    def release(self, replica: _Replica, now: float) -> None:
        replica.ongoing -= 1
        router = self.routers[replica.deployment]
        while router.live:
            free = router.pick()
            if free is None:
                return
            call = router.queue.popleft()
            if call.state != _QUEUED:
                continue
            router.live -= 1
            free.ongoing += 1
            self.begin(call, free, now)

    def begin(self, call: _Call, replica: _Replica, now: float) -> None:
        """``call`` holds a slot on ``replica``: into its batcher, or into service."""
        call.replica = replica
        model = call.model
        batcher = replica.batchers.get(model.method) if replica.batchers else None
        if batcher is not None:
            call.state = _BATCHING
            call.batcher = batcher
            call.started = now
            batcher.queue.append(call)
            batcher.live += 1
            self.dispatch(batcher, now)
            return
        call.state = _RUNNING
        call.started = now
        replica.level(now, 1)
        q = model.quantiles
        u = self.rng.random()
        if u < 0.99:  # draw(), inlined for the common case
            x = u * 100.0
            k = int(x)
            service = q[k] + (q[k + 1] - q[k]) * (x - k)
        else:
            service = draw(q, u)
        if model.cpu:
            work = service * model.cpu
            call.wait = service - work
            self.cpu_add(_CpuJob(work, call), model.on_loop, now)
        else:
            self.push(now + service, _DONE, call)

    def call_done(self, call: _Call, now: float) -> None:
        call.state = _FINISHED
        replica = call.replica
        assert replica is not None
        replica.level(now, -1)
        self.node_latency[call.model.index].append(now - call.demanded)
        self.node_wait[call.model.index].append(call.started - call.demanded)
        self.release(replica, now)
        self.completed(call, now)

    def completed(self, call: _Call, now: float) -> None:
        req = call.req
        if req.done:
            return
        req.remaining -= 1
        if not req.remaining:
            self.finish(req, now)
            return
        counts = req.counts
        for dep in req.template.dependents[call.task]:
            counts[dep] -= 1
            if not counts[dep]:
                self.submit(req, dep, now)
                if req.done:  # rejected
                    return

    def finish(self, req: _Request, now: float) -> None:
        req.done = True
        self.last = now
        self.e2e.append(now - req.arrival)

    def fail(self, req: _Request, now: float) -> None:
        """A 503 or 504: drop the request's queued and running calls, freeing their slots."""
        req.done = True
        self.last = now
        for call in req.calls:
            state = call.state
            if state == _QUEUED:
                call.state = _CANCELLED
                self.routers[call.model.deployment].live -= 1
            elif state == _RUNNING:
                call.state = _CANCELLED
                assert call.replica is not None
                call.replica.level(now, -1)
                self.release(call.replica, now)
            elif state == _BATCHING:
                call.state = _CANCELLED
                assert call.batcher is not None and call.replica is not None
                call.batcher.live -= 1
                self.release(call.replica, now)
            elif state == _IN_BATCH:
                call.state = _CANCELLED
                assert call.replica is not None
                self.release(call.replica, now)

    # -- batching -------------------------------------------------------------------------------
    def dispatch(self, b: _Batcher, now: float) -> None:
        """Send batches while one is due (full, or its oldest item waited long enough) and a slot is free."""
        queue = b.queue
        while b.live and b.busy < b.max_conc:
            while queue[0].state != _BATCHING:
                queue.popleft()
            due = queue[0].started + b.wait
            if b.live < b.max_size and now < due:
                if b.timer != due:
                    b.timer = due
                    self.push(due, _BATCH_TIMER, b)
                return
            batch: list[_Call] = []
            while queue and len(batch) < b.max_size:
                call = queue.popleft()
                if call.state == _BATCHING:
                    call.state = _IN_BATCH
                    call.started = now
                    batch.append(call)
            b.live -= len(batch)
            b.busy += 1
            b.batches += 1
            b.items += len(batch)
            replica = batch[0].replica
            assert replica is not None
            replica.level(now, 1)
            qlo, qhi, w = b.curve[len(batch)]
            u = self.rng.random()
            lo = draw(qlo, u)
            service = lo if w == 0.0 else max(0.0, lo + (draw(qhi, u) - lo) * w)
            model = batch[0].model
            if model.cpu:
                work = service * model.cpu
                self.cpu_add(_CpuJob(work, (b, batch, replica, service - work)), model.on_loop, now)
            else:
                self.push(now + service, _BATCH_DONE, (b, batch, replica))

    def batch_done(self, b: _Batcher, batch: list[_Call], replica: _Replica, now: float) -> None:
        b.busy -= 1
        replica.level(now, -1)
        self.dispatch(b, now)  # the batcher takes its next batch before the callers answer
        for call in batch:
            if call.state != _IN_BATCH:
                continue
            call.state = _FINISHED
            self.node_latency[call.model.index].append(now - call.demanded)
            self.node_wait[call.model.index].append(call.started - call.demanded)
            self.release(replica, now)
            self.completed(call, now)

    # -- the shared core ------------------------------------------------------------------------
    def cpu_add(self, job: _CpuJob, on_loop: bool, now: float) -> None:
        cpu = self.cpu
        cpu.advance(now)
        if on_loop:
            if cpu.loop_job is not None:
                cpu.loop_queue.append(job)
                return
            cpu.loop_job = job
        cpu.start(job, on_loop)
        self.cpu_schedule(now)

    def cpu_schedule(self, now: float) -> None:
        cpu = self.cpu
        cpu.epoch += 1
        when = cpu.next_time(now)
        if when is not None:
            self.push(when, _CPU, cpu.epoch)

    def cpu_event(self, epoch: int, now: float) -> None:
        cpu = self.cpu
        if epoch != cpu.epoch:
            return
        cpu.advance(now)
        finished = []
        while cpu.heap and cpu.heap[0][0] <= cpu.v + 1e-12:
            _, _, job, loop = heapq.heappop(cpu.heap)
            cpu.n -= 1
            finished.append(job)
            if loop:
                cpu.loop_job = cpu.loop_queue.popleft() if cpu.loop_queue else None
                if cpu.loop_job is not None:
                    cpu.start(cpu.loop_job, True)
        self.cpu_schedule(now)
        for job in finished:
            then = job.then
            if isinstance(then, _Call):
                if then.state == _RUNNING:
                    self.push(now + then.wait, _DONE, then)
            elif isinstance(then, _Request):
                if not then.done:
                    self.start(then, now)
            else:
                b, batch, replica, wait = then
                self.push(now + wait, _BATCH_DONE, (b, batch, replica))

    # -- the result -------------------------------------------------------------------------------
    def result(
        self, graph: str, kind: str, offered: float, window: float, seed: int, requests: int
    ) -> SimulationResult:
        end = self.end if self.end > 0 else 1.0
        nodes = []
        for model in self.models:
            batches = items = 0
            router = self.routers[model.deployment]
            for replica in router.replicas:
                b = replica.batchers.get(model.method)
                if b is not None:
                    batches += b.batches
                    items += b.items
            batched = router.settings.batch(model.method) is not None
            nodes.append(
                NodeResult(
                    node=model.id,
                    deployment=model.deployment,
                    method=model.method,
                    calls=len(self.node_latency[model.index]),
                    latency=LatencySummary.of(self.node_latency[model.index]),
                    queue_wait=LatencySummary.of(self.node_wait[model.index]),
                    batches=batches,
                    mean_batch_size=(items / batches if batches else 0.0) if batched else None,
                )
            )
        replicas = []
        for router in self.routers.values():
            capacity = (
                max(b.max_concurrent_batches for b in router.settings.batching)
                if router.settings.batching
                else router.limit
            )
            for replica in router.replicas:
                replica.level(end, 0)
                replicas.append(
                    ReplicaResult(
                        deployment=router.name,
                        index=replica.index,
                        utilization=replica.area / end / capacity,
                        busy=replica.busy_area / end,
                    )
                )
        self.cpu.advance(end)
        completed = len(self.e2e)
        return SimulationResult(
            graph=graph,
            arrivals=kind,
            offered_rps=offered,
            duration_s=window,
            seed=seed,
            requests=requests,
            completed=completed,
            rejected=self.rejected,
            timed_out=self.timed_out,
            throughput_rps=completed / end,
            latency=LatencySummary.of(self.e2e),
            nodes=nodes,
            replicas=replicas,
            cpu_utilization=min(1.0, self.cpu.busy / end),
        )


def _curve(points: list[BatchPoint], max_size: int) -> list[tuple[list[float], list[float], float]]:
    """For each batch size 0..max_size: the quantiles of the two measured sizes around it and
    the weight of the upper one (0: measured exactly)."""
    sizes = [p.batch_size for p in points]
    out: list[tuple[list[float], list[float], float]] = []
    for size in range(max_size + 1):
        i = bisect.bisect_left(sizes, size)
        if (i < len(sizes) and sizes[i] == size) or len(points) == 1:
            q = points[min(i, len(points) - 1)].latency.quantiles_s
            out.append((q, q, 0.0))
            continue
        lo = max(0, min(i - 1, len(points) - 2))
        hi = lo + 1
        w = (size - sizes[lo]) / (sizes[hi] - sizes[lo])
        out.append((points[lo].latency.quantiles_s, points[hi].latency.quantiles_s, w))
    return out
