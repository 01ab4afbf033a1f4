"""Request batching: single calls in, lists out.

A :class:`Batcher` queues single calls to a batched function and sends them as one
call with lists when the batch is full (``max_batch_size`` items, or as measured by
``batch_size_fn``) or when its oldest call has waited ``batch_wait_timeout_s``. Up to
``max_concurrent_batches`` batches run at once; while all slots are busy, calls keep
queueing, so the next batch leaves fuller. The limits are read from a live settings
object when a batch starts gathering, so ``set_max_batch_size`` applies from the next
batch on.

- The result may be any sequence with one item per input (a list, a tuple, a numpy
  array); a wrong length or a non-sequence is a :class:`BatchOutputError` that fails
  exactly the calls of that batch, as does an exception.
- **Streaming** (the function is an async generator): every caller gets an async
  iterator; each yielded sequence hands one item to each caller of the batch, and a
  ``StopIteration``/``StopAsyncIteration`` in a caller's slot ends that caller's stream.
- **Sizing**: with ``batch_size_fn`` the batch takes queued calls while the measured
  size stays within ``max_batch_size``; a call whose item alone is larger fails with
  :class:`BatchItemTooLargeError`.
- **Cancellation**: cancelled calls are dropped before their batch is sent; a batch
  whose callers have all gone (cancelled, or closed their streams) is cancelled.

``@gs.batch`` wrappers find their batcher with :func:`get_batcher`; one batcher per
(owner instance, method), created lazily in the event loop that first uses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from graphserve.errors import BatchItemTooLargeError, BatchOutputError
from graphserve.plan import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENT_BATCHES,
    BatchingPlan,
)

from .adaptive import AdaptiveLimits
from .backend import BatchLimits
from .background_loop import running_loop
from .tracing import CURRENT

__all__ = [
    "BatchLimits",
    "BatchOutputError",
    "Batcher",
    "LiveSettings",
    "close_batchers",
    "get_batcher",
    "observe_batches",
]

BatchObserver = Callable[[str, int], None]
STREAM_END_TOKENS = (StopIteration, StopAsyncIteration)


class LiveSettings(Protocol):
    """The live settings a batcher reads (``graphserve.batching.BatchSettings`` is one)."""

    max_batch_size: int
    batch_wait_timeout_s: float
    max_concurrent_batches: int
    batch_size_fn: Callable[[list[Any]], int] | None
    adaptive: bool
    latency_budget_s: float | None
    pinned: set[str]  # settings changed at run time (set_max_batch_size, ...): a plan does not replace them

    def derive(self) -> LiveSettings:
        """A copy one batcher may change (to the plan's values) without changing the others'."""
        ...


@dataclass
class _Limits:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S
    max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES
    batch_size_fn: Callable[[list[Any]], int] | None = None
    adaptive: bool = False
    latency_budget_s: float | None = None
    pinned: set[str] = dataclasses.field(default_factory=set)

    def derive(self) -> _Limits:
        return dataclasses.replace(self, pinned=set(self.pinned))


_END = object()  # a stream's end, in its channel


@dataclass
class _Pending:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]  # unary: the result; streaming: done when the caller is finished or gone
    enqueued: float
    span: Any  # a traced call's span or actor record (learns the batch size), else None
    channel: asyncio.Queue[Any] | None = None  # streaming: items, then _END or an exception
    running: asyncio.Task[None] | None = None  # the batch task running this call

    def item(self) -> Any:
        """What ``batch_size_fn`` measures: the first argument."""
        if self.args:
            return self.args[0]
        return next(iter(self.kwargs.values()), None)


class Batcher:
    """Gathers single calls of ``fn`` into batches; see the module docstring."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
        max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES,
        observers: list[BatchObserver] | None = None,
        batch_size_fn: Callable[[list[Any]], int] | None = None,
        *,
        limits: LiveSettings | None = None,
        streaming: bool = False,
        adaptive: bool = False,
        latency_budget_s: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.settings: LiveSettings = limits or _Limits(
            max_batch_size, batch_wait_timeout_s, max_concurrent_batches, batch_size_fn, adaptive, latency_budget_s
        )
        self.streaming = streaming
        # adaptive: the limits follow the latency budget (runtime/adaptive.py); without a budget
        # (no SLO planned) the planned values stay as they are
        live = self.settings
        self.adaptive = (
            AdaptiveLimits(
                live.max_batch_size, live.batch_wait_timeout_s, live.latency_budget_s, live.max_concurrent_batches
            )
            if live.adaptive and live.latency_budget_s
            else None
        )
        self.observers: list[BatchObserver] = observers if observers is not None else []
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_batches)
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], list[_Pending]] = {}
        self._signature = _signature(fn)

    @property
    def max_batch_size(self) -> int:
        return self.settings.max_batch_size

    @property
    def batch_wait_timeout_s(self) -> float:
        return self.settings.batch_wait_timeout_s

    @property
    def max_concurrent_batches(self) -> int:
        return self.settings.max_concurrent_batches

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- callers ---------------------------------------------------------------------------
    def _enqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Pending:
        loop = asyncio.get_running_loop()
        if self._signature is not None:  # one form per call, so calls mixing positions and keywords batch
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, bound.kwargs
        channel: asyncio.Queue[Any] | None = asyncio.Queue() if self.streaming else None
        pending = _Pending(args, kwargs, loop.create_future(), loop.time(), CURRENT.get(), channel)
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"batcher:{self.name}")
        self._notify()
        return pending

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        """One call; its result once its batch ran."""
        pending = self._enqueue(args, kwargs)
        try:
            return await pending.future
        finally:
            if pending.future.cancelled():
                self._abandon(pending)

    def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """One streaming call: an async iterator of this caller's items.

        Queued at once when called inside the event loop (as Ray Serve does), else on first use.
        """
        pending = self._enqueue(args, kwargs) if running_loop() is not None else None
        return self._drain(pending, args, kwargs)

    async def _drain(
        self, pending: _Pending | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        if pending is None:
            pending = self._enqueue(args, kwargs)
        assert pending.channel is not None
        try:
            while True:
                item = await pending.channel.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not pending.future.done():
                pending.future.cancel()
                self._abandon(pending)

    def _abandon(self, pending: _Pending) -> None:
        """A caller went away: cancel its batch when no caller of that batch is left."""
        task = pending.running
        if task is not None and not task.done() and all(p.future.done() for p in self._inflight.get(task, ())):
            task.cancel()

    # -- limits ------------------------------------------------------------------------------
    @property
    def size_limit(self) -> int:
        """The batch size limit now: the adaptive one (at most the setting), else ``max_batch_size``."""
        if self.adaptive is not None:
            return min(self.adaptive.limit, self.settings.max_batch_size)
        return self.settings.max_batch_size

    @property
    def wait_s(self) -> float:
        """The batch wait now: the adaptive one (at most the setting), else ``batch_wait_timeout_s``."""
        if self.adaptive is not None:
            return min(self.adaptive.wait_s, self.settings.batch_wait_timeout_s)
        return self.settings.batch_wait_timeout_s

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

    # -- the gathering loop ------------------------------------------------------------------
    def close(self) -> None:
        """Stop the batching loop; calls still queued fail instead of hanging."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for task in list(self._inflight):
            task.cancel()
        for pending in self._queue:
            _fail(pending, asyncio.CancelledError())
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

    def _drop_done(self) -> None:
        while self._queue and self._queue[0].future.done():  # cancelled while queued
            self._queue.popleft()

    def _measure(self, size_fn: Callable[[list[Any]], int] | None, batch: list[_Pending]) -> int:
        return len(batch) if size_fn is None else int(size_fn([p.item() for p in batch]))

    def _full(self, max_size: int, size_fn: Callable[[list[Any]], int] | None) -> bool:
        """Whether the queue holds a full batch (or the next call would overflow it)."""
        if size_fn is None:
            return len(self._queue) >= max_size
        batch: list[_Pending] = []
        for pending in self._queue:
            if pending.future.done():
                continue
            batch.append(pending)
            if self._measure(size_fn, batch) >= max_size:  # full, or the next call would overflow it
                return True
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._drop_done()
                while not self._queue:
                    await self._wait(None)
                    self._drop_done()
                # The limits of this batch: read once, when it starts gathering.
                max_size = self.size_limit
                wait_s = self.wait_s
                size_fn = self.settings.batch_size_fn
                if size_fn is not None and self._measure(size_fn, [self._queue[0]]) > self.settings.max_batch_size:
                    _fail(
                        self._queue.popleft(),
                        BatchItemTooLargeError(
                            f"batched {self.name}: the size of an item is greater than max_batch_size "
                            f"({self.settings.max_batch_size}); increase max_batch_size or check the batch_size_fn"
                        ),
                    )
                    continue
                deadline = self._queue[0].enqueued + wait_s
                while self._queue and not self._full(max_size, size_fn) and loop.time() < deadline:
                    await self._wait(deadline - loop.time())
                    self._drop_done()
                    if self._queue:
                        deadline = self._queue[0].enqueued + wait_s
                await self._slots.acquire()
                batch = self._take(max_size, size_fn)
                if not batch:
                    self._slots.release()
                    continue
                task = loop.create_task(self._execute(batch))
                for pending in batch:
                    pending.running = task
                self._inflight[task] = batch
                task.add_done_callback(self._forget)
        except BaseException as exc:  # the loop must never leave callers hanging
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for pending in self._queue:
                _fail(pending, error)
            self._queue.clear()
            raise

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)

    def _take(self, max_size: int, size_fn: Callable[[list[Any]], int] | None) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # skip calls cancelled while queued
                self._queue.popleft()
                continue
            if size_fn is None:
                if len(batch) >= max_size:
                    break
            elif batch and self._measure(size_fn, [*batch, pending]) > max_size:
                break  # it waits, first in line, for the next batch
            batch.append(self._queue.popleft())
        return batch

    # -- running a batch ---------------------------------------------------------------------
    async def _execute(self, batch: list[_Pending]) -> None:
        released = False
        try:
            for observe in self.observers:
                observe(self.name, len(batch))
            for pending in batch:
                if pending.span is not None:
                    pending.span.batch_size = len(batch)
            nargs = max(len(p.args) for p in batch)
            args = [[p.args[i] if i < len(p.args) else None for p in batch] for i in range(nargs)]
            keys = list(dict.fromkeys(k for p in batch for k in p.kwargs))
            kwargs = {k: [p.kwargs.get(k) for p in batch] for k in keys}
            if self.streaming:
                await self._stream_batch(batch, args, kwargs)
                return
            loop = asyncio.get_running_loop()
            started = loop.time()
            output = await self.fn(*args, **kwargs)
            if self.adaptive is not None:  # sizes in the limit's unit: batch_size_fn's measure, or items
                now = loop.time()
                size = self._measure(self.settings.batch_size_fn, batch)
                self.adaptive.observe(size, now - batch[0].enqueued, now - started, started)
            results = _items(output, len(batch), self.name)
            # The function is done: free its slot first and hand out the results one loop step
            # later, so a waiting batch starts before this batch's callers run on (answering them
            # would otherwise leave the device idle between batches).
            released = True
            self._slots.release()
            asyncio.get_running_loop().call_soon(_deliver, batch, results)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for pending in batch:
                _fail(pending, error)
            if not isinstance(exc, Exception):
                raise
        finally:
            if not released:
                self._slots.release()

    async def _stream_batch(self, batch: list[_Pending], args: list[list[Any]], kwargs: dict[str, list[Any]]) -> None:
        generator = self.fn(*args, **kwargs)
        try:
            async for step in generator:
                for pending, item in zip(batch, _items(step, len(batch), self.name), strict=True):
                    if pending.future.done():
                        continue  # this caller finished or went away
                    assert pending.channel is not None
                    if _is_end_token(item):
                        pending.channel.put_nowait(_END)
                        pending.future.set_result(None)
                    else:
                        pending.channel.put_nowait(item)
        finally:
            await generator.aclose()
        for pending in batch:
            if not pending.future.done():
                assert pending.channel is not None
                pending.channel.put_nowait(_END)
                pending.future.set_result(None)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``fn``'s signature when calls can be put in one form (no ``*args``/``**kwargs``), else None."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()):
        return None
    return signature


def _is_end_token(item: Any) -> bool:
    return (isinstance(item, type) and issubclass(item, STREAM_END_TOKENS)) or isinstance(item, STREAM_END_TOKENS)


def _items(results: Any, expected: int, name: str) -> list[Any]:
    """A batched function's results as a list, one per input (lists, tuples, numpy arrays, ...)."""
    if isinstance(results, list):
        items = results
    elif isinstance(results, (str, bytes, bytearray, Mapping)) or not hasattr(results, "__len__"):
        raise BatchOutputError(
            f"batched {name} must return a list (or another sequence) with one result per input: "
            f"got {type(results).__name__} for a batch of {expected}"
        )
    else:
        items = list(results)
    if len(items) != expected:
        raise BatchOutputError(
            f"batched {name} must return a list with one result per input (it doesn't preserve batch size): "
            f"got {len(items)} results for a batch of {expected}"
        )
    return items


def _fail(pending: _Pending, error: BaseException) -> None:
    if pending.future.done():
        return
    if pending.channel is None:
        if isinstance(error, asyncio.CancelledError):
            pending.future.cancel()
        else:
            pending.future.set_exception(error)
        return
    pending.channel.put_nowait(error)
    pending.future.set_result(None)


def _deliver(batch: list[_Pending], results: list[Any]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


_BATCHERS_ATTR = "__gs_batchers__"
_CONFIG_ATTR = "__gs_batch_plans__"
_OBSERVERS_ATTR = "__gs_batch_observers__"


def get_batcher(
    owner: Any,
    name: str,
    fn: Callable[..., Any],
    limits: LiveSettings | dict[str, Any],
    streaming: bool = False,
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
        live: LiveSettings = _Limits(**limits) if isinstance(limits, dict) else limits
        planned: dict[str, BatchingPlan] = getattr(owner, _CONFIG_ATTR, None) or {}
        chosen = planned.get(name.rsplit(".", 1)[-1]) or planned.get("__call__")
        if chosen is not None:  # the plan's values (the SLO planner's, or a plan file's) win,
            live = live.derive()  # in this batcher's own copy: the decorator's settings are shared
            _apply_plan(live, chosen)
        batcher = Batcher(fn, name, observers=observers, limits=live, streaming=streaming)
        batchers[name] = batcher
    return batcher


def _apply_plan(live: LiveSettings, chosen: BatchingPlan) -> None:
    """Make the settings the batcher reads carry the plan's values (the SLO planner's, or a plan file's),
    except those the code set at run time (``reconfigure`` calling ``set_max_batch_size``, ...)."""
    if "max_batch_size" not in live.pinned:
        live.max_batch_size = chosen.max_batch_size
    if "batch_wait_timeout_s" not in live.pinned:
        live.batch_wait_timeout_s = chosen.batch_wait_timeout_s
    live.max_concurrent_batches = chosen.max_concurrent_batches
    live.adaptive = chosen.adaptive
    live.latency_budget_s = chosen.latency_budget_s


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
