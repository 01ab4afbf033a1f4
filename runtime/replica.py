"""The replica core: one instance of one deployment, the same on every backend.

The local backend (``local.py``) keeps a :class:`Replica` per replica in this process;
the Ray backend's actor (``ray_actor.py``) keeps one inside each actor. Both build it
with :func:`construct` and call it with :meth:`Replica.invoke`:

- **target loading** (:func:`load_target`): an import path (``module:qualname``) or an
  object, unwrapped from ``@gs.deployment`` to the user's class or function;
- **construction with handles** (:func:`construct`): constructor arguments from the
  Plan's data, each :class:`HandleRef` made a handle by the backend's ``handle``
  function (an ``async def __init__`` is awaited, as Ray Serve allows); a failure is
  :class:`ReplicaStartError` naming the deployment;
- **method lookup and dispatch** (:meth:`Replica.invoke`): each method is looked up
  once; ``async`` methods run on the event loop, others in the replica's own threads
  (:func:`threads`: one per place) so they never block it (a sync wrapper that returns a
  coroutine is awaited);
- **a cancelled sync call keeps its place**: a thread cannot be stopped, so when the
  caller of a sync call is cancelled (its request passed its deadline) while the thread
  runs, the call still counts until the thread returns. On the local backend it stays in
  the replica's ``ongoing`` count (the caller answers 504 at once; ``on_free`` tells the
  router when the place is free); in a Ray actor the call's coroutine waits for the
  thread (``wait_for_threads``), holding the actor's concurrency place and the driver's
  count. A model with ``max_ongoing_requests=1`` (a GPU) never runs two calls at once.

:func:`construction_order` gives the order to build a Plan's deployments in (the ones
a constructor holds handles to first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from graphserve.errors import PlanError
from graphserve.plan import ConstValue, HandleRef, NodeRef, Plan, StructValue, import_object

#: ``handle(deployment name)`` -> what a constructor receives for a HandleRef.
HandleFactory = Callable[[str], Any]


class ReplicaStartError(Exception):
    """A replica could not be built (its target did not load, or its constructor raised).

    Plain and picklable, so it crosses process boundaries (Ray); the backends report
    it as :class:`~graphserve.errors.DeploymentStartError`."""

    def __init__(self, deployment: str, message: str) -> None:
        super().__init__(deployment, message)
        self.deployment = deployment
        self.message = message

    def __str__(self) -> str:
        return f"deployment {self.deployment!r} failed to start: {self.message}"


def load_target(target: Any) -> Any:
    """The user's class or function behind ``target`` (an import path, or the object).

    A module attribute decorated with ``@gs.deployment`` is a wrapper; its
    ``__wrapped__`` is the user's class or function. Raises PlanError when the path
    does not import."""
    obj = import_object(target) if isinstance(target, str) else target
    if not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        obj = getattr(obj, "__wrapped__", obj)
    return obj


def build_args(args: list[Any], kwargs: dict[str, Any], handle: HandleFactory) -> tuple[list[Any], dict[str, Any]]:
    """Constructor arguments from the Plan's data, with handles made by ``handle(deployment)``."""
    return [build_value(a, handle) for a in args], {k: build_value(v, handle) for k, v in kwargs.items()}


def build_value(arg: Any, handle: HandleFactory) -> Any:
    if isinstance(arg, ConstValue):
        return arg.value
    if isinstance(arg, HandleRef):
        return handle(arg.deployment)
    if isinstance(arg, StructValue):
        if arg.form == "dict":
            return {k: build_value(v, handle) for k, v in arg.items}
        items = [build_value(v, handle) for _, v in arg.items]
        return items if arg.form == "list" else tuple(items)
    if isinstance(arg, NodeRef):  # pragma: no cover - the compiler never puts nodes in constructors
        raise PlanError(f"node {arg.node!r} cannot be a constructor argument")
    raise PlanError(f"unknown argument {arg!r}")  # pragma: no cover


async def construct(
    deployment: str,
    kind: str,
    target: Any,
    init_args: list[Any],
    init_kwargs: dict[str, Any],
    handle: HandleFactory,
    user_config: Any = None,
) -> Any:
    """The instance of one replica: the target loaded and, for a class, constructed, then
    given ``user_config`` through its ``reconfigure`` (Ray Serve's order: after ``__init__``,
    before the first call; awaited when async).

    A function deployment is its function. Raises ReplicaStartError naming the
    deployment when the target does not load or its constructor or reconfigure raises."""
    try:
        loaded = load_target(target)
    except PlanError as exc:
        raise ReplicaStartError(deployment, str(exc)) from None
    if kind == "function":
        return loaded
    args, kwargs = build_args(init_args, init_kwargs, handle)
    try:
        if inspect.iscoroutinefunction(getattr(loaded, "__init__", None)):  # Ray Serve allows async __init__
            instance = loaded.__new__(loaded)
            await loaded.__init__(instance, *args, **kwargs)
        else:
            instance = loaded(*args, **kwargs)
    except Exception as exc:  # the user's constructor: any failure is this deployment's
        raise ReplicaStartError(deployment, f"constructor raised {type(exc).__name__}: {exc}") from exc
    if user_config is not None:
        await reconfigure(deployment, instance, user_config)
    return instance


async def reconfigure(deployment: str, instance: Any, user_config: Any) -> None:
    """Ray Serve's ``reconfigure(user_config)`` on one instance (sync or async)."""
    method = getattr(instance, "reconfigure", None)
    if method is None:
        raise ReplicaStartError(deployment, "user_config is set but the deployment has no reconfigure() method")
    try:
        result = method(user_config)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # the user's reconfigure: any failure is this deployment's
        raise ReplicaStartError(deployment, f"reconfigure raised {type(exc).__name__}: {exc}") from exc


def _nothing() -> None:
    return None


class Replica:
    """One instance and the calls running on it (``ongoing``, ``down``: see ``routing.py``)."""

    __slots__ = ("_methods", "_pool", "down", "index", "instance", "on_free", "ongoing", "wait_for_threads")

    def __init__(
        self,
        instance: Any,
        index: int,
        pool: concurrent.futures.ThreadPoolExecutor,
        wait_for_threads: bool = False,
    ) -> None:
        self.instance = instance
        self.index = index
        self.ongoing = 0
        self.down = False
        self._methods: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._pool = pool
        self.wait_for_threads = wait_for_threads
        #: called when a place a cancelled sync call kept is free (the router wakes its waiting callers)
        self.on_free: Callable[[], None] = _nothing

    def method(self, name: str) -> tuple[Callable[..., Any], bool]:
        """The bound method ``name`` and whether it is async (looked up once)."""
        found = self._methods.get(name)
        if found is None:
            if inspect.isfunction(self.instance) and name == "__call__":
                fn: Callable[..., Any] = self.instance
            else:
                fn = getattr(self.instance, name)
            is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
            found = self._methods[name] = (fn, is_async)
        return found

    def invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Awaitable[Any]:
        """Run method ``name`` (await what this returns): an async method's own coroutine, on
        the loop (no frame of ours around it), else the call in the thread pool."""
        fn, is_async = self._methods.get(name) or self.method(name)
        if is_async:
            result: Awaitable[Any] = fn(*args, **kwargs) if kwargs else fn(*args)  # no empty dict made
            return result
        return self.run_sync(fn, args, kwargs)

    async def run_sync(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A synchronous method in one of the replica's threads (the loop stays free); a
        cancelled call keeps its place until its thread returns (see the module docstring)."""
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.done():
                await self._keep_place(future)
            raise
        if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
            result = await result
        return result

    async def _keep_place(self, future: concurrent.futures.Future[Any]) -> None:
        if self.wait_for_threads:  # hold this coroutine (the actor's place) until the thread returns
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(future))
            return
        self.ongoing += 1  # the caller frees its place as it unwinds: the thread still holds one
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: _call_soon(loop, self._thread_returned))

    def _thread_returned(self) -> None:
        self.ongoing -= 1
        self.on_free()

    def close(self) -> None:
        """No more calls: threads not started yet are not started."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed (the server stopped): nothing to free
        loop.call_soon_threadsafe(fn)


def threads(max_ongoing_requests: int, name: str) -> concurrent.futures.ThreadPoolExecutor:
    """A replica's threads: one per place (``max_ongoing_requests``), started when first needed,
    so a sync call never waits for a thread another call holds."""
    return concurrent.futures.ThreadPoolExecutor(max_ongoing_requests, thread_name_prefix=name)


def construction_order(plan: Plan) -> list[str]:
    """Deployments with the ones they hold handles to first."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for target in plan.deployment(name).handles:
            visit(target)
        done.append(name)

    for dep in plan.deployments:
        visit(dep.name)
    return done
