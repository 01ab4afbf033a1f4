"""The local backend: every replica is an object in this process, on this event loop.

Async methods run on the loop; sync methods run in a thread pool so they never block
it. Each deployment's calls go to its least-loaded replica; a replica takes at most
``max_ongoing_requests`` calls at once, the rest wait in a FIFO queue of at most
``max_queued_requests`` (then :class:`OverloadedError`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

from graphserve.errors import DeploymentStartError
from graphserve.plan import DeploymentPlan, Plan

from .batcher import close_batchers, observe_batches
from .construction import build_args, construct, construction_order, load_target
from .routing import ReplicaRouter


class Replica:
    """One instance of a deployment and the calls it is running."""

    __slots__ = ("_loop", "_methods", "_pool", "down", "index", "instance", "ongoing")

    def __init__(self, instance: Any, index: int, pool: concurrent.futures.Executor, loop: asyncio.AbstractEventLoop):
        self.instance = instance
        self.index = index
        self.ongoing = 0
        self.down = False
        self._methods: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._pool = pool
        self._loop = loop

    def method(self, name: str) -> tuple[Callable[..., Any], bool]:
        found = self._methods.get(name)
        if found is None:
            if inspect.isfunction(self.instance) and name == "__call__":
                fn: Callable[..., Any] = self.instance
            else:
                fn = getattr(self.instance, name)
            is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
            found = self._methods[name] = (fn, is_async)
        return found

    async def invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn, is_async = self.method(name)
        if is_async:
            return await fn(*args, **kwargs)
        result = await self._loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
            result = await result
        return result


class ReplicaSet(ReplicaRouter[Replica]):
    """The replicas of one deployment, with least-loaded routing and bounded queueing."""

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        replica = await self.acquire()
        try:
            return await replica.invoke(method, args, kwargs)
        finally:
            self.release(replica)


class LocalBackend:
    """Runs a Plan's deployments in this process (the embedded default)."""

    local_values = True  # results are plain values: the executor never needs resolve()

    def __init__(
        self,
        plan: Plan,
        handle_factory: Callable[[str], Any] | None = None,
        on_batch: Callable[[str, str, int], None] | None = None,
    ):
        self.plan = plan
        self.sets: dict[str, ReplicaSet] = {}
        self._handle_factory = handle_factory
        self._on_batch = on_batch
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(32, 4 * (os.cpu_count() or 1)), thread_name_prefix="graphserve"
        )
        for name in construction_order(self.plan):
            dep = self.plan.deployment(name)
            replicas = [Replica(await self._construct(dep, i), i, self._pool, loop) for i in range(dep.num_replicas)]
            self.sets[name] = ReplicaSet(dep, replicas)

    async def _construct(self, dep: DeploymentPlan, index: int) -> Any:
        target = load_target(self.plan, dep.import_path, dep.name)
        if dep.kind == "function":
            return target
        handle = self._handle_factory or (lambda n: None)
        args, kwargs = build_args(dep.init_args, dep.init_kwargs, handle)
        try:
            instance = await construct(target, args, kwargs)
        except Exception as exc:
            raise DeploymentStartError(dep.name, f"constructor raised {type(exc).__name__}: {exc}") from exc
        if dep.batching and self._on_batch is not None:
            on_batch, name = self._on_batch, dep.name
            observe_batches(instance, lambda method, size: on_batch(name, method, size))
        return instance

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self.sets[deployment].call(method, args, kwargs)

    async def resolve(self, value: Any) -> Any:
        return value

    async def stop(self) -> None:
        for replica_set in self.sets.values():
            replica_set.close()
            for replica in replica_set.replicas:
                close_batchers(replica.instance)  # a batched function deployment keeps them on itself
        self.sets.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def queue_depth(self) -> dict[str, int]:
        return {name: s.queued for name, s in self.sets.items()}

    def in_flight(self) -> dict[str, int]:
        return {name: s.ongoing for name, s in self.sets.items()}
