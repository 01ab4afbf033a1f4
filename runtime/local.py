"""The local backend: every replica is an object in this process, on this event loop.

Async methods run on the loop; sync methods run in threads so they never block it.
Each deployment's calls go to its least-loaded replica; a replica takes at most
``max_ongoing_requests`` calls at once, the rest wait in a FIFO queue of at most
``max_queued_requests`` (then :class:`OverloadedError`).

A replica's place is held until its call has really ended. An async call ends when it
is cancelled (a request past its deadline cancels its work); a thread cannot be
stopped, so a sync call keeps its place until its thread returns, even after its
request was answered 504. A model that must run one call at a time
(``max_ongoing_requests=1``, a GPU) never runs two. Each replica has its own threads,
``max_ongoing_requests`` of them (started when first needed), so a sync call never
waits for a thread another deployment holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from graphserve.errors import DeploymentStartError
from graphserve.plan import DeploymentPlan, Plan

from .batcher import close_batchers, observe_batches
from .construction import build_args, construction_order, load_target
from .routing import ReplicaRouter


class Replica:
    """One instance of a deployment, its threads and the calls it is running."""

    __slots__ = ("_methods", "down", "index", "instance", "ongoing", "pool")

    def __init__(self, instance: Any, index: int, pool: concurrent.futures.ThreadPoolExecutor):
        self.instance = instance
        self.index = index
        self.ongoing = 0
        self.down = False
        self.pool = pool
        self._methods: dict[str, tuple[Callable[..., Any], bool]] = {}

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


class ReplicaSet(ReplicaRouter[Replica]):
    """The replicas of one deployment, with least-loaded routing and bounded queueing."""

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        replica = await self.acquire()
        try:
            fn, is_async = replica.method(method)
            if not is_async:
                future = replica.pool.submit(fn, *args, **kwargs)
        except BaseException:
            self.release(replica)
            raise
        if is_async:
            try:
                return await fn(*args, **kwargs)
            finally:
                self.release(replica)
        return await self._in_thread(replica, future)

    async def _in_thread(self, replica: Replica, future: concurrent.futures.Future[Any]) -> Any:
        """The result of a sync call; its place is freed when its thread returns."""
        try:
            result = await asyncio.wrap_future(future)
            if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
                result = await result
            return result
        finally:
            if future.done():
                self.release(replica)
            else:  # the caller stopped waiting (its deadline): the place is free when the thread is
                loop = asyncio.get_running_loop()
                future.add_done_callback(lambda _: _call_soon(loop, self.release, replica))


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed (the server stopped): nothing to free
        loop.call_soon_threadsafe(fn, *args)


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
        self._running = False

    async def start(self) -> None:
        for name in construction_order(self.plan):
            dep = self.plan.deployment(name)
            replicas = [Replica(self._construct(dep, i), i, _threads(dep, i)) for i in range(dep.num_replicas)]
            self.sets[name] = ReplicaSet(dep, replicas)
        self._running = True

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

    async def health(self) -> str | None:
        return None if self._running else f"the deployments of graph {self.plan.name!r} are not running"

    async def stop(self) -> None:
        self._running = False
        for replica_set in self.sets.values():
            replica_set.close()
            for replica in replica_set.replicas:
                close_batchers(replica.instance)  # a batched function deployment keeps them on itself
                replica.pool.shutdown(wait=False, cancel_futures=True)
        self.sets.clear()

    def queue_depth(self) -> dict[str, int]:
        return {name: s.queued for name, s in self.sets.items()}

    def in_flight(self) -> dict[str, int]:
        return {name: s.ongoing for name, s in self.sets.items()}


def _threads(dep: DeploymentPlan, index: int) -> concurrent.futures.ThreadPoolExecutor:
    """A replica's threads: one per place (``max_ongoing_requests``), started when first needed."""
    return concurrent.futures.ThreadPoolExecutor(dep.max_ongoing_requests, thread_name_prefix=f"gs-{dep.name}-{index}")
