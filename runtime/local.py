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
from collections import deque
from collections.abc import Callable
from typing import Any

from graphserve.compiler.plan import DeploymentPlan, Plan
from graphserve.errors import DeploymentStartError, OverloadedError

from .batcher import close_batchers, observe_batches
from .loader import build_args, construction_order, load_target


class Replica:
    """One instance of a deployment and the calls it is running."""

    __slots__ = ("_loop", "_methods", "_pool", "index", "instance", "ongoing")

    def __init__(self, instance: Any, index: int, pool: concurrent.futures.Executor, loop: asyncio.AbstractEventLoop):
        self.instance = instance
        self.index = index
        self.ongoing = 0
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


class ReplicaSet:
    """The replicas of one deployment, with least-loaded routing and bounded queueing."""

    def __init__(self, plan: DeploymentPlan, replicas: list[Replica]):
        self.name = plan.name
        self.replicas = replicas
        self.limit = plan.max_ongoing_requests
        self.max_queued = plan.max_queued_requests
        self._waiters: deque[asyncio.Future[Replica]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def ongoing(self) -> int:
        return sum(r.ongoing for r in self.replicas)

    def _pick(self) -> Replica | None:
        replicas = self.replicas
        best = replicas[0]
        if len(replicas) > 1:
            for replica in replicas:
                if replica.ongoing < best.ongoing:
                    best = replica
        return best if best.ongoing < self.limit else None

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        replica = self._pick() if not self._waiters else None
        if replica is None:
            replica = await self._wait_for_replica()  # comes reserved
        else:
            replica.ongoing += 1
        try:
            return await replica.invoke(method, args, kwargs)
        finally:
            replica.ongoing -= 1
            if self._waiters:
                self._wake()

    async def _wait_for_replica(self) -> Replica:
        if 0 <= self.max_queued <= len(self._waiters):
            raise OverloadedError(
                f"deployment {self.name!r} is overloaded: {len(self._waiters)} requests queued "
                f"(max_queued_requests={self.max_queued})"
            )
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # got a replica just as we were cancelled
                waiter.result().ongoing -= 1
                self._wake()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            replica = self._pick()
            if replica is None:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                replica.ongoing += 1  # reserved for the waiter; released by its call()
                waiter.set_result(replica)


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
            replicas = [Replica(self._construct(dep, i), i, self._pool, loop) for i in range(dep.num_replicas)]
            self.sets[name] = ReplicaSet(dep, replicas)

    def _construct(self, dep: DeploymentPlan, index: int) -> Any:
        target = load_target(self.plan, dep.import_path, dep.name)
        if dep.kind == "function":
            return target
        handle = self._handle_factory or (lambda n: None)
        args, kwargs = build_args(dep.init_args, dep.init_kwargs, handle)
        try:
            instance = target(*args, **kwargs)
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
