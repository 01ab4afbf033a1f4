"""Request batching: single calls in, lists out.

A :class:`Batcher` queues single calls to a batched function and sends them as one
call with lists when the batch is full (``max_batch_size``) or when its oldest call has
waited ``batch_wait_timeout_s``. Up to ``max_concurrent_batches`` batches run at once;
while all slots are busy, calls keep queueing, so the next batch leaves fuller.
A wrong output length or an exception fails exactly the calls of that batch.
Cancelled calls (deadline passed) are dropped before their batch is sent.

``@gs.batch`` wrappers find their batcher with :func:`get_batcher`; one batcher per
(owner instance, method), created lazily in the event loop that first uses it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from graphserve.errors import GraphError
from graphserve.plan import BatchingPlan

from .adaptive import AdaptiveLimits
from .backend import BatchLimits
from .tracing import CURRENT

BatchObserver = Callable[[str, int], None]


class BatchOutputError(GraphError):
    """A batched function broke the list-in, list-out contract."""


@dataclass
class _Pending:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    enqueued: float
    span: Any  # a traced call's span or actor record (learns the batch size), else None


class Batcher:
    """Gathers single calls of ``fn`` into batches; see the module docstring."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        name: str,
        max_batch_size: int = 10,
        batch_wait_timeout_s: float = 0.01,
        max_concurrent_batches: int = 1,
        observers: list[BatchObserver] | None = None,
        adaptive: bool = False,
        latency_budget_s: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        # adaptive: the limits follow the latency budget (runtime/adaptive.py); without a budget
        # (no SLO planned) the planned values stay as they are
        self.adaptive = (
            AdaptiveLimits(max_batch_size, batch_wait_timeout_s, latency_budget_s)
            if adaptive and latency_budget_s
            else None
        )
        self.observers: list[BatchObserver] = observers if observers is not None else []
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(args, kwargs, future, loop.time(), CURRENT.get()))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"batcher:{self.name}")
        if len(self._queue) == 1 or len(self._queue) >= self.size_limit:
            self._notify()
        return await future

    @property
    def size_limit(self) -> int:
        """The batch size limit now: the adaptive one, else ``max_batch_size``."""
        return self.adaptive.limit if self.adaptive is not None else self.max_batch_size

    @property
    def wait_s(self) -> float:
        """The batch wait now: the adaptive one, else ``batch_wait_timeout_s``."""
        return self.adaptive.wait_s if self.adaptive is not None else self.batch_wait_timeout_s

    def limits(self) -> BatchLimits:
        """What ``/-/metrics`` shows of this batcher."""
        return {
            "adaptive": self.adaptive is not None,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "max_concurrent_batches": self.max_concurrent_batches,
            "size_limit": self.size_limit,
            "wait_s": round(self.wait_s, 6),
            "latency_budget_s": self.adaptive.budget_s if self.adaptive is not None else None,
        }

    def close(self) -> None:
        """Stop the batching loop; calls still queued fail instead of hanging."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for task in list(self._inflight):
            task.cancel()
        for pending in self._queue:
            if not pending.future.done():
                pending.future.cancel()
        self._queue.clear()

    def _notify(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = loop.call_later(timeout, self._notify) if timeout is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self._queue:
                    await self._wait(None)
                remaining = self._queue[0].enqueued + self.wait_s - loop.time()
                while self._queue and len(self._queue) < self.size_limit and remaining > 0:
                    await self._wait(remaining)
                    if self._queue:
                        remaining = self._queue[0].enqueued + self.wait_s - loop.time()
                await self._slots.acquire()
                batch = self._take()
                if not batch:
                    self._slots.release()
                    continue
                task = loop.create_task(self._execute(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        except BaseException as exc:  # the loop must never leave callers hanging
            for pending in self._queue:
                if not pending.future.done():
                    pending.future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            self._queue.clear()
            raise

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        limit = self.size_limit
        while self._queue and len(batch) < limit:
            pending = self._queue.popleft()
            if not pending.future.done():  # skip calls cancelled while queued
                batch.append(pending)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        released = False
        try:
            for observe in self.observers:
                observe(self.name, len(batch))
            for pending in batch:
                if pending.span is not None:
                    pending.span.batch_size = len(batch)
            nargs = len(batch[0].args)
            args = [[p.args[i] if i < len(p.args) else None for p in batch] for i in range(nargs)]
            kwargs = {k: [p.kwargs.get(k) for p in batch] for k in batch[0].kwargs}
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await self.fn(*args, **kwargs)
            if self.adaptive is not None:
                now = loop.time()
                self.adaptive.observe(len(batch), now - batch[0].enqueued, now - started)
            if not isinstance(results, (list, tuple)) or len(results) != len(batch):
                got = f"{len(results)} results" if isinstance(results, (list, tuple)) else type(results).__name__
                raise BatchOutputError(
                    f"batched {self.name} must return a list with one result per input: "
                    f"got {got} for a batch of {len(batch)}"
                )
            # The function is done: free its slot first and hand out the results one loop step
            # later, so a waiting batch starts before this batch's callers run on (answering them
            # would otherwise leave the device idle between batches).
            released = True
            self._slots.release()
            asyncio.get_running_loop().call_soon(_deliver, batch, results)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        finally:
            if not released:
                self._slots.release()


def _deliver(batch: list[_Pending], results: list[Any] | tuple[Any, ...]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


_BATCHERS_ATTR = "__gs_batchers__"
_CONFIG_ATTR = "__gs_batch_plans__"
_OBSERVERS_ATTR = "__gs_batch_observers__"


def get_batcher(
    owner: Any,
    name: str,
    fn: Callable[..., Awaitable[Any]],
    config: dict[str, Any],
) -> Batcher:
    """The batcher of ``owner``'s batched method ``name``, created on first use."""
    batchers: dict[str, Batcher] | None = getattr(owner, _BATCHERS_ATTR, None)
    if batchers is None:
        batchers = {}
        try:
            object.__setattr__(owner, _BATCHERS_ATTR, batchers)
        except (AttributeError, TypeError):  # e.g. a class with __slots__
            batchers = _MODULE_BATCHERS.setdefault(id(owner), {})
    batcher = batchers.get(name)
    if batcher is None:
        observers = getattr(owner, _OBSERVERS_ATTR, None)
        if observers is None:
            observers = []
            _set(owner, _OBSERVERS_ATTR, observers)
        planned: dict[str, BatchingPlan] = getattr(owner, _CONFIG_ATTR, None) or {}
        chosen = planned.get(name.rsplit(".", 1)[-1]) or planned.get("__call__")
        if chosen is not None:  # the plan's values (the SLO planner's, or a plan file's) win
            config = chosen.model_dump(exclude={"method"})
        batcher = Batcher(fn, name, observers=observers, **config)
        batchers[name] = batcher
    return batcher


def configure_batching(owner: Any, plans: list[BatchingPlan]) -> None:
    """Make ``owner``'s batched methods run with the plan's values (size, wait, adaptive, budget)
    instead of the ``@gs.batch`` decorator's."""
    if plans:
        _set(owner, _CONFIG_ATTR, {b.method: b for b in plans})


def batch_limits(owner: Any) -> dict[str, BatchLimits]:
    """The current limits of ``owner``'s batchers (``/-/metrics``)."""
    batchers: dict[str, Batcher] = getattr(owner, _BATCHERS_ATTR, None) or _MODULE_BATCHERS.get(id(owner), {})
    return {name: b.limits() for name, b in sorted(batchers.items())}


def close_batchers(owner: Any) -> None:
    """Stop every batcher of ``owner`` (at shutdown); a later call starts fresh ones."""
    batchers: dict[str, Batcher] = getattr(owner, _BATCHERS_ATTR, None) or _MODULE_BATCHERS.pop(id(owner), {})
    for batcher in batchers.values():
        batcher.close()
    batchers.clear()


def limits_by_method(limits: dict[str, BatchLimits]) -> dict[str, BatchLimits]:
    """``batch_limits(owner)`` keyed by method name alone (``Model.predict`` -> ``predict``),
    as the live page shows a deployment's batching."""
    return {name.rpartition(".")[2]: values for name, values in limits.items()}


def observe_batches(owner: Any, observer: BatchObserver) -> None:
    """Call ``observer(size)`` for every batch any batched method of ``owner`` sends."""
    existing = getattr(owner, _OBSERVERS_ATTR, None)
    if existing is None:
        existing = []
        _set(owner, _OBSERVERS_ATTR, existing)
    existing.append(observer)


def _set(owner: Any, attr: str, value: Any) -> None:
    try:
        object.__setattr__(owner, attr, value)
    except (AttributeError, TypeError):
        pass


_MODULE_BATCHERS: dict[int, dict[str, Batcher]] = {}
