"""A fused group's actor: one Ray actor process per replica hosting every member's replica core.

The compiler's actor fusion (``FusionPlan`` on the plan) names deployments that run in one
process. :class:`FusedActor` holds one replica of each member, built with the same replica
core as every backend (``replica.py``), and runs calls with the local backend's semantics:

- each member keeps its own limits: a :class:`~graphserve.runtime.routing.ReplicaRouter`
  over its one replica here admits at most its ``max_ongoing_requests`` calls, queues at
  most ``max_queued_requests`` more (then :class:`OverloadedError`, a 503);
- batching (``@gs.batch``) batches inside the process, across the calls in flight;
- handles between members are in-process calls through those routers; handles to
  deployments outside the group go to their actors (``ray_actor.RemoteHandles``);
- a failure names the member's node (``ReplicaCallError``), never the group.

The driver sends one request's calls into the group as one actor call, :meth:`FusedActor.steps`:
a list of steps (node, member, method, arguments), where an argument is a constant, an
earlier step's result, or a reference to a result from outside the batch (awaited by the
step that reads it). Steps run as soon as the steps they read are done (a chain one after
the other, branches concurrently), and only the results read outside the group come back
(``exports``). Several requests' batches started in one step of the driver's loop go as one
actor call, :meth:`FusedActor.batches`, each batch a task of its own (failing and cancelled
alone). Calls of one member made from outside (the driver's traced requests, other
actors' handles) come in by :meth:`FusedActor.call`, the member found from the node or
``deployment.method``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from graphserve.errors import NodeExecutionError, OverloadedError, RequestError
from graphserve.plan import DeploymentPlan

from .backend import BatchLimits
from .batcher import batch_limits, configure_batching, observe_batches
from .handle import DeploymentHandle
from .ray_actor import (
    RemoteHandles,
    ReplicaActor,
    ReplicaCallError,
    ReplicaSpec,
    _not_a_stream,
    resolve_nested_refs,
)
from .replica import Replica, ReplicaStartError, construct, threads
from .routing import ReplicaRouter
from .tracing import CURRENT, ActorRecord

STEP, EXTERNAL, VALUE = 0, 1, 2  # how a step's argument is given: an earlier step, a resolved argument, a constant
Arg = tuple[int, Any]
Step = tuple[str, str, str, tuple[Arg, ...], dict[str, Arg]]  # node, member deployment, method, args, kwargs
Batch = tuple[list[Step], tuple[int, ...], list[Any]]  # one request's steps, exports, external references


@dataclass
class FusedSpec:
    """What a fused group's actor needs (all picklable): each member's spec in construction
    order, their plans (limits), and which member each graph node calls."""

    group: str
    index: int
    members: list[ReplicaSpec]
    plans: dict[str, DeploymentPlan]
    nodes: dict[str, str] = field(default_factory=dict)  # graph node id -> member deployment


class _Member:
    __slots__ = ("replica", "router")

    def __init__(self, replica: Replica, router: ReplicaRouter[Replica]) -> None:
        self.replica = replica
        self.router = router


class FusedActor(ReplicaActor):
    """Every member of one fused group, one replica each (see the module docstring)."""

    def __init__(self, spec: FusedSpec) -> None:
        super().__init__(spec.members[0])
        self.fused = spec
        self._members: dict[str, _Member] = {}
        self._built: asyncio.Future[None] | None = None

    # -- construction ------------------------------------------------------------------
    async def ready(self) -> tuple[int, str]:
        await self._ensure_members()
        return os.getpid(), ray.get_runtime_context().get_node_id()

    async def _ensure_members(self) -> None:
        if self._built is None or (self._built.done() and self._built.exception() is not None):
            self._built = asyncio.ensure_future(self._build_members())
        await asyncio.shield(self._built)

    async def _build_members(self) -> None:
        loop = asyncio.get_running_loop()
        inside = set(self.fused.plans)
        members: dict[str, _Member] = {}
        for spec in self.fused.members:  # construction order: a handle's target first
            outside = replace(spec, handles={t: a for t, a in spec.handles.items() if t not in inside})
            remote = RemoteHandles(outside)

            def handle(name: str, remote: RemoteHandles = remote) -> DeploymentHandle:
                if name in inside:
                    return DeploymentHandle(name, self._handle_call, loop)
                return remote.handle(name, loop)

            try:
                instance = await construct(
                    spec.deployment, spec.kind, spec.target, spec.init_args, spec.init_kwargs, handle, spec.user_config
                )
            except ReplicaStartError as exc:  # its cause may not pickle: the message says it
                raise ReplicaStartError(exc.deployment, exc.message) from None
            configure_batching(instance, spec.batch_plans)
            if spec.batching and spec.kind == "class":
                observe_batches(instance, self._batch_observer(spec.deployment))
            replica = Replica(instance, spec.index, threads(spec.threads, f"gs-{spec.deployment}"), True)
            members[spec.deployment] = _Member(replica, ReplicaRouter(self.fused.plans[spec.deployment], [replica]))
        self._members = members

    def _batch_observer(self, deployment: str) -> Any:
        return lambda method, size: self._batches.append((deployment, method, size))

    # -- calls -------------------------------------------------------------------------
    async def _invoke(self, node: str, deployment: str, method: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        """One member's call, admitted by its router, timed for the driver's metrics."""
        if not self._members:
            await self._ensure_members()
        member = self._members[deployment]
        router = member.router
        replica = router.try_acquire() or await router.acquire()
        start = time.perf_counter()
        try:
            return _not_a_stream(await replica.invoke(method, args, kwargs), node)
        finally:
            router.release(replica)
            self._latencies.append((node, time.perf_counter() - start))

    async def _handle_call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A handle call from one member to another: in process, the local backend's semantics
        (in a traced request, recorded as a child of the calling node, as a remote call is)."""
        node = f"{deployment}.{method}"
        parent = CURRENT.get()
        record = ActorRecord(node, deployment, self.spec.index) if isinstance(parent, ActorRecord) else None
        token = CURRENT.set(record) if record is not None else None
        error: BaseException | None = None
        try:
            return await self._invoke(node, deployment, method, args, kwargs)
        except (RequestError, asyncio.CancelledError) as exc:
            error = exc
            raise
        except Exception as exc:  # the callee's failure, named after the method called
            error = exc
            raise NodeExecutionError.wrapping(node, deployment, exc) from exc
        finally:
            if record is not None and token is not None and isinstance(parent, ActorRecord):
                CURRENT.reset(token)
                parent.calls.append(record.to_json(error))

    def deployment_of(self, node: str) -> str:
        """The member that runs ``node``: a graph node's, else ``deployment.method``'s."""
        return self.fused.nodes.get(node) or node.rpartition(".")[0]

    async def _run(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call from outside the group (a traced request, another actor's handle)."""
        return await self._step(node, self.deployment_of(node), method, args, kwargs)

    async def _step(self, node: str, deployment: str, method: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        try:
            if any(isinstance(a, (list, tuple, dict)) for a in args):
                args = await resolve_nested_refs(args)
            if kwargs and any(isinstance(v, (list, tuple, dict)) for v in kwargs.values()):
                kwargs = await resolve_nested_refs(kwargs)
            return await self._invoke(node, deployment, method, args, kwargs)
        except ReplicaStartError as exc:
            raise ReplicaCallError(node, deployment, f"the replica could not be rebuilt: {exc.message}") from None
        except OverloadedError:  # a member (or a handle's target) is full: a 503, as on the driver
            raise
        except Exception as exc:  # the member's method: carried to the driver, naming its node
            raise ReplicaCallError.wrap(node, deployment, exc) from None

    async def steps(self, steps: list[Step], exports: tuple[int, ...], external: list[Any], /) -> Any:
        """Run one request's calls into the group (see the module docstring); the results of
        the steps ``exports`` names: one value, or a list when Ray expects several.

        ``external``: references to results computed outside the batch, awaited by the step
        that reads them when it is about to run (the other steps do not wait for them). A
        failed one fails the batch as it is, so the error keeps naming the node it came from."""
        self._received[0] += 1
        self._received[1] += 1
        out = await self._steps(steps, exports, external)
        return out[0] if len(out) == 1 else out

    async def batches(self, caller: str, key: int, batches: list[Batch], /) -> list[Any]:
        """Several requests' batches (:meth:`steps`' arguments) in one actor call, each run as its
        own task: the exported results of each in turn, a failed batch's error (a RayTaskError, which
        Ray stores as that reference's failure) in each of its places. ``caller`` and ``key`` name
        the call for :meth:`cancel_calls` (which cancels one batch)."""
        self._received[0] += 1
        self._received[1] += len(batches)
        done = await self.run_coalesced(caller, key, [self._steps(*batch) for batch in batches])
        out: list[Any] = []
        for (steps, exports, _), result in zip(batches, done, strict=True):
            if isinstance(result, BaseException):
                out.extend([self.item_error(steps[exports[0]][0], result)] * len(exports))
            else:
                out.extend(result)
        return out

    async def _steps(self, steps: list[Step], exports: tuple[int, ...], external: list[Any]) -> list[Any]:
        results: list[Any] = [None] * len(steps)

        async def value(arg: Arg) -> Any:
            kind, payload = arg
            if kind == STEP:
                return results[payload]
            return await external[payload] if kind == EXTERNAL else payload

        async def run(i: int) -> Any:
            node, deployment, method, args, kwargs = steps[i]
            values = tuple([await value(a) for a in args])
            named = {k: await value(a) for k, a in kwargs.items()} if kwargs else {}
            results[i] = await self._step(node, deployment, method, values, named)
            return results[i]

        reads = [{a[1] for a in (*s[3], *s[4].values()) if a[0] == STEP} for s in steps]
        if all(r <= {i - 1} for i, r in enumerate(reads)):  # a chain: one after the other, no tasks
            for i in range(len(steps)):
                await run(i)
        else:
            await self._concurrently(reads, run)
        return [results[i] for i in exports]

    @staticmethod
    async def _concurrently(reads: list[set[int]], run: Any) -> None:
        """Each step as a task that starts once the steps it reads are done."""
        tasks: list[asyncio.Task[Any]] = []

        async def after(i: int) -> Any:
            for j in reads[i]:
                await tasks[j]
            return await run(i)

        for i in range(len(reads)):
            tasks.append(asyncio.ensure_future(after(i)))
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    # -- metrics -----------------------------------------------------------------------
    @ray.method(concurrency_group="control")
    async def batch_limits(self) -> dict[str, dict[str, BatchLimits]]:
        """Member -> the current limits of its batchers (members without batches left out)."""
        out = {}
        for name, member in self._members.items():
            limits = batch_limits(member.replica.instance)
            if limits:
                out[name] = limits
        return out
