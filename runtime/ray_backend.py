"""The Ray backend: the same Plan, with every replica a Ray actor.

``GraphRuntime(plan, backend="ray", address=None)`` (or ``gs.run(app, backend="ray")``)
joins the Ray instance this process already has, or the cluster at ``address``
(``"auto"``, ``"ray://host:10001"``), or starts a local one (loopback only, no
dashboard). Ray is imported only here, when this backend is asked for.

Mapping: one :class:`~graphserve.runtime.ray_actor.ReplicaActor` per replica, with the
deployment's ``num_cpus``/``num_gpus``, ``max_concurrency = max_ongoing_requests``,
``max_restarts`` (a dead actor is restarted) and ``max_task_retries = max_retries``
(calls that were running on an actor that died are retried on its restart; without
retries they fail with a NodeExecutionError naming the node). Before any actor starts
the Plan is checked against the cluster's resources (GS201, naming the deployment).

It implements the :class:`~graphserve.runtime.backend.Backend` protocol. ``submit``
returns at once with a :class:`RayValue` (an ``ObjectRef`` and the node it computes):
the executor passes it on to the next call, so intermediate results move actor to
actor and the driver fetches only what it must look at (switch selectors, glue inputs,
fields, the output) with :meth:`RayBackend.fetch`, which also maps a failure back to
the node where it happened. A request that fails or passes its deadline cancels its
unfinished tasks (:meth:`RayBackend.cancel`). Call latencies are measured in the
actors and collected every ``metrics_interval_s`` (``on_latency``).

What a worker imports: a deployment's import path, so workers run the code in their
own copy of the module. Only a deployment that has no import path (defined inside a
function, or in ``__main__``, e.g. a script or a test) is shipped by value
(cloudpickled). An import path that does not import, or that names another object than
the one the graph was built with, is a :class:`DeploymentStartError` naming the
deployment, never a silent switch to pickling.

Options (``gs.run(app, backend="ray", **options)``, ``serve(..., backend_options=...)``):
``address``; ``namespace`` and ``runtime_env`` (passed to ``ray.init``, e.g. a
``working_dir`` when workers cannot import the deployments' modules); ``num_cpus`` /
``num_gpus`` of a local instance started here; ``max_restarts`` (-1: always);
``start_timeout_s`` (replicas ready), ``connect_timeout_s`` (cluster answers);
``metrics_interval_s`` (how often batch sizes and call latencies, measured in the actors,
are collected from the replicas).

Routing: least in-flight replica first; a replica holds at most
``max_ongoing_requests`` of the driver's calls, counted until their result exists;
the rest wait in a FIFO of at most ``max_queued_requests`` (then OverloadedError).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graphserve.errors import DeploymentStartError, GraphError, NodeExecutionError, PlanError
from graphserve.plan import DeploymentPlan, Plan, ReplicaPlan, has_import_path
from graphserve.resources import Capacity, check_fits

from .backend import BatchLimits
from .batcher import limits_by_method
from .replica import ReplicaStartError, construction_order, load_target
from .routing import DeploymentLoad, ReplicaRouter
from .tracing import NodeSpan

if TYPE_CHECKING:
    from .backend import Backend

logger = logging.getLogger("graphserve.ray")

_owned_connections = 0  # backends sharing the Ray instance one of them started or connected


_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray puts a local cluster on 127.0.0.1
NODE_RESOURCE_SHARE = 0.001  # how much of Ray's node:<address> resource a placed replica asks for


def _import_ray(start_local: bool) -> Any:
    if start_local:  # a cluster we start ourselves stays on loopback and sends no usage stats
        os.environ.setdefault(_LOOPBACK_SWITCH, "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise GraphError(f"the Ray backend needs ray (pip install 'graphserve[ray]'): {exc}") from exc
    if start_local and not ray.is_initialized():
        with contextlib.suppress(Exception):  # ray was imported before the switch was set: Ray reads it at import
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = os.environ[_LOOPBACK_SWITCH].lower() in ("1", "true")
    return ray


class RayValue:
    """A node's result while it lives in Ray: its reference, and who computes it."""

    __slots__ = ("deployment", "done", "node", "parents", "ref", "replica")

    def __init__(self, ref: Any, node: str, deployment: str, replica: _Replica, parents: tuple[RayValue, ...]):
        self.ref = ref
        self.node = node
        self.deployment = deployment
        self.replica = replica
        self.parents = parents
        self.done = False

    def __repr__(self) -> str:
        return f"RayValue(node={self.node!r}, replica={self.deployment}#{self.replica.index})"


class _Replica:
    __slots__ = ("actor", "actor_id", "down", "index", "ongoing")

    def __init__(self, actor: Any, index: int) -> None:
        self.actor = actor
        self.actor_id: str = actor._actor_id.hex()
        self.index = index
        self.ongoing = 0
        self.down = False  # died and is being restarted: other replicas are preferred


_Router = ReplicaRouter[_Replica]


class RayBackend:
    """Runs a Plan's deployments as Ray actors (a :class:`Backend`); see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        on_batch: Callable[[str, str, int], None] | None = None,
        address: str | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        *,
        namespace: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        max_restarts: int = -1,
        start_timeout_s: float = 300.0,
        connect_timeout_s: float = 120.0,
        metrics_interval_s: float = 1.0,
    ) -> None:
        self.plan = plan
        self.address = address
        self.routers: dict[str, _Router] = {}
        self._on_batch = on_batch
        self._on_latency = on_latency
        self._init_options: dict[str, Any] = {"namespace": namespace, "runtime_env": runtime_env}
        if address is None:
            self._init_options.update(num_cpus=num_cpus, num_gpus=num_gpus)
        self._max_restarts = max_restarts
        self._start_timeout_s = start_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._metrics_interval_s = metrics_interval_s
        self._ray: Any = None
        self._owns_connection = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._limits: dict[tuple[str, int], dict[str, BatchLimits]] = {}  # read at the last flush
        self._id = uuid.uuid4().hex[:12]  # actor names are unique per backend

    # -- lifecycle ---------------------------------------------------------------------
    async def _connect(self) -> Any:
        global _owned_connections
        ray = _import_ray(start_local=self.address is None)
        if ray.is_initialized():
            if _owned_connections > 0:  # another backend of ours connected: share it
                _owned_connections += 1
                self._owns_connection = True
            return ray
        options = {k: v for k, v in self._init_options.items() if v is not None}
        where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
        try:
            if self.address is None:  # starting one here cannot wait on an unreachable address
                ray.init(include_dashboard=False, logging_level="warning", **options)
            else:  # in a daemon thread: a cluster that never answers cannot stall this loop or the exit
                await asyncio.wait_for(
                    _in_daemon_thread(ray.init, address=self.address, logging_level="warning", **options),
                    self._connect_timeout_s,
                )
        except TimeoutError:
            raise GraphError(
                f"cannot start graph {self.plan.name!r}: {where} did not answer within {self._connect_timeout_s:g}s"
            ) from None
        except Exception as exc:
            raise GraphError(f"cannot start graph {self.plan.name!r} on {where}: {type(exc).__name__}: {exc}") from exc
        _owned_connections += 1
        self._owns_connection = True
        return ray

    def _disconnect(self) -> None:
        global _owned_connections
        if not self._owns_connection:
            return
        self._owns_connection = False
        _owned_connections -= 1
        if _owned_connections == 0 and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ray = self._ray = await self._connect()
        try:
            nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
            check_fits(self.plan.deployments, ray_capacity(ray.cluster_resources(), nodes), self.plan.name)
            self._create_actors(ray)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        batching = self._on_batch is not None and any(d.batching for d in self.plan.deployments)
        if self._on_latency is not None or batching:
            self._poller = self._loop.create_task(self._poll_metrics(), name=f"graphserve-ray-metrics:{self.plan.name}")

    def _create_actors(self, ray: Any) -> None:
        from .ray_actor import ReplicaActor, ReplicaSpec

        actor_class = ray.remote(concurrency_groups={"control": 1})(ReplicaActor)
        for name in construction_order(self.plan):
            dep = self.plan.deployment(name)
            target = self._shipped_target(dep)
            handles = {
                t: [self._actor_name(t, i) for i in range(self.plan.deployment(t).num_replicas)] for t in dep.handles
            }
            retries = {t: self.plan.deployment(t).max_retries for t in dep.handles}
            replicas = []
            for index in range(dep.num_replicas):
                spec = ReplicaSpec(
                    deployment=name,
                    index=index,
                    kind=dep.kind,
                    target=target,
                    init_args=dep.init_args,
                    init_kwargs=dep.init_kwargs,
                    handles=handles,
                    retries=retries,
                    batching=bool(dep.batching),
                    batch_plans=list(dep.batching),
                    threads=max(1, min(dep.max_ongoing_requests, 32)),
                )
                replica = self._replica_plan(name, index)
                actor = actor_class.options(
                    num_cpus=replica.num_cpus if replica is not None else dep.resources.num_cpus,
                    num_gpus=replica.num_gpus if replica is not None else dep.resources.num_gpus,
                    resources=self._node_resources(replica),
                    max_concurrency=dep.max_ongoing_requests,
                    max_restarts=self._max_restarts,
                    max_task_retries=dep.max_retries,
                    name=self._actor_name(name, index),
                ).remote(spec)
                replicas.append(_Replica(actor, index))
            self.routers[name] = _Router(dep, replicas)

    def _replica_plan(self, deployment: str, index: int) -> ReplicaPlan | None:
        for replica in self.plan.replicas:
            if replica.deployment == deployment and replica.index == index:
                return replica
        return None

    def _node_resources(self, replica: ReplicaPlan | None) -> dict[str, float]:
        """A replica planned on a cluster node with an address asks for Ray's ``node:<address>``
        resource, so Ray starts it on that node (the SLO planner's placement)."""
        if replica is None or self.plan.cluster is None:
            return {}
        for node in self.plan.cluster.nodes:
            if node.name == replica.node and node.address:
                return {f"node:{node.address}": NODE_RESOURCE_SHARE}
        return {}

    def _actor_name(self, deployment: str, index: int) -> str:
        return f"graphserve:{self.plan.name}:{self._id}:{deployment}:{index}"

    def _shipped_target(self, dep: DeploymentPlan) -> Any:
        """What a worker loads: the import path, or for a deployment without one the object
        itself (cloudpickled by value); see the module docstring."""
        try:
            obj = load_target(self.plan.resolve(dep.import_path))
            if not has_import_path(dep.import_path):
                return obj
            imported = load_target(dep.import_path)
        except PlanError as exc:
            raise DeploymentStartError(dep.name, f"Ray workers import deployments by path: {exc}") from None
        if imported is not obj:
            raise DeploymentStartError(
                dep.name,
                f"{dep.import_path!r} imports another object than the one this graph was built with "
                "(was the module attribute rebound?); Ray workers import deployments by path",
            )
        return dep.import_path

    async def _wait_ready(self) -> None:
        from .ray_actor import root_cause

        pending = [(name, r, r.actor.ready.remote()) for name, router in self.routers.items() for r in router.replicas]
        current = pending[0][0] if pending else ""
        try:
            async with asyncio.timeout(self._start_timeout_s):
                for name, _, ref in pending:
                    current = name
                    await ref
        except TimeoutError:
            raise DeploymentStartError(
                current,
                f"its replicas were not ready within {self._start_timeout_s:g}s "
                "(the Ray cluster may lack free resources for them)",
            ) from None
        except Exception as exc:
            cause = root_cause(exc)
            if isinstance(cause, ReplicaStartError):
                raise DeploymentStartError(cause.deployment, cause.message) from None
            raise DeploymentStartError(current, f"{type(cause).__name__}: {cause}") from exc

    async def stop(self) -> None:
        """Kill every actor; disconnect from Ray if this backend connected. Safe to call twice."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(BaseException):
                await poller
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush_batches(), 5)
        for probe in list(self._probes):
            probe.cancel()
        routers, self.routers = self.routers, {}
        for router in routers.values():
            router.close()
            for replica in router.replicas:
                with contextlib.suppress(Exception):
                    self._ray.kill(replica.actor)
        self._disconnect()

    # -- calls -------------------------------------------------------------------------
    async def submit(
        self,
        node: str,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> RayValue:
        """Start ``node``'s call on a replica; returns its RayValue without waiting for the result.

        ``span`` (a traced request): the actor also returns its record of the call (``span.record``)."""
        router = self.routers.get(deployment)
        loop = self._loop
        if router is None or loop is None:
            raise GraphError(f"deployment {deployment!r} of graph {self.plan.name!r} is not running")
        replica = router.try_acquire() or await router.acquire()
        parents: list[RayValue] = []
        if args:
            args = tuple(_unwrap(a, parents) for a in args)
        if kwargs:
            kwargs = {k: _unwrap(v, parents) for k, v in kwargs.items()}
        try:
            if span is None:
                ref = replica.actor.call.remote(node, method, *args, **kwargs)
            else:
                span.replica = replica.index
                carrier = span.trace.carrier(span)
                ref, span.record = replica.actor.call_traced.remote(node, method, carrier, *args, **kwargs)
        except BaseException:
            router.release(replica)
            raise
        value = RayValue(ref, node, deployment, replica, tuple(parents))

        def finished(_: Any) -> None:  # on a Ray thread
            value.done = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release
                loop.call_soon_threadsafe(router.release, replica)

        ref.future().add_done_callback(finished)
        return value

    async def call(
        self,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """One call and its result (what driver-side handles use)."""
        value = await self.submit(f"{deployment}.{method}", deployment, method, args, kwargs, span)
        try:
            (result,) = await self.fetch([value])
        except asyncio.CancelledError:
            self.cancel([value])
            raise
        return result

    async def fetch(self, values: list[Any]) -> list[Any]:
        """The results behind RayValues (other values as they are); a failure names its node."""
        out = []
        for value in values:
            if type(value) is RayValue:
                try:
                    value = await value.ref
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Ray's errors for this ref: mapped to the node that failed
                    raise self._node_error(value, exc)  # noqa: B904 - the error keeps its own __cause__
            out.append(value)
        return out

    def cancel(self, values: list[Any]) -> None:
        """Cancel the unfinished tasks behind ``values`` (a request failed or passed its deadline)."""
        for value in values:
            if type(value) is RayValue and not value.done:
                with contextlib.suppress(Exception):
                    self._ray.cancel(value.ref)

    def _node_error(self, value: RayValue, exc: BaseException) -> NodeExecutionError:
        from ray.exceptions import RayActorError

        from .ray_actor import node_error, root_cause

        cause = root_cause(exc)
        origin = value
        if isinstance(cause, RayActorError):  # find the call whose replica died, up the lineage
            actor_id = getattr(cause, "actor_id", None)
            origin = _find(value, lambda v: v.replica.actor_id == actor_id) or value
        router = self.routers.get(origin.deployment)
        retries = router.retries if router is not None else 0
        if isinstance(cause, RayActorError) and router is not None:
            self._mark_down(router, origin.replica)
        return node_error(cause, origin.node, origin.deployment, origin.replica.index, retries)

    def _mark_down(self, router: _Router, replica: _Replica) -> None:
        """Route around a replica that died until Ray has restarted it and it rebuilt its instance.

        A replica that does not come back (its restarts are exhausted, or its constructor
        now fails) stays down: other replicas take its calls, and when it is the only one
        its calls fail naming it."""
        if replica.down or self._loop is None:
            return
        replica.down = True
        from ray.exceptions import RayError

        async def probe() -> None:
            while True:
                try:
                    async with asyncio.timeout(self._start_timeout_s):
                        await replica.actor.ready.remote()
                except TimeoutError:
                    continue  # still restarting (Ray has no room for it yet?): keep asking
                except RayError as exc:
                    logger.error(
                        "replica %d of deployment %r did not come back and stays out of routing: %s",
                        replica.index,
                        router.name,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                    return
                break
            replica.down = False
            router.wake()

        task = self._loop.create_task(probe(), name=f"graphserve-ray-probe:{router.name}#{replica.index}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    # -- metrics measured in the actors ------------------------------------------------
    async def _poll_metrics(self) -> None:
        while True:
            await asyncio.sleep(self._metrics_interval_s)
            await self.flush_batches()

    async def flush_batches(self) -> int:
        """Report the batches replicas sent (``on_batch``) and their calls' latencies (``on_latency``)
        since the last flush, and read their batchers' current limits; returns how many batches."""
        from ray.exceptions import RayError

        count = 0
        for name, router in list(self.routers.items()):
            batching = bool(self.plan.deployment(name).batching)
            for replica in router.replicas:
                try:
                    async with asyncio.timeout(5):
                        sizes, latencies = await replica.actor.drain_metrics.remote()
                        limits = await replica.actor.batch_limits.remote() if batching else {}
                except (TimeoutError, RayError):  # a dead or busy replica: its numbers come next time
                    continue
                if limits:
                    self._limits[(name, replica.index)] = limits
                if self._on_batch is not None:
                    for method, size in sizes:
                        self._on_batch(name, method, size)
                if self._on_latency is not None:
                    for node, seconds in latencies:
                        self._on_latency(node, seconds)
                count += len(sizes)
        return count

    # -- introspection -----------------------------------------------------------------
    def load(self) -> dict[str, DeploymentLoad]:
        """Replicas busy with the driver's calls, and its queue; batching limits as the first
        replica's batchers reported them at the last flush."""
        loads = {}
        for name, router in self.routers.items():
            load = router.load()
            limits = self._limits.get((name, 0))
            if limits:
                load = dataclasses.replace(load, batching=limits_by_method(limits))
            loads[name] = load
        return loads

    def batch_limits(self) -> dict[tuple[str, int], dict[str, BatchLimits]]:
        """Every replica's batch limits as read at the last flush (every ``metrics_interval_s``)."""
        return dict(self._limits)

    def actors(self, deployment: str) -> list[Any]:
        """The actor handles of ``deployment``'s replicas, in replica order."""
        router = self.routers.get(deployment)
        if router is None:
            raise GraphError(f"graph {self.plan.name!r} has no running deployment {deployment!r}")
        return [r.actor for r in router.replicas]


def ray_capacity(totals: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> Capacity:
    """A Ray cluster's resources as a Capacity (GS201, ``graphserve/resources.py``).

    ``totals`` is ``ray.cluster_resources()``; ``nodes`` the resources of each live node."""
    have = {"cpus": float(totals.get("CPU", 0.0)), "gpus": float(totals.get("GPU", 0.0))}
    largest = {
        resource: max((float(n.get(key, 0.0)) for n in nodes), default=have[resource])
        for resource, key in (("cpus", "CPU"), ("gpus", "GPU"))
    }
    return Capacity(have["cpus"], have["gpus"], "the Ray cluster", "add {resource} to the Ray cluster", largest)


def _in_daemon_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """``fn`` in a daemon thread (one that never answers cannot keep the process alive)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=work, name="graphserve-ray-connect", daemon=True).start()
    return asyncio.wrap_future(future)


def _unwrap(arg: Any, parents: list[RayValue]) -> Any:
    if type(arg) is RayValue:
        parents.append(arg)
        return arg.ref  # Ray resolves it in the worker: the driver never fetches it
    return arg


def _find(value: RayValue, match: Callable[[RayValue], bool]) -> RayValue | None:
    """The most upstream value in ``value``'s lineage that matches (breadth first)."""
    found, level, seen = None, [value], set()
    while level:
        following: list[RayValue] = []
        for current in level:
            if id(current) in seen:
                continue
            seen.add(id(current))
            if match(current):
                found = current
            following.extend(current.parents)
        level = following
    return found


if TYPE_CHECKING:

    def _implements_the_protocol(backend: RayBackend) -> Backend:
        return backend  # mypy: RayBackend is a complete Backend
