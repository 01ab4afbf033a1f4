"""``@gs.batch``: list in, list out, as Ray Serve's ``@serve.batch``.

The decorated async method receives lists and returns a list (or any sequence, e.g. a
numpy array) of the same length. Callers (graph nodes, handles, or the deployment's own
``__call__``) pass single items; the wrapper hands them to the runtime's batcher, which
gathers them into batches.

- **Streaming**: on an ``async def`` generator each yielded list is one step for every
  caller of the batch, and each caller gets an async generator of its own items. A caller
  whose slot holds ``StopIteration`` (or ``StopAsyncIteration``) is finished.
- **Sizing**: ``batch_size_fn(items) -> int`` measures a batch (total tokens, nodes, ...)
  instead of counting its items; a batch is full when the next item would exceed
  ``max_batch_size``, and an item that alone exceeds it fails with
  :class:`~graphserve.errors.BatchItemTooLargeError`.
- **At run time**: ``method.set_max_batch_size(n)`` and ``method.set_batch_wait_timeout_s(s)``
  change the settings from the next batch on (e.g. in ``reconfigure``);
  ``get_max_batch_size()`` / ``get_batch_wait_timeout_s()`` (and Ray's ``_get_...`` names) read them.
- **Checked at decoration**, with Ray Serve's exception types: a plain ``def``
  (:class:`BatchOptionTypeError`, a ``TypeError``), ``max_batch_size`` not a positive
  integer, a negative or non-numeric ``batch_wait_timeout_s``
  (:class:`BatchOptionError`, a ``ValueError``, or the ``TypeError`` for a wrong type).

The options are also recorded on the wrapper so the compiler can check and plan them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from graphserve.dsl import BATCH_ATTR, BATCH_EXPLICIT_ATTR, batch_config
from graphserve.errors import BatchOptionError, BatchOptionTypeError
from graphserve.plan import DEFAULT_BATCH_WAIT_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_CONCURRENT_BATCHES

F = TypeVar("F", bound=Callable[..., Any])

SETTINGS_ATTR = "__gs_batch_settings__"

DEFAULTS: dict[str, Any] = {
    "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
    "batch_wait_timeout_s": DEFAULT_BATCH_WAIT_TIMEOUT_S,
    "max_concurrent_batches": DEFAULT_MAX_CONCURRENT_BATCHES,
}


@dataclass
class BatchSettings:
    """The live settings of one ``@gs.batch`` function, shared by all its batchers.

    Batchers read them when a batch starts gathering, so a change applies from the next batch.
    """

    max_batch_size: int
    batch_wait_timeout_s: float
    max_concurrent_batches: int
    batch_size_fn: Callable[[list[Any]], int] | None = None
    # the batcher adapts its size limit and wait to ``latency_budget_s`` (set from the plan)
    adaptive: bool = False
    latency_budget_s: float | None = None
    # settings changed at run time (``set_max_batch_size``, e.g. from ``reconfigure``): a plan's
    # values no longer replace them
    pinned: set[str] = field(default_factory=set, compare=False)
    # copies made for batchers that run with a plan's values; the run-time setters reach them too
    _derived: list[weakref.ref[BatchSettings]] = field(default_factory=list, init=False, repr=False, compare=False)

    def derive(self) -> BatchSettings:
        """A copy for one batcher, which a plan may change without touching the settings other
        deployments (or other methods) share; ``set_max_batch_size`` and the like still reach it."""
        copy = dataclasses.replace(self, pinned=set(self.pinned))
        self._derived.append(weakref.ref(copy))
        return copy

    def set(self, name: str, value: Any) -> None:
        """Change one setting here and in every live copy (the run-time setters)."""
        setattr(self, name, value)
        self.pinned.add(name)
        alive = []
        for ref in self._derived:
            copy = ref()
            if copy is not None:
                copy.set(name, value)
                alive.append(ref)
        self._derived[:] = alive

    def static_config(self) -> dict[str, Any]:
        """The options as the compiler records them in the Plan."""
        return {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "max_concurrent_batches": self.max_concurrent_batches,
        }


def _max_batch_size(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BatchOptionTypeError(f"max_batch_size must be integer >= 1, got {value!r}")
    if value < 1:
        raise BatchOptionError(f"max_batch_size must be an integer >= 1, got {value!r}")
    return value


def _batch_wait_timeout_s(value: Any) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise BatchOptionTypeError(f"batch_wait_timeout_s must be a float >= 0, got {value!r}")
    if value < 0:
        raise BatchOptionError(f"batch_wait_timeout_s must be a float >= 0, got {value!r}")
    return float(value)


def _max_concurrent_batches(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BatchOptionTypeError(f"max_concurrent_batches must be an integer >= 1, got {value!r}")
    if value < 1:
        raise BatchOptionError(f"max_concurrent_batches must be an integer >= 1, got {value!r}")
    return value


def _check_async(fn: Any) -> None:
    if not callable(fn):
        raise BatchOptionTypeError("@serve.batch can only be used to decorate functions or methods.")
    if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
        name = getattr(fn, "__qualname__", repr(fn))
        raise BatchOptionTypeError(
            f"Functions decorated with @serve.batch must be 'async def': {name} is a plain def; "
            f"write `async def {getattr(fn, '__name__', 'method')}(...)`"
        )


def unbatched(fn: Any) -> Callable[..., Any] | None:
    """The list-in, list-out function under a ``@gs.batch`` wrapper (unbound), or None.

    The profiler calls it directly with whole batches to measure the cost of each size."""
    if batch_config(fn) is None:
        return None
    raw: Callable[..., Any] = fn.__wrapped__  # set by functools.wraps in batch()
    return raw


@overload
def batch(_fn: F) -> F: ...


@overload
def batch(
    _fn: None = None,
    *,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    max_concurrent_batches: int | None = None,
    batch_size_fn: Callable[[list[Any]], int] | None = None,
    adaptive: bool | None = None,
) -> Callable[[F], F]: ...


def batch(
    _fn: Any = None,
    *,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    max_concurrent_batches: int | None = None,
    batch_size_fn: Callable[[list[Any]], int] | None = None,
    adaptive: bool | None = None,
) -> Any:
    """Batch calls to an async method: bare ``@gs.batch`` or ``@gs.batch(max_batch_size=32)``.

    Options left out take the defaults (10 items, 10 ms, one batch at a time); in an app with an
    SLO the planner chooses them instead, and keeps the ones written here. ``adaptive=True`` lets
    the batcher shrink its size limit and wait at run time to stay inside the node's latency
    budget (on by default for batch sizes the planner chose; ``adaptive=False`` turns it off).
    The options given are checked here, with Ray Serve's exception types."""
    if _fn is not None:
        _check_async(_fn)
    if batch_size_fn is not None and not callable(batch_size_fn):
        raise BatchOptionTypeError(f"batch_size_fn must be a callable or None, got {type(batch_size_fn)}")
    if adaptive is not None and not isinstance(adaptive, bool):
        raise BatchOptionTypeError(f"adaptive must be True, False or None, got {adaptive!r}")
    given = {
        "max_batch_size": None if max_batch_size is None else _max_batch_size(max_batch_size),
        "batch_wait_timeout_s": None if batch_wait_timeout_s is None else _batch_wait_timeout_s(batch_wait_timeout_s),
        "max_concurrent_batches": (
            None if max_concurrent_batches is None else _max_concurrent_batches(max_concurrent_batches)
        ),
    }
    explicit = sorted(k for k, v in given.items() if v is not None)
    config: dict[str, Any] = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    if batch_size_fn is not None:  # max_batch_size is then a measure (tokens, nodes), not a count
        config["sized_by_fn"] = True
    if adaptive is not None:
        config["adaptive"] = adaptive
        explicit.append("adaptive")
    settings = BatchSettings(
        config["max_batch_size"],
        config["batch_wait_timeout_s"],
        config["max_concurrent_batches"],
        batch_size_fn,
        adaptive=bool(adaptive),
    )

    def wrap(fn: Any) -> Any:
        _check_async(fn)
        wrapper = _wrap(fn, dataclasses.replace(settings, pinned=set()))
        setattr(wrapper, BATCH_ATTR, dict(config))
        setattr(wrapper, BATCH_EXPLICIT_ATTR, list(explicit))
        return wrapper

    if _fn is not None:
        return wrap(_fn)
    return wrap


def _wrap(fn: Any, settings: BatchSettings) -> Any:
    params = list(inspect.signature(fn).parameters)
    is_method = bool(params) and params[0] == "self"
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "batch"))
    streaming = inspect.isasyncgenfunction(fn)

    def batcher_for(args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        from graphserve.runtime.batcher import get_batcher  # the runtime owns batching

        if is_method:
            owner, args = args[0], args[1:]
            target = functools.partial(fn, owner)
        else:
            owner, target = wrapper, fn
        return get_batcher(owner, name, target, settings, streaming=streaming), args

    if streaming:

        @functools.wraps(fn)
        def stream_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            batcher, args = batcher_for(args)
            stream: AsyncIterator[Any] = batcher.stream(*args, **kwargs)
            return stream

        wrapper: Any = stream_wrapper
    else:

        @functools.wraps(fn)
        async def call_wrapper(*args: Any, **kwargs: Any) -> Any:
            batcher, args = batcher_for(args)
            return await batcher.submit(*args, **kwargs)

        wrapper = call_wrapper

    def set_max_batch_size(value: int) -> None:
        settings.set("max_batch_size", _max_batch_size(value))

    def set_batch_wait_timeout_s(value: float) -> None:
        settings.set("batch_wait_timeout_s", _batch_wait_timeout_s(value))

    def get_max_batch_size() -> int:
        return settings.max_batch_size

    def get_batch_wait_timeout_s() -> float:
        return settings.batch_wait_timeout_s

    wrapper.set_max_batch_size = set_max_batch_size
    wrapper.set_batch_wait_timeout_s = set_batch_wait_timeout_s
    wrapper.get_max_batch_size = wrapper._get_max_batch_size = get_max_batch_size
    wrapper.get_batch_wait_timeout_s = wrapper._get_batch_wait_timeout_s = get_batch_wait_timeout_s
    setattr(wrapper, SETTINGS_ATTR, settings)
    setattr(wrapper, BATCH_ATTR, settings.static_config())
    return wrapper
