"""The Ray backend: the same Plan, with every replica a Ray actor.

``GraphRuntime(plan, backend="ray", address=None)`` (or ``gs.run(app, backend="ray")``)
joins the Ray instance this process already has, or the cluster at ``address``
(``"auto"``, ``"HOST:6379"``; ``ray://`` client mode is refused, see :data:`CLIENT_MODE_REFUSED`),
or starts a new local one (loopback only, no dashboard; ``ray.init(address="local")``: never a
cluster another process on this machine started, which a bare ``ray.init()`` would join). Ray is
imported only here, when this backend is asked for.

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

Call coalescing: an untraced call to a deployment that is not fused is not sent at once
either. :meth:`RayBackend.submit` routes it (a place on a replica, as always) and gathers it
with the other calls the loop starts on that replica in the same step; at the end of the step
(or sooner, when another call needs its reference as an argument) they go as one actor call,
:meth:`~graphserve.runtime.ray_actor.ReplicaActor.calls`, with ``num_returns`` set to their
number, so each call keeps its own ``ObjectRef`` (passed on actor to actor as before, failing
alone). A step with one call to a replica sends it as :meth:`ReplicaActor.call`, as before. A
fetch of a call still gathering waits for the end of the step instead of sending it early.
Cancelling one call of a coalesced actor call cancels that item in the actor
(:meth:`ReplicaActor.cancel_calls`), not the others.

Actor fusion (the plan's ``fusion.groups``, ``compiler/fusion.py``): a fused group runs as
one :class:`~graphserve.runtime.ray_fused.FusedActor` per replica hosting every member.
:meth:`RayBackend.submit` for a member does not send the call at once: it gathers the
calls of one request into the group (a call whose input is an unsent call of the same
group joins it) and sends them as one actor call at the end of the event loop's step, or
sooner when something outside the group needs a result (:meth:`RayBackend.fetch`, a call
outside the group). A chain of three fused no-ops is one Ray hop. The group has one
router (least in-flight group replica, up to the largest member ``max_ongoing_requests``);
each member's own limits, queue and batching apply inside the actor. A traced request
sends each member's call on its own (its spans are the members').

What a worker imports: a deployment's import path, so workers run the code in their
own copy of the module. Only a deployment that has no import path (defined inside a
function, or in ``__main__``, e.g. a script or a test) is shipped by value
(cloudpickled). An import path that does not import, or that names another object than
the one the graph was built with, is a :class:`DeploymentStartError` naming the
deployment, never a silent switch to pickling.

Options (``gs.run(app, backend="ray", **options)``, ``serve(..., backend_options=...)``):
``address``; ``shared`` (replicas owned by the graph's named controller and shared by several
ingress processes, see ``ray_controller.py``); ``namespace`` and ``runtime_env`` (passed to
``ray.init`` and to every actor, e.g. a ``working_dir`` when workers cannot import the
deployments' modules); ``num_cpus`` /
``num_gpus`` of a local instance started here; ``max_restarts`` (-1: always);
``start_timeout_s`` (replicas ready), ``connect_timeout_s`` (cluster answers);
``metrics_interval_s`` (how often batch sizes and call latencies, measured in the actors,
are collected from the replicas); ``health_timeout_s`` (how long ``/-/ready`` waits for Ray
and for each replica's ping).

Routing: least in-flight replica first; a replica holds at most
``max_ongoing_requests`` of the driver's calls, counted until their result exists;
the rest wait in a FIFO of at most ``max_queued_requests`` (then OverloadedError).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graphserve.errors import DeploymentStartError, GraphError, NodeExecutionError, OverloadedError, PlanError
from graphserve.plan import DeploymentPlan, Plan, ResourcesPlan, has_import_path
from graphserve.resources import Capacity, check_fits

from .backend import BatchLimits
from .batcher import limits_by_method
from .ray_placement import Placement
from .replica import ReplicaStartError, construction_order, load_target
from .routing import DeploymentLoad, ReplicaRouter
from .tracing import NodeSpan

if TYPE_CHECKING:
    from .backend import Backend

logger = logging.getLogger("graphserve.ray")

_owned_connections = 0  # backends sharing the Ray instance one of them started or connected


CLIENT_MODE_REFUSED = (
    "ray:// client mode is not supported: graphserve passes object references between actors and "
    "waits on them from the ingress's event loop, which Ray Client does not offer; run graphserve on a "
    "node of the cluster with --address auto (or the head's HOST:6379)"
)
SHARED_NAMESPACE = "graphserve"  # where shared graphs' controllers and replicas live unless told otherwise
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray puts a local cluster on 127.0.0.1


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
    """A node's result while it lives in Ray: its reference, and who computes it.

    A fused member's call waits in its ``batch`` until the batch is sent (``ref`` None until
    then; it stays None for a result only read inside the group); another call waits in its
    ``gathered`` until the end of the loop's step (``step``: its place in the actor call once sent)."""

    __slots__ = (
        "batch",
        "deployment",
        "done",
        "error",
        "gathered",
        "node",
        "parents",
        "ray_node",
        "ref",
        "replica",
        "step",
    )

    def __init__(self, ref: Any, node: str, deployment: str, replica: _Replica, parents: tuple[RayValue, ...]):
        self.ref = ref
        self.node = node
        self.deployment = deployment
        self.replica = replica
        self.ray_node = replica.ray_node  # where the call runs (a restarted replica may come back elsewhere)
        self.parents = parents
        self.done = False
        self.batch: _Batch | None = None
        self.gathered: _Gathered | None = None
        self.error: BaseException | None = None  # Ray refused to send it (e.g. an argument that does not pickle)
        self.step = 0

    def __repr__(self) -> str:
        return f"RayValue(node={self.node!r}, replica={self.deployment}#{self.replica.index})"


class _Replica:
    __slots__ = (
        "actor",
        "actor_id",
        "batches_methods",
        "calls_methods",
        "down",
        "gathered",
        "index",
        "ongoing",
        "pid",
        "ray_node",
        "steps_methods",
        "unsent",
    )

    def __init__(self, actor: Any, index: int) -> None:
        self.actor = actor
        self.steps_methods: dict[int, Any] = {}  # a fused actor's ``steps`` by how many results it returns
        self.calls_methods: dict[int, Any] = {}  # the actor's ``calls`` by how many results it returns
        self.batches_methods: dict[int, Any] = {}  # a fused actor's ``batches`` by how many results it returns
        self.unsent: list[_Batch] = []  # a fused actor's batches started in this loop step
        self.gathered: _Gathered | None = None  # the calls started on it in this loop step, not sent yet
        self.actor_id: str = actor._actor_id.hex()
        self.index = index
        self.ongoing = 0
        self.down = False  # died and is being restarted: other replicas are preferred
        self.ray_node: str | None = None  # the Ray node it runs on (and its pid), once ready
        self.pid: int | None = None


_Router = ReplicaRouter[_Replica]


class _Batch:
    """One request's calls into a fused group, gathered until sent as one actor call."""

    __slots__ = ("error", "external", "group", "index", "key", "replica", "router", "send", "sent", "steps", "values")

    def __init__(self, group: str, router: _Router, replica: _Replica, send: Callable[[_Batch], None]) -> None:
        self.send = send  # RayBackend._send
        self.group = group
        self.router = router
        self.replica = replica
        self.steps: list[Any] = []  # ray_fused.Step
        self.values: list[RayValue] = []
        self.external: list[Any] = []  # references of results from outside the batch (each awaited by its step)
        self.sent = False
        self.error: BaseException | None = None  # Ray refused the call (e.g. an argument that does not pickle)
        self.key: int | None = None  # sent with other requests' batches: that actor call's number
        self.index = 0  # and its place in it


class _Gathered:
    """The calls started on one replica in one step of the loop, sent together at its end."""

    __slots__ = ("calls", "key", "replica", "router", "send", "sent", "values")

    def __init__(self, router: _Router, replica: _Replica, send: Callable[[_Gathered], None]) -> None:
        self.send = send  # RayBackend._send_gathered
        self.router = router
        self.replica = replica
        self.calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []  # node, method, args, kwargs
        self.values: list[RayValue] = []
        self.sent = False
        self.key: int | None = None  # its actor call's number, when sent as one coalesced call


class RayBackend:
    """Runs a Plan's deployments as Ray actors (a :class:`Backend`); see the module docstring."""

    cancels_calls = True  # a call runs in its actor until cancelled there

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
        shared: bool = False,
        start_timeout_s: float = 300.0,
        connect_timeout_s: float = 120.0,
        metrics_interval_s: float = 1.0,
        health_timeout_s: float = 2.0,
    ) -> None:
        self.plan = plan
        self.address = address
        self.routers: dict[str, _Router] = {}
        self._on_batch = on_batch
        self._on_latency = on_latency
        self._init_options: dict[str, Any] = {
            "namespace": namespace or (SHARED_NAMESPACE if shared else None),
            "runtime_env": runtime_env,
        }
        # on every actor when this process had already joined Ray (ray.init never saw it); Ray accepts
        # only URIs there (a local working_dir must go to ray.init: connect from a fresh process)
        self._actor_env: dict[str, Any] = {"runtime_env": runtime_env} if runtime_env else {}
        if address is None:
            self._init_options.update(num_cpus=num_cpus, num_gpus=num_gpus)
        self._max_restarts = max_restarts
        # shared: the replicas belong to the graph's named controller (ray_controller.py), not to this process
        self._shared = shared
        self._namespace = namespace or SHARED_NAMESPACE
        self._controller: Any = None
        self._start_timeout_s = start_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._metrics_interval_s = metrics_interval_s
        self._health_timeout_s = health_timeout_s
        self._ray: Any = None
        self._owns_connection = False
        self._initialized_here = False  # this backend called ray.init (with the runtime_env)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._limits: dict[tuple[str, int], dict[str, BatchLimits]] = {}  # read at the last flush
        self._id = uuid.uuid4().hex[:12]  # actor names are unique per backend
        # actor fusion: member deployment -> its group's name; graph node -> the nodes that read it
        self._fused: dict[str, str] = {
            name: group.name for group in (plan.fusion.groups if plan.fusion else ()) for name in group.deployments
        }
        self._consumers: dict[str, frozenset[str]] = {n.id: frozenset(n.consumers) for n in plan.nodes}
        # places of finished calls, released on the loop (see _finished)
        self._releases: collections.deque[tuple[_Router, _Replica]] = collections.deque()
        self._release_pending = False
        self._coalesced_calls = 0  # numbers this backend's coalesced actor calls (cancel_calls names them)

    # -- lifecycle ---------------------------------------------------------------------
    async def _connect(self) -> Any:
        global _owned_connections
        if self.address is not None and self.address.startswith("ray://"):
            raise GraphError(f"cannot start graph {self.plan.name!r} on {self.address}: {CLIENT_MODE_REFUSED}")
        ray = _import_ray(start_local=self.address is None)
        if ray.is_initialized():
            if _owned_connections > 0:  # another backend of ours connected: share it
                _owned_connections += 1
                self._owns_connection = True
            return ray
        options = {k: v for k, v in self._init_options.items() if v is not None}
        where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
        try:
            if self.address is None:  # a new instance of our own ("local"), never one another process started
                ray.init(address="local", include_dashboard=False, logging_level="warning", **options)
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
        self._owns_connection = self._initialized_here = True
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
            check_fits(self._actor_units(), ray_capacity(ray.cluster_resources(), nodes), self.plan.name)
            await self._create_actors(ray)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        batching = self._on_batch is not None and any(d.batching for d in self.plan.deployments)
        if self._on_latency is not None or batching:
            self._poller = self._loop.create_task(self._poll_metrics(), name=f"graphserve-ray-metrics:{self.plan.name}")

    async def _create_actors(self, ray: Any) -> None:
        from .ray_actor import ReplicaActor
        from .ray_fused import FusedActor, FusedSpec

        placement = Placement(self.plan, [n for n in ray.nodes() if n.get("Alive")])
        creations: list[tuple[str, dict[str, Any], Any]] = []
        units: list[str] = []  # a deployment, or a fused group (created where its first member would be)
        for name in construction_order(self.plan):
            unit = self._fused.get(name, name)
            if unit not in units:
                units.append(unit)
        for unit in units:
            group = next((g for g in self.plan.fusion.groups if g.name == unit), None) if self.plan.fusion else None
            if group is None:
                dep = self.plan.deployment(unit)
                for index in range(dep.num_replicas):
                    options = {**placement.options(unit, index), **self._actor_options(dep)}
                    creations.append((self._actor_name(unit, index), options, self._spec(dep, index)))
                continue
            members = [m for m in construction_order(self.plan) if m in group.deployments]
            plans = {m: self.plan.deployment(m) for m in members}
            nodes = {n.id: n.deployment for n in self.plan.nodes if n.deployment in plans and not n.function}
            for index in range(plans[members[0]].num_replicas):
                options = placement.options(members[0], index)  # every member of replica i is on one node
                options["num_cpus"] = sum(placement.options(m, index)["num_cpus"] for m in members)
                options["num_gpus"] = sum(placement.options(m, index)["num_gpus"] for m in members)
                options.update(self._actor_options(*plans.values()))
                spec = FusedSpec(unit, index, [self._spec(plans[m], index) for m in members], plans, nodes)
                creations.append((self._actor_name(unit, index), options, spec))
        if self._shared:
            actors = await self._attach(ray, creations)
        else:
            classes = {kind: ray.remote(concurrency_groups={"control": 1})(kind) for kind in (ReplicaActor, FusedActor)}
            actors = []
            for actor_name, options, spec in creations:
                actor_class = classes[FusedActor if isinstance(spec, FusedSpec) else ReplicaActor]
                try:
                    configured = actor_class.options(**options, name=actor_name)
                except ValueError as exc:  # e.g. a local working_dir on a Ray this process had joined already
                    first = spec.members[0].deployment if isinstance(spec, FusedSpec) else spec.deployment
                    raise DeploymentStartError(first, f"Ray refused its actor options: {exc}") from None
                actors.append(configured.remote(spec))
        by_unit: dict[str, list[_Replica]] = {}
        for actor, (_, _, spec) in zip(actors, creations, strict=True):
            unit = spec.group if isinstance(spec, FusedSpec) else spec.deployment
            by_unit.setdefault(unit, []).append(_Replica(actor, spec.index))
        for unit, replicas in by_unit.items():
            group = next((g for g in self.plan.fusion.groups if g.name == unit), None) if self.plan.fusion else None
            if group is None:
                self.routers[unit] = _Router(self.plan.deployment(unit), replicas)
                continue
            router = _Router(_group_limits(group.name, [self.plan.deployment(m) for m in group.deployments]), replicas)
            for member in group.deployments:  # every member routes to the group's replicas
                self.routers[member] = router

    def _actor_units(self) -> list[DeploymentPlan]:
        """What each actor asks of the cluster: a deployment, or a fused group with its members'
        resources summed (GS201 names the group when one of its actors fits on no node)."""
        units = [d for d in self.plan.deployments if d.name not in self._fused]
        for group in self.plan.fusion.groups if self.plan.fusion else ():
            members = [self.plan.deployment(m) for m in group.deployments]
            resources = ResourcesPlan(
                num_cpus=sum(m.resources.num_cpus for m in members),
                num_gpus=sum(m.resources.num_gpus for m in members),
            )
            name = f"{group.name} (fused)"
            units.append(
                DeploymentPlan(
                    name=name, import_path="", kind="class", resources=resources, num_replicas=members[0].num_replicas
                )
            )
        return units

    def _spec(self, dep: DeploymentPlan, index: int) -> Any:
        from .ray_actor import ReplicaSpec

        handles = {
            t: [self._actor_name(self._fused.get(t, t), i) for i in range(self.plan.deployment(t).num_replicas)]
            for t in dep.handles
        }
        return ReplicaSpec(
            deployment=dep.name,
            index=index,
            kind=dep.kind,
            target=self._shipped_target(dep),
            init_args=dep.init_args,
            init_kwargs=dep.init_kwargs,
            handles=handles,
            retries={t: self.plan.deployment(t).max_retries for t in dep.handles},
            batching=bool(dep.batching),
            batch_plans=list(dep.batching),
            threads=dep.max_ongoing_requests,
            handle_plans={t: self.plan.deployment(t) for t in dep.handles},
            namespace=self._namespace if self._shared else None,
            user_config=dep.user_config,
        )

    def _actor_options(self, *deps: DeploymentPlan) -> dict[str, Any]:
        """Ray options for the actor of ``deps`` (one deployment, or a fused group's members)."""
        return {
            **(self._actor_env if not self._initialized_here else {}),
            "max_concurrency": sum(d.max_ongoing_requests for d in deps),
            "max_restarts": self._max_restarts,
            "max_task_retries": max(d.max_retries for d in deps),
        }

    async def _attach(self, ray: Any, creations: list[Any]) -> list[Any]:
        """Shared mode: the graph's controller creates the replicas once; this ingress attaches to them."""
        import hashlib

        from .ray_actor import root_cause
        from .ray_controller import controller_class, controller_name

        fingerprint = hashlib.sha256(self.plan.model_dump_json().encode()).hexdigest()
        self._controller = (
            controller_class()
            .options(
                name=controller_name(self.plan.name), namespace=self._namespace, lifetime="detached", get_if_exists=True
            )
            .remote(self.plan.name, self._namespace)
        )
        try:
            names = await self._controller.ensure.remote(fingerprint, creations)
            await self._controller.attach.remote(self._id)
        except Exception as exc:
            self._controller = None
            cause = root_cause(exc)
            if isinstance(cause, GraphError):
                raise cause from None
            what = f"{type(cause).__name__}: {cause}"
            raise GraphError(f"graph {self.plan.name!r}: its controller failed: {what}") from exc
        return [ray.get_actor(name, namespace=self._namespace) for name in names]

    def _actor_name(self, deployment: str, index: int) -> str:
        if self._shared:  # one name for every ingress that attaches
            return f"graphserve:{self.plan.name}:{deployment}:{index}"
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
                for name, replica, ref in pending:
                    current = name
                    replica.pid, replica.ray_node = await ref
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
        if self._ray is None:  # never connected: no actor, no poller
            return
        from ray.exceptions import RayError

        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.wait([poller])  # its end; a cancellation of stop itself still stops stop
            if not poller.cancelled() and poller.exception() is not None:
                logger.warning("the metrics poller of graph %r had failed: %r", self.plan.name, poller.exception())
            with contextlib.suppress(TimeoutError):  # flush_batches skips a replica that is dead or busy
                await asyncio.wait_for(self.flush_batches(), 5)
        for probe in list(self._probes):
            probe.cancel()
        routers, self.routers = self.routers, {}
        controller, self._controller = self._controller, None
        for router in {id(r): r for r in routers.values()}.values():  # a fused group's router once
            router.close()
            if controller is not None or self._shared:  # the controller's, not this process's
                continue
            for replica in router.replicas:
                with contextlib.suppress(RayError):  # already gone, or Ray itself is (RaySystemError)
                    self._ray.kill(replica.actor)
        if controller is not None:  # the last ingress to detach removes the replicas, then the controller
            with contextlib.suppress(RayError, TimeoutError):  # the controller died or does not answer
                if await asyncio.wait_for(controller.detach.remote(self._id), 30) == 0:
                    self._ray.kill(controller)
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
        if self._fused and span is None and deployment in self._fused:
            return await self._submit_fused(node, deployment, method, args, kwargs)
        router = self.routers.get(deployment)
        loop = self._loop
        if router is None or loop is None:
            raise GraphError(f"deployment {deployment!r} of graph {self.plan.name!r} is not running")
        replica = router.try_acquire() or await router.acquire()
        parents: list[RayValue] = []
        try:  # an input still gathering is sent now (its references must exist before this call's)
            if args:
                args = tuple([_unwrap(a, parents) for a in args])
            if kwargs:
                kwargs = {k: _unwrap(v, parents) for k, v in kwargs.items()}
        except BaseException:
            router.release(replica)
            raise
        if span is None:  # gathered with the other calls to this replica in this loop step
            gathered = replica.gathered
            if gathered is None:
                gathered = replica.gathered = _Gathered(router, replica, self._send_gathered)
                loop.call_soon(self._send_gathered, gathered)
            value = RayValue(None, node, deployment, replica, tuple(parents))
            value.gathered, value.step = gathered, len(gathered.calls)
            gathered.calls.append((node, method, args, kwargs))
            gathered.values.append(value)
            return value
        try:
            span.replica = replica.index
            carrier = span.trace.carrier(span)
            ref, span.record = replica.actor.call_traced.remote(node, method, carrier, *args, **kwargs)
        except BaseException:
            router.release(replica)
            raise
        value = RayValue(ref, node, deployment, replica, tuple(parents))
        ref.future().add_done_callback(lambda _: self._finished(value, router, replica))
        return value

    def _send_gathered(self, gathered: _Gathered) -> None:
        """Send the calls gathered on one replica (once): one alone as :meth:`ReplicaActor.call`,
        several as one coalesced :meth:`ReplicaActor.calls` with a reference per call. When Ray
        refuses the coalesced call (an argument that does not pickle) each call is sent on its
        own, so only that one fails (naming its node, when its result is read)."""
        if gathered.sent:
            return
        gathered.sent = True
        router, replica = gathered.router, gathered.replica
        if replica.gathered is gathered:
            replica.gathered = None
        values = gathered.values
        calls = gathered.calls
        if any(value.done for value in values):  # cancelled before they were sent: their places are free
            kept = [i for i, value in enumerate(values) if not value.done]
            values, calls = [values[i] for i in kept], [calls[i] for i in kept]
        if len(values) > 1 and self._send_coalesced(values, calls, router, replica, gathered):
            return
        for value, (node, method, args, kwargs) in zip(values, calls, strict=True):
            try:
                ref = replica.actor.call.remote(node, method, *args, **kwargs)
            except Exception as exc:  # e.g. an argument that does not pickle: its readers fail naming the node
                value.error = exc
                value.done = True
                router.release(replica)
                continue
            value.ref = ref
            ref.future().add_done_callback(lambda _, v=value: self._finished(v, router, replica))

    def _send_coalesced(
        self,
        values: list[RayValue],
        calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]],
        router: _Router,
        replica: _Replica,
        gathered: _Gathered,
    ) -> bool:
        """Several calls as one actor call with one reference each; False when Ray refused it."""
        method = replica.calls_methods.get(len(calls))
        if method is None:
            method = replica.calls_methods[len(calls)] = replica.actor.calls.options(num_returns=len(calls))
        self._coalesced_calls += 1
        key = self._coalesced_calls
        try:
            refs = method.remote(self._id, key, calls)
        except Exception:  # one of them does not pickle: send them one by one, so only that one fails
            return False
        gathered.key = key
        for index, (value, ref) in enumerate(zip(values, refs, strict=True)):
            value.ref, value.step = ref, index

        def finished(_: Any) -> None:  # on a Ray thread: the actor call's results all exist now
            for value in values:
                self._finished(value, router, replica)

        refs[-1].future().add_done_callback(finished)
        return True

    def _finished(self, value: RayValue, router: _Router, replica: _Replica) -> None:
        """A call's result exists (on a Ray thread): its place is released on the loop. Releases
        that come while one wake-up of the loop is pending share it (one self-pipe write, not one
        per call)."""
        value.done = True
        self._releases.append((router, replica))
        if not self._release_pending and self._loop is not None:
            self._release_pending = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release
                self._loop.call_soon_threadsafe(self._release_all)

    def _release_all(self) -> None:
        self._release_pending = False  # first: a release appended from now on wakes the loop again
        releases = self._releases
        while releases:
            router, replica = releases.popleft()
            router.release(replica)

    async def _submit_fused(
        self, node: str, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> RayValue:
        """A fused member's call: joins the unsent batch of its group it reads from, else starts
        one (sent at the end of this loop step, or when a result is needed outside the group)."""
        from .ray_fused import EXTERNAL, STEP, VALUE

        group = self._fused[deployment]
        batch: _Batch | None = None
        for arg in (*args, *kwargs.values()):
            if type(arg) is RayValue and arg.batch is not None and not arg.batch.sent and arg.batch.group == group:
                batch = arg.batch
                break
        if batch is None:
            router = self.routers.get(deployment)
            loop = self._loop
            if router is None or loop is None:
                raise GraphError(f"deployment {deployment!r} of graph {self.plan.name!r} is not running")
            replica = router.try_acquire() or await router.acquire()
            batch = _Batch(group, router, replica, self._send)
            if not replica.unsent:  # the step's batches to this replica go together at its end
                loop.call_soon(self._send_batches, replica)
            replica.unsent.append(batch)
        parents: list[RayValue] = []

        def step_arg(arg: Any) -> tuple[int, Any]:
            if type(arg) is RayValue:
                parents.append(arg)
                if arg.batch is batch:
                    return STEP, arg.step
                batch.external.append(_sent_ref(arg))
                return EXTERNAL, len(batch.external) - 1
            if isinstance(arg, (list, tuple, dict)):
                return VALUE, _unwrap(arg, parents)
            return VALUE, arg

        step_args = tuple(step_arg(a) for a in args)
        step_kwargs = {k: step_arg(v) for k, v in kwargs.items()} if kwargs else {}
        value = RayValue(None, node, deployment, batch.replica, tuple(parents))
        value.batch, value.step = batch, len(batch.steps)
        batch.steps.append((node, deployment, method, step_args, step_kwargs))
        batch.values.append(value)
        return value

    def _send(self, batch: _Batch) -> None:
        """Send a fused group's gathered calls as one actor call (once; see :meth:`_submit_fused`)."""
        if batch.sent:
            return
        batch.sent = True
        router, replica, values = batch.router, batch.replica, batch.values
        if not values:  # its first call failed before joining (an input that could not be sent)
            router.release(replica)
            return
        exports = self._exports(values)
        method = replica.steps_methods.get(len(exports))
        if method is None:
            method = replica.steps_methods[len(exports)] = replica.actor.steps.options(num_returns=len(exports))
        try:
            out = method.remote(batch.steps, exports, batch.external)  # nested: each step awaits its own
        except Exception as exc:  # e.g. an argument that does not pickle: its readers fail naming the node
            batch.error = exc
            router.release(replica)
            for value in values:
                value.done = True
            return
        refs = [out] if len(exports) == 1 else out
        for i, ref in zip(exports, refs, strict=True):
            values[i].ref = ref

        def finished(_: Any) -> None:  # on a Ray thread
            for value in values[:-1]:
                value.done = True
            self._finished(values[-1], router, replica)

        refs[-1].future().add_done_callback(finished)

    def _exports(self, values: list[RayValue]) -> tuple[int, ...]:
        """The steps of a batch whose results go back: those something outside the batch may read
        (a node the plan does not list, e.g. a driver-side handle's call, always may)."""
        inside = {v.node for v in values}
        consumers = self._consumers
        exports = tuple(i for i, v in enumerate(values) if v.node not in consumers or not consumers[v.node] <= inside)
        return exports or (len(values) - 1,)

    def _send_batches(self, replica: _Replica) -> None:
        """The end of a loop step: the batches started on a fused replica in it and not sent yet
        (several requests' calls into the group) go as one actor call, :meth:`FusedActor.batches`,
        with one reference per exported result; a batch alone is sent as :meth:`_send` sends it."""
        batches = [b for b in replica.unsent if not b.sent and b.values]
        for batch in replica.unsent:
            if not batch.sent and not batch.values:
                self._send(batch)  # (frees its place)
        replica.unsent = []
        if len(batches) == 1:
            self._send(batches[0])
        if len(batches) <= 1:
            return
        router = batches[0].router
        parts = [(batch.steps, self._exports(batch.values), batch.external) for batch in batches]
        count = sum(len(exports) for _, exports, _ in parts)
        method = replica.batches_methods.get(count)
        if method is None:
            method = replica.batches_methods[count] = replica.actor.batches.options(num_returns=count)
        self._coalesced_calls += 1
        key = self._coalesced_calls
        try:
            refs = method.remote(self._id, key, parts)
        except Exception:  # one of them does not pickle: send them one by one, so only that one fails
            for batch in batches:
                self._send(batch)
            return
        position = 0
        for index, (batch, (_, exports, _)) in enumerate(zip(batches, parts, strict=True)):
            batch.sent, batch.key, batch.index = True, key, index
            for i in exports:
                batch.values[i].ref = refs[position]
                position += 1

        def finished(_: Any) -> None:  # on a Ray thread: the actor call's results all exist now
            for batch in batches:
                for value in batch.values[:-1]:
                    value.done = True
                self._finished(batch.values[-1], router, replica)  # one place per batch

        refs[-1].future().add_done_callback(finished)

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
                    ref = value.ref
                    if ref is None:
                        gathered = value.gathered
                        while gathered is not None and not gathered.sent:  # sent at the end of this step
                            await asyncio.sleep(0)
                        batch = value.batch
                        while batch is not None and not batch.sent:  # likewise
                            await asyncio.sleep(0)
                        ref = _sent_ref(value)
                    value = await ref
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Ray's errors for this ref: mapped to the node that failed
                    from .ray_actor import root_cause

                    if isinstance(root_cause(exc), OverloadedError):  # a handle inside an actor was refused: 503
                        raise root_cause(exc) from None
                    raise self._node_error(value, exc)  # noqa: B904 - the error keeps its own __cause__
            out.append(value)
        return out

    def cancel(self, values: list[Any]) -> None:
        """Cancel the unfinished tasks behind ``values`` (a request failed or passed its deadline)."""
        from ray.exceptions import RayError

        for value in values:
            if type(value) is RayValue and not value.done:
                gathered = value.gathered
                if gathered is not None and not gathered.sent:  # never sent: dropped, its place is free
                    value.done = True
                    gathered.router.release(gathered.replica)
                    continue
                if gathered is not None and gathered.key is not None:  # one item of a coalesced call: only it
                    with contextlib.suppress(RayError):
                        value.replica.actor.cancel_calls.remote(self._id, gathered.key, value.step)
                    continue
                batch = value.batch
                if batch is not None and not batch.sent:  # never sent: nothing runs, its place is free
                    batch.sent = True
                    batch.router.release(batch.replica)
                    for unsent in batch.values:
                        unsent.done = True
                    continue
                if batch is not None and batch.key is not None:  # sent with other requests' batches: only it
                    for member in batch.values:
                        member.done = True  # (one cancel for the batch)
                    with contextlib.suppress(RayError):
                        value.replica.actor.cancel_calls.remote(self._id, batch.key, batch.index)
                    continue
                if value.ref is not None:
                    with contextlib.suppress(RayError):  # its task or actor is gone already, or Ray is
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
        return node_error(cause, origin.node, origin.deployment, origin.replica.index, retries, origin.ray_node)

    def _mark_down(self, router: _Router, replica: _Replica) -> None:
        """Route around a replica that died until Ray has restarted it and it rebuilt its instance.

        A replica that does not come back (its restarts are exhausted, or its constructor
        now fails) stays down: other replicas take its calls, and when it is the only one
        its calls fail naming it."""
        if replica.down or self._loop is None:
            return
        replica.down = True
        from ray.exceptions import ActorUnavailableError, RayError

        async def probe() -> None:
            while True:
                try:
                    async with asyncio.timeout(self._start_timeout_s):
                        replica.pid, replica.ray_node = await replica.actor.ready.remote()
                except TimeoutError:
                    continue  # still restarting (Ray has no room for it yet?): keep asking
                except ActorUnavailableError:  # between its death and Ray's restart: ask again shortly
                    await asyncio.sleep(0.05)
                    continue
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

    # -- health ------------------------------------------------------------------------
    async def health(self) -> str | None:
        """None when Ray answers and every deployment has a replica that answers a ping
        (in its control group: a busy replica still answers) within ``health_timeout_s``."""
        ray = self._ray
        if ray is None or not ray.is_initialized() or not self.routers:
            return f"graph {self.plan.name!r} is not running on Ray"
        try:
            nodes = await asyncio.wait_for(_in_daemon_thread(ray.nodes), self._health_timeout_s)
        except Exception as exc:  # the GCS is gone or does not answer
            return f"the Ray cluster does not answer: {type(exc).__name__}"
        if not any(node.get("Alive") for node in nodes):
            return "no node of the Ray cluster is alive"
        for name, router in list(self.routers.items()):
            answers = await asyncio.gather(*(self._pings(r) for r in router.replicas))
            if not any(answers):
                return f"deployment {name!r} has no live replica ({len(router.replicas)} did not answer a ping)"
        return None

    async def _pings(self, replica: _Replica) -> bool:
        try:
            async with asyncio.timeout(self._health_timeout_s):
                await replica.actor.ping.remote()
        except Exception:  # dead, restarting, or too slow: not live now
            return False
        return True

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
        units = {id(router): router for router in self.routers.values()}  # a fused group's router once
        batching = {self._fused.get(d.name, d.name) for d in self.plan.deployments if d.batching}
        for router in list(units.values()):
            for replica in router.replicas:
                try:
                    async with asyncio.timeout(5):
                        sizes, latencies = await replica.actor.drain_metrics.remote()
                        limits = await replica.actor.batch_limits.remote() if router.name in batching else {}
                except (TimeoutError, RayError):  # a dead or busy replica: its numbers come next time
                    continue
                for deployment, member_limits in limits.items():
                    self._limits[(deployment, replica.index)] = member_limits
                if self._on_batch is not None:
                    for deployment, method, size in sizes:
                        self._on_batch(deployment, method, size)
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

    def replica_nodes(self) -> dict[str, list[tuple[int | None, str | None]]]:
        """Per deployment, each replica's (pid, Ray node id) as last reported (at start, after a restart)."""
        return {name: [(r.pid, r.ray_node) for r in router.replicas] for name, router in self.routers.items()}

    def actors(self, deployment: str) -> list[Any]:
        """The actor handles of ``deployment``'s replicas, in replica order."""
        router = self.routers.get(deployment)
        if router is None:
            raise GraphError(f"graph {self.plan.name!r} has no running deployment {deployment!r}")
        return [r.actor for r in router.replicas]


@contextlib.contextmanager
def connect_briefly(address: str, namespace: str) -> Iterator[Any]:
    """Ray, joined at ``address`` in ``namespace`` for the block (unless this process already is)."""
    if address.startswith("ray://"):
        raise GraphError(CLIENT_MODE_REFUSED)
    ray = _import_ray(start_local=False)
    joined_here = not ray.is_initialized()
    if joined_here:
        try:
            ray.init(address=address, namespace=namespace, logging_level="warning", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GraphError(f"cannot reach the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from exc
    try:
        yield ray
    finally:
        if joined_here:
            ray.shutdown()


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


def _group_limits(name: str, members: list[DeploymentPlan]) -> DeploymentPlan:
    """The driver's limits for a fused group's replicas: up to the largest member's
    ``max_ongoing_requests`` in flight, a queue as short as the shortest member's (each
    member's own limits apply again inside the actor)."""
    queues = [m.max_queued_requests for m in members if m.max_queued_requests >= 0]
    return DeploymentPlan(
        name=name,
        import_path="",
        kind="class",
        max_ongoing_requests=max(m.max_ongoing_requests for m in members),
        max_queued_requests=min(queues) if queues else -1,
        max_retries=max(m.max_retries for m in members),
    )


def _unwrap(arg: Any, parents: list[RayValue]) -> Any:
    if type(arg) is RayValue:
        parents.append(arg)
        if arg.ref is None:  # a fused call not sent yet: send its batch now
            _sent_ref(arg)
        return arg.ref  # Ray resolves it in the worker: the driver never fetches it
    if isinstance(arg, (list, tuple, dict)):  # nested (a handle call's chained responses): the actor resolves them
        if isinstance(arg, dict):
            return {k: _unwrap(v, parents) for k, v in arg.items()}
        items = [_unwrap(v, parents) for v in arg]
        return items if isinstance(arg, list) else tuple(items)
    return arg


def _sent_ref(value: RayValue) -> Any:
    """``value``'s reference, its batch sent first if it is still gathering calls."""
    gathered = value.gathered
    if gathered is not None and not gathered.sent:  # another call needs it now: send its replica's calls
        gathered.send(gathered)
    batch = value.batch
    if batch is not None and not batch.sent:
        batch.send(batch)
    if value.ref is None:
        if value.error is not None:
            raise NodeExecutionError.wrapping(value.node, value.deployment, value.error)
        if batch is not None and batch.error is not None:
            raise NodeExecutionError.wrapping(value.node, value.deployment, batch.error)
        if gathered is not None:  # pragma: no cover - a cancelled call is read by nobody
            raise NodeExecutionError(value.node, value.deployment, "the call was cancelled before it was sent")
        raise GraphError(f"node {value.node!r} was read outside its fused group but not sent back")  # pragma: no cover
    return value.ref


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
