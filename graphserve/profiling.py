"""``gs.profile``: measure every node of a graph on the local runtime; ``gs.simulate``:
predict a plan's latency and throughput from such a profile.

Profiling runs the real graph (real constructors, real models) in two phases, within
the time box ``duration_s``:

1. **Requests**: every sample request runs through the graph once, one at a time, on the
   local runtime. The executor's observer records which nodes each request reached
   (visit rates), each switch's arm and each request's combination of arms (its path),
   and the inputs that reached every deployment call.
2. **Nodes**: each deployment call is replayed on its own, one call at a time, with the
   inputs that really reached it: through the runtime's routing for a plain method
   (wall time and process CPU time of each call), and for an ``@gs.batch`` method by
   calling the undecorated function directly with whole batches assembled from those
   inputs, at each batch size, so the cost curve t(b) is measured, not assumed.

A timed call's wall time leaves out the time the profiler's event loop was ready to run
but waited for a core other processes held (Linux's run-queue delay of that thread, from
``/proc/thread-self/schedstat``): on a shared machine that waiting is the neighbours'
work, not the node's, and a few such stalls while profiling would otherwise become the
node's tail in every prediction (a sync node's own waits in its worker thread stay in).
How much was left out is recorded (``machine_wait_s`` per node, ``machine_wait_share``
overall) and warned about when it is large.

The result is a :class:`graphserve.compiler.profile.Profile` (see there for the format).
"""

from __future__ import annotations

import functools
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from graphserve.batching import unbatched
from graphserve.compiler.profile import (
    FEW_SAMPLES,
    BatchPoint,
    Distribution,
    MachineProfile,
    NodeProfile,
    PathProfile,
    Profile,
    SwitchProfile,
    fingerprint,
    fit_line,
)
from graphserve.errors import ProfileError, RequestError
from graphserve.plan import NodePlan, Plan

if TYPE_CHECKING:
    from graphserve.compiler.simulate import SimulationResult
    from graphserve.runtime.running_graph import GraphRuntime

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
REQUESTS_SHARE = 0.3  # at most this share of the time box runs the sample requests through the graph
MAX_SAMPLES = 1000  # calls (or batches) timed per node (or batch size)
KEEP_INPUTS = 256  # inputs kept per node for the replay (a seeded reservoir sample)
BUSY_MACHINE_SHARE = 0.05  # more of the timed wall time than this waiting for a core: a warning

Progress = Callable[[str, int, int], None]  # (what is being measured, steps done, steps in all)


# -- sample requests -----------------------------------------------------------------------
def read_requests(path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, request)`` for each non-blank line of a JSON Lines file."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read requests file {str(path)!r}: {exc.strerror or exc}") from None
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise ProfileError(
                f"{path} line {number} is not JSON ({exc}): each line must be one request body"
            ) from None
    if not out:
        raise ProfileError(f"requests file {str(path)!r} is empty: give one JSON request body per line")
    return out


# -- the machine's other work -------------------------------------------------------------
def run_delay_s() -> float | None:
    """Seconds the calling thread has spent ready to run but waiting for a core (its run-queue
    delay since it started, from Linux's schedstat); None where the OS does not say.

    Only the calling thread (the profiler's event loop, which every timed call ends on) is
    read: between two readings it made while running, its delay is exactly its waiting in
    between. Other threads' delays are not: a thread preempted before the first reading
    has its whole wait counted when it next runs, on or off the call's path."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class _Timer:
    """Times one call at a time: wall time less the machine's wait for a core, and CPU time."""

    def __init__(self, run_delay: Callable[[], float | None]) -> None:
        self.run_delay = run_delay
        self.available = run_delay() is not None
        self.wall_s = self.waited_s = 0.0  # totals over every call timed

    def start(self) -> tuple[float | None, float, float]:
        delay = self.run_delay() if self.available else None
        return delay, time.process_time(), time.perf_counter()

    def stop(self, started: tuple[float | None, float, float]) -> tuple[float, float]:
        """(the call's wall time less its wait for a core, its CPU time)."""
        t1, c1 = time.perf_counter(), time.process_time()
        d0, c0, t0 = started
        wall = t1 - t0
        waited = 0.0
        if d0 is not None:
            d1 = self.run_delay()
            if d1 is not None:
                waited = min(wall, max(0.0, d1 - d0))
        self.wall_s += wall
        self.waited_s += waited
        return wall - waited, c1 - c0


def runtime_cpu(request_cpu: list[float], nodes: list[NodeProfile]) -> float:
    """The runtime's own CPU per request: a request's CPU through the graph (the mean over the
    sample requests after the first, which warms the code paths up) less what its calls take
    (each node's CPU share of its one-call time, weighted by its visit rate; a batched node's
    batch of 1). A batched node's batcher works per batch, but each sample request is a
    batch of its own, so its work is counted per request: too much when batches fill."""
    spent = request_cpu[1:] or request_cpu
    if not spent:
        return 0.0
    calls = 0.0
    for node in nodes:
        one = node.latency if node.latency is not None else (node.batches[0].latency if node.batches else None)
        if one is not None:
            calls += node.visit_rate * node.cpu_share * one.mean_s
    return round(max(0.0, sum(spent) / len(spent) - calls), 7)


# -- what the executor tells us ------------------------------------------------------------
class _Recorder:
    """The executor's observer during phase 1 (implements ``ExecutionObserver``)."""

    def __init__(self, seed: int = 0) -> None:
        self.visits: Counter[str] = Counter()
        self.inputs: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self.switches: dict[str, Counter[int]] = {}
        self.path: dict[str, int] = {}
        self._rng = random.Random(seed)

    def call_finished(
        self, node: str, args: tuple[Any, ...], kwargs: dict[str, Any], started: float, finished: float
    ) -> None:
        self.visits[node] += 1
        kept = self.inputs.setdefault(node, [])
        seen = self.visits[node]
        if len(kept) < KEEP_INPUTS:
            kept.append((args, dict(kwargs)))
        else:  # reservoir sampling: every input seen has the same chance to be kept
            slot = self._rng.randrange(seen)
            if slot < KEEP_INPUTS:
                kept[slot] = (args, dict(kwargs))

    def switch_taken(self, node: str, arm: int) -> None:
        self.switches.setdefault(node, Counter())[arm] += 1
        self.path[node] = arm


# -- the profiler --------------------------------------------------------------------------
def profile(
    app: Any,
    requests: str | Path | Iterable[Any],
    *,
    duration_s: float = 30.0,
    batch_sizes: Sequence[int] | None = None,
    progress: Progress | None = None,
    cluster: Any = None,
) -> Profile:
    """Measure every deployment call of ``app`` (an app or a Plan) with sample ``requests``
    (a JSON Lines file, or request bodies); returns a Profile (``.to_json()`` to save it).

    ``batch_sizes``: the sizes to time ``@gs.batch`` methods at (default 1, 2, 4, ... up to
    each method's ``max_batch_size``, and ``max_batch_size`` itself)."""
    if not duration_s > 0:
        raise ProfileError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if batch_sizes is not None and (not batch_sizes or any(int(b) < 1 for b in batch_sizes)):
        raise ProfileError(f"batch sizes must be integers >= 1, got {list(batch_sizes)!r}")
    plan = app if isinstance(app, Plan) else _build(app, cluster)
    if isinstance(requests, (str, Path)):
        source, samples = str(requests), read_requests(requests)
    else:
        source, samples = "requests", list(enumerate(requests, 1))
        if not samples:
            raise ProfileError("no sample requests given: profiling needs at least one")
    from graphserve.runtime.background_loop import BackgroundLoop
    from graphserve.runtime.running_graph import GraphRuntime

    background = BackgroundLoop(name=f"graphserve-profile-{plan.name}")
    runtime = GraphRuntime(plan)
    try:
        background.run(runtime.start())
        profiler = _Profiler(plan, runtime, source, samples, duration_s, batch_sizes, progress)
        return background.run(profiler.run())
    finally:
        try:
            background.run(runtime.stop(), timeout=30)
        finally:
            background.close()


def _build(app: Any, cluster: Any) -> Plan:
    from graphserve.api import build

    plan: Plan = build(app, cluster=cluster)
    return plan


class _Profiler:
    def __init__(
        self,
        plan: Plan,
        runtime: GraphRuntime,
        source: str,
        samples: list[tuple[int, Any]],
        duration_s: float,
        batch_sizes: Sequence[int] | None,
        progress: Progress | None,
    ) -> None:
        self.plan = plan
        self.runtime = runtime
        self.source = source
        self.samples = samples
        self.duration_s = duration_s
        self.batch_sizes = sorted({int(b) for b in batch_sizes}) if batch_sizes is not None else None
        self.progress = progress or (lambda what, done, total: None)
        self.calls = [n for n in plan.nodes if n.kind == "call" and n.deployment]
        self.warnings: list[str] = []
        self.started = 0.0
        self.steps = self.steps_left = self.done = 0  # progress: measurements in all, still to make, made
        self.timer = _Timer(run_delay_s)
        self.request_cpu: list[float] = []  # process CPU time of each sample request through the graph

    def sizes(self, max_batch_size: int) -> list[int]:
        if self.batch_sizes is not None:
            return self.batch_sizes
        return sorted({b for b in DEFAULT_BATCH_SIZES if b <= max_batch_size} | {max_batch_size})

    async def run(self) -> Profile:
        self.started = time.perf_counter()
        plan: list[tuple[NodePlan, list[int] | None]] = []
        for node in self.calls:
            batching = self._batching(node.deployment or "", node.method)
            plan.append((node, self.sizes(batching.max_batch_size) if batching is not None else None))
        self.steps_left = sum(len(sizes) if sizes else 1 for _, sizes in plan)
        self.steps = 1 + self.steps_left
        self.done = 0
        self.progress("sample requests through the graph", 0, self.steps)
        recorder, paths, ran = await self._run_requests()
        self._step("sample requests through the graph")
        nodes = [await self._measure(node, sizes, recorder, ran) for node, sizes in plan]
        switches = [
            SwitchProfile(
                node=switch,
                evaluations=sum(counts.values()),
                arms={str(arm): count for arm, count in sorted(counts.items())},
            )
            for switch, counts in sorted(recorder.switches.items())
        ]
        path_list = [
            PathProfile(arms=dict(arms), requests=count)
            for arms, count in sorted(paths.items(), key=lambda kv: orjson.dumps(kv[0]))
        ]
        timer = self.timer
        wait_share = round(timer.waited_s / timer.wall_s, 4) if timer.available and timer.wall_s > 0 else None
        if wait_share is not None and wait_share > BUSY_MACHINE_SHARE:
            self.warnings.append(
                f"the machine was busy while profiling: {wait_share:.0%} of the timed calls' wall time was spent "
                "waiting for a core other processes held (left out of the latencies); profile on a quieter "
                "machine for tails you can trust"
            )
        return Profile(
            graph=self.plan.name,
            fingerprint=fingerprint(self.plan),
            machine=machine(),
            requests=ran,
            sample_requests=len(self.samples),
            duration_s=self.duration_s,
            nodes=nodes,
            switches=switches,
            paths=path_list,
            warnings=self.warnings + [f"{n.node}: {w}" for n in nodes for w in n.warnings],
            machine_wait_share=wait_share,
            request_cpu_s=runtime_cpu(self.request_cpu, nodes),
        )

    def _step(self, what: str, steps: int = 1) -> None:
        self.done += steps
        self.progress(what, self.done, self.steps)

    async def _run_requests(self) -> tuple[_Recorder, Counter[tuple[tuple[str, int], ...]], int]:
        """Phase 1: every sample request through the graph once, one at a time, observed."""
        executor = self.runtime.executor
        if executor is None:  # pragma: no cover - started by profile()
            raise ProfileError(f"graph {self.plan.name!r} did not start")
        requests = []
        for number, body in self.samples:
            try:
                requests.append((number, executor.validate_request(body)))
            except RequestError as exc:
                raise ProfileError(f"{self.source} line {number}: {exc}") from None
        recorder = _Recorder()
        paths: Counter[tuple[tuple[str, int], ...]] = Counter()
        budget = REQUESTS_SHARE * self.duration_s
        ran = 0
        executor.observer = recorder
        try:
            for number, request in requests:
                recorder.path = {}
                cpu0 = time.process_time()
                try:
                    await executor.execute(request)
                except RequestError as exc:
                    raise ProfileError(f"{self.source} line {number}: the request failed: {exc}") from None
                self.request_cpu.append(time.process_time() - cpu0)
                ran += 1
                paths[tuple(sorted(recorder.path.items()))] += 1
                if time.perf_counter() - self.started > budget:
                    break
        finally:
            executor.observer = None
        if ran < len(requests):
            self.warnings.append(
                f"ran {ran} of the {len(requests)} sample requests within {budget:.3g}s "
                f"({REQUESTS_SHARE:.0%} of --duration); visit rates come from those"
            )
        return recorder, paths, ran

    async def _measure(self, node: NodePlan, sizes: list[int] | None, recorder: _Recorder, ran: int) -> NodeProfile:
        """Phase 2 for one node: its calls (or batches of each size) replayed and timed."""
        deployment, method = node.deployment or "", node.method or "__call__"
        inputs = recorder.inputs.get(node.id, [])
        visits = recorder.visits.get(node.id, 0)
        measured = NodeProfile(
            node=node.id,
            deployment=deployment,
            method=method,
            visits=visits,
            visit_rate=round(visits / ran, 6),
            runs_on="event_loop" if self._is_async(node) else "thread_pool",
            cpu_share=0.0,
            latency=None,
        )
        if not inputs:
            measured.warnings.append("no sample request reached this node: nothing measured")
            self.steps_left -= len(sizes) if sizes else 1
            self._step(node.id, len(sizes) if sizes else 1)
            return measured
        waited_before = self.timer.waited_s
        await self._time_node(measured, node, sizes, inputs)
        measured.machine_wait_s = round(self.timer.waited_s - waited_before, 7)
        return measured

    async def _time_node(
        self,
        measured: NodeProfile,
        node: NodePlan,
        sizes: list[int] | None,
        inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
    ) -> None:
        """Fill in ``measured``: its calls, or its batches at each of ``sizes``, timed."""
        deployment, method = node.deployment or "", node.method or "__call__"
        if sizes is None:
            walls, cpu = await self._time_calls(node.id, deployment, method, inputs, self._slice())
            measured.latency = Distribution.of(walls)
            measured.cpu_share = _share(cpu, sum(walls))
            if len(walls) < FEW_SAMPLES:
                measured.warnings.append(f"only {len(walls)} calls timed: raise --duration")
            self.steps_left -= 1
            self._step(node.id)
            return
        total_wall = total_cpu = 0.0
        for size in sizes:
            walls, cpu = await self._time_batches(node.id, deployment, method, inputs, size, self._slice())
            measured.batches.append(BatchPoint(batch_size=size, latency=Distribution.of(walls)))
            total_wall += sum(walls)
            total_cpu += cpu
            if len(walls) < FEW_SAMPLES:
                measured.warnings.append(f"only {len(walls)} batches of {size} timed: raise --duration")
            self.steps_left -= 1
            self._step(f"{node.id} batch {size}")
        measured.fit = fit_line([(p.batch_size, p.latency.p50_s) for p in measured.batches])
        measured.cpu_share = _share(total_cpu, total_wall)

    def _slice(self) -> float:
        """The time left in the box, shared equally by the measurements still to make."""
        left = self.duration_s - (time.perf_counter() - self.started)
        return max(0.0, left) / max(1, self.steps_left)

    def _batching(self, deployment: str, method: str | None) -> Any:
        for b in self.plan.deployment(deployment).batching:
            if b.method == (method or "__call__"):
                return b
        return None

    def _replica(self, deployment: str) -> Any:
        from graphserve.runtime.local import LocalBackend

        backend = self.runtime.backend
        if not isinstance(backend, LocalBackend):  # pragma: no cover - profile() starts a local runtime
            raise ProfileError("profiling needs the local runtime")
        return backend.routers[deployment].replicas[0]

    def _is_async(self, node: Any) -> bool:
        _, is_async = self._replica(node.deployment).method(node.method or "__call__")
        return bool(is_async)

    async def _time_calls(
        self,
        node: str,
        deployment: str,
        method: str,
        inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
        budget_s: float,
    ) -> tuple[list[float], float]:
        """Wall times of calls replayed one at a time through the runtime's routing, and their CPU time."""
        backend = self.runtime.backend
        assert backend is not None
        walls: list[float] = []
        cpu = 0.0
        end = time.perf_counter() + budget_s
        i = 0
        while len(walls) < MAX_SAMPLES and (not walls or time.perf_counter() < end):
            args, kwargs = inputs[i % len(inputs)]
            i += 1
            started = self.timer.start()
            try:
                await backend.call(deployment, method, args, kwargs)
            except Exception as exc:
                raise ProfileError(f"node {node!r} failed when replayed: {type(exc).__name__}: {exc}") from exc
            wall, used = self.timer.stop(started)
            walls.append(wall)
            cpu += used
        return walls, cpu

    async def _time_batches(
        self,
        node: str,
        deployment: str,
        method: str,
        inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
        size: int,
        budget_s: float,
    ) -> tuple[list[float], float]:
        """Wall times of whole batches of ``size`` given straight to the undecorated function."""
        replica = self._replica(deployment)
        instance = replica.instance
        dep = self.plan.deployment(deployment)
        wrapper = instance if dep.kind == "function" else getattr(type(instance), method, None)
        raw = unbatched(wrapper)
        if raw is None:
            raise ProfileError(f"node {node!r}: {deployment}.{method} is not a @gs.batch method")
        fn = raw if dep.kind == "function" else functools.partial(raw, instance)
        walls: list[float] = []
        cpu = 0.0
        end = time.perf_counter() + budget_s
        start = 0
        while len(walls) < MAX_SAMPLES and (not walls or time.perf_counter() < end):
            items = [inputs[(start + j) % len(inputs)] for j in range(size)]
            start += size
            nargs = len(items[0][0])
            args = [[item[0][k] if k < len(item[0]) else None for item in items] for k in range(nargs)]
            kwargs = {key: [item[1].get(key) for item in items] for key in items[0][1]}
            started = self.timer.start()
            try:
                results = await fn(*args, **kwargs)
            except Exception as exc:
                raise ProfileError(f"node {node!r} failed on a batch of {size}: {type(exc).__name__}: {exc}") from exc
            wall, used = self.timer.stop(started)
            if not isinstance(results, (list, tuple)) or len(results) != size:
                raise ProfileError(f"node {node!r}: a batch of {size} must return {size} results")
            walls.append(wall)
            cpu += used
        return walls, cpu


def _share(cpu_s: float, wall_s: float) -> float:
    return round(min(1.0, cpu_s / wall_s), 4) if wall_s > 0 else 0.0


def machine() -> MachineProfile:
    """This machine: CPU model, cores, NVIDIA GPUs (from /proc, without importing torch)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpus: list[str] = []
    root = Path("/proc/driver/nvidia/gpus")
    try:
        for entry in sorted(root.iterdir()):
            info = (entry / "information").read_text(encoding="utf-8", errors="replace")
            gpus.append(
                next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model")), "GPU")
            )
    except OSError:
        pass
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return MachineProfile(
        cpu=cpu or "unknown",
        cores=cores,
        usable_cores=usable,
        gpus=gpus,
        python=sys.version.split()[0],
        platform=platform.platform(),
    )


# -- prediction ----------------------------------------------------------------------------
def simulate(
    plan: Any,
    profile: Profile | str | Path,
    rate: float | None = None,
    *,
    arrivals: Literal["poisson", "uniform"] | Sequence[float] | str = "poisson",
    duration_s: float = 10.0,
    seed: int = 0,
    timeout_s: float | None = None,
) -> SimulationResult:
    """Predict the latency and throughput of ``plan`` (an app or a Plan) from ``profile`` (a
    Profile or its file) at ``rate`` requests/s. ``arrivals``: ``poisson``, ``uniform``, a list of
    arrival times in seconds, or a trace file with one time per line."""
    from graphserve.compiler import arrivals as arrival_times
    from graphserve.compiler.simulate import simulate as run_simulation

    if not isinstance(plan, Plan):
        plan = _build(plan, None)
    if not isinstance(profile, Profile):
        profile = Profile.load(str(profile))
    if isinstance(arrivals, str) and arrivals not in ("poisson", "uniform"):
        arrivals = arrival_times.read_trace(arrivals)
    return run_simulation(plan, profile, rate, arrivals, duration_s, seed, timeout_s)  # type: ignore[arg-type]
