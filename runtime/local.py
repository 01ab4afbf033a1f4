"""The local backend: every replica is an object in this process, on this event loop.

Each replica is the shared replica core (``replica.py``): async methods run on the
loop, sync methods in the replica's own threads (``max_ongoing_requests`` of them) so
they never block it. Each deployment's calls go to its least-loaded replica; a replica
takes at most ``max_ongoing_requests`` calls at once, the rest wait in a FIFO queue of
at most ``max_queued_requests`` (then :class:`OverloadedError`) (``routing.py``). A
call's place is freed when the call has really ended: a sync call past its request's
deadline keeps it until its thread returns, while the request is answered 504 on time. A call's value is its result, so
:meth:`LocalBackend.fetch` has nothing to do and :meth:`LocalBackend.cancel` nothing
to cancel (the executor cancels its own tasks, which stops the calls they await).
A graph node's call is timed here and reported to that node's observer (``node_latency(node)``,
asked once per node: the node's latency histogram's ``observe``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from graphserve.errors import DeploymentStartError, NodeExecutionError, RequestError
from graphserve.plan import Plan

from .backend import BatchLimits
from .batcher import batch_limits, close_batchers, configure_batching, limits_by_method, observe_batches
from .replica import HandleFactory, Replica, ReplicaStartError, construct, construction_order, threads
from .routing import DeploymentLoad, ReplicaRouter

if TYPE_CHECKING:
    from .backend import Backend
    from .tracing import NodeSpan

#: ``observe(seconds)``: how long one call of a graph node took.
NodeLatency = Callable[[float], None]
#: ``on_batch(deployment, method, size)``: every batch a ``@gs.batch`` method sent.
BatchObserver = Callable[[str, str, int], None]


class LocalBackend:
    """Runs a Plan's deployments in this process (the embedded default); a :class:`Backend`."""

    cancels_calls = False  # a call stops with the executor's task that awaits it

    def __init__(
        self,
        plan: Plan,
        handle_factory: HandleFactory | None = None,
        on_batch: BatchObserver | None = None,
        node_latency: Callable[[str], NodeLatency] | None = None,
    ) -> None:
        self.plan = plan
        self.routers: dict[str, ReplicaRouter[Replica]] = {}
        self._handle_factory: HandleFactory = handle_factory or (lambda name: None)
        self._on_batch = on_batch
        self._node_latency = node_latency  # node -> its latency observer (asked once per node)
        self._latency: dict[str, NodeLatency] = {}
        self._running = False

    async def start(self) -> None:
        for name in construction_order(self.plan):
            dep = self.plan.deployment(name)
            target = self.plan.resolve(dep.import_path)  # the object of an in-process build
            replicas = []
            for index in range(dep.num_replicas):
                try:
                    instance = await construct(
                        name, dep.kind, target, dep.init_args, dep.init_kwargs, self._handle_factory, dep.user_config
                    )
                except ReplicaStartError as exc:
                    raise DeploymentStartError(exc.deployment, exc.message) from exc.__cause__
                configure_batching(instance, dep.batching)  # the plan's batching values (a function's too)
                if dep.batching and dep.kind == "class" and self._on_batch is not None:
                    observe_batches(instance, _batch_observer(self._on_batch, name))
                replicas.append(Replica(instance, index, threads(dep.max_ongoing_requests, f"gs-{name}-{index}")))
            router = self.routers[name] = ReplicaRouter(dep, replicas)
            for replica in replicas:
                replica.on_free = router.wake  # a cancelled sync call's place is free: hand it on
        self._running = True

    async def submit(
        self,
        node: str,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """A graph node's call (the hot path) on the least-loaded replica: acquire, mark the span,
        invoke, release; timed, its seconds reported to the node's own latency observer. The
        deployment's failure passes as it is (the executor names the node)."""
        router = self.routers[deployment]
        replica = router.try_acquire() or await router.acquire()
        if span is not None:
            span.replica = replica.index
        start = perf_counter()
        try:
            return await replica.invoke(method, args, kwargs)
        finally:
            router.release(replica)
            (self._latency.get(node) or self._latency_observer(node))(perf_counter() - start)

    def _latency_observer(self, node: str) -> NodeLatency:
        """Where ``node``'s call times go (asked of ``node_latency`` once per node)."""
        observe = self._latency[node] = self._node_latency(node) if self._node_latency is not None else _ignore
        return observe

    async def call(
        self,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """A handle's call (not a graph node: not timed); the deployment's own failure is
        wrapped, named after the method."""
        router = self.routers[deployment]
        replica = router.try_acquire() or await router.acquire()
        if span is not None:
            span.replica = replica.index
        try:
            return await replica.invoke(method, args, kwargs)
        except (RequestError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise NodeExecutionError.wrapping(f"{deployment}.{method}", deployment, exc) from exc
        finally:
            router.release(replica)

    async def fetch(self, values: list[Any]) -> list[Any]:
        return values

    def cancel(self, values: list[Any]) -> None:  # the executor's own tasks stop the calls
        return None

    def load(self) -> dict[str, DeploymentLoad]:
        loads = {}
        for name, router in self.routers.items():
            load = router.load()
            if router.replicas and self.plan.deployment(name).batching:
                load = dataclasses.replace(load, batching=limits_by_method(batch_limits(router.replicas[0].instance)))
            loads[name] = load
        return loads

    def batch_limits(self) -> dict[tuple[str, int], dict[str, BatchLimits]]:
        """The current limits of every replica's batchers, by (deployment, replica index)."""
        out: dict[tuple[str, int], dict[str, BatchLimits]] = {}
        for name, router in self.routers.items():
            seen: set[int] = set()
            for replica in router.replicas:
                if id(replica.instance) in seen:  # a function deployment: one object, one set of batchers
                    continue
                seen.add(id(replica.instance))
                limits = batch_limits(replica.instance)
                if limits:
                    out[(name, replica.index)] = limits
        return out

    async def health(self) -> str | None:
        return None if self._running else f"the deployments of graph {self.plan.name!r} are not running"

    async def stop(self) -> None:
        self._running = False
        for router in self.routers.values():
            router.close()
            for replica in router.replicas:
                close_batchers(replica.instance)  # a batched function deployment keeps them on itself
                replica.close()
        self.routers.clear()


def _ignore(seconds: float) -> None:
    return None


def _batch_observer(on_batch: BatchObserver, deployment: str) -> Callable[[str, int], None]:
    return lambda method, size: on_batch(deployment, method, size)


if TYPE_CHECKING:

    def _implements_the_protocol(backend: LocalBackend) -> Backend:
        return backend  # mypy: LocalBackend is a complete Backend
