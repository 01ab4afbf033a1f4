"""``@gs.batch``: list in, list out, as Ray Serve's ``@serve.batch``.

The decorated async method receives lists and returns a list of the same length.
Callers (graph nodes, handles, or the deployment's own ``__call__``) pass single items;
the wrapper hands them to the runtime's batcher, which gathers them into batches.
The batching options are also recorded on the wrapper so the compiler can check and
plan them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from graphserve.dsl import BATCH_ATTR, BATCH_EXPLICIT_ATTR, batch_config

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS: dict[str, Any] = {"max_batch_size": 10, "batch_wait_timeout_s": 0.01, "max_concurrent_batches": 1}


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
    adaptive: bool | None = None,
) -> Callable[[F], F]: ...


def batch(
    _fn: Any = None,
    *,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    max_concurrent_batches: int | None = None,
    adaptive: bool | None = None,
) -> Any:
    """Batch calls to an async method: bare ``@gs.batch`` or ``@gs.batch(max_batch_size=32)``.

    Options left out take the defaults (10 items, 10 ms, one batch at a time); in an app with an
    SLO the planner chooses them instead, and keeps the ones written here. ``adaptive=True`` lets
    the batcher shrink its size limit and wait at run time to stay inside the node's latency
    budget (on by default for batch sizes the planner chose; ``adaptive=False`` turns it off)."""
    given = {
        "max_batch_size": max_batch_size,
        "batch_wait_timeout_s": batch_wait_timeout_s,
        "max_concurrent_batches": max_concurrent_batches,
    }
    explicit = sorted(k for k, v in given.items() if v is not None)
    config: dict[str, Any] = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    if adaptive is not None:
        config["adaptive"] = adaptive
        explicit.append("adaptive")

    def wrap(fn: Any) -> Any:
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "batch"))

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            from graphserve.runtime.batcher import get_batcher  # the runtime owns batching

            if is_method:
                owner, args = args[0], args[1:]
                target = functools.partial(fn, owner)
            else:
                owner, target = wrapper, fn
            batcher = get_batcher(owner, name, target, config)
            return await batcher.submit(*args, **kwargs)

        setattr(wrapper, BATCH_ATTR, dict(config))
        setattr(wrapper, BATCH_EXPLICIT_ATTR, list(explicit))
        return wrapper

    if _fn is not None:
        return wrap(_fn)
    return wrap
