"""The Ray side of the Ray backend: one :class:`ReplicaActor` per replica, its handles,
and the errors that cross process boundaries.

An actor holds one instance of a deployment. It builds the instance lazily on its own
event loop (on :meth:`ReplicaActor.ready` at start, or on the first call after Ray
restarted a dead actor), so handles, batchers and ``asyncio`` objects the constructor
creates belong to the loop that runs the calls. Async methods run on that loop; sync
methods in a thread pool, as on the local backend. ``@gs.batch`` wrappers batch inside
the actor with ``runtime/batcher.py``.

Handles a constructor receives are :class:`~graphserve.runtime.handle.DeploymentHandle`
objects whose calls go straight to the target deployment's actors (least in-flight
first) without passing through the driver.

Errors are carried in two small picklable exceptions (:class:`ReplicaCallError`,
:class:`ReplicaStartError`) that name the node and deployment where they happened; the
driver turns them back into :class:`NodeExecutionError` / :class:`DeploymentStartError`
with :func:`node_error`, whichever downstream reference it was waiting on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

from graphserve.errors import NodeExecutionError, OverloadedError, PlanError
from graphserve.plan import ArgPlan, BatchingPlan, DeploymentPlan, import_object

from .batcher import configure_batching, observe_batches
from .construction import build_args
from .handle import DeploymentHandle
from .routing import ReplicaRouter


class ReplicaCallError(Exception):
    """A call failed inside a replica: picklable, names the node that failed."""

    def __init__(self, node: str, deployment: str | None, message: str, cause: BaseException | None = None) -> None:
        super().__init__(node, deployment, message, cause)
        self.node = node
        self.deployment = deployment
        self.message = message
        self.cause = cause

    def __str__(self) -> str:
        return str(self.to_node_error())

    def to_node_error(self) -> NodeExecutionError:
        error = NodeExecutionError(self.node, self.deployment, self.message)
        error.__cause__ = self.cause
        return error

    @classmethod
    def wrap(cls, node: str, deployment: str, exc: BaseException) -> ReplicaCallError:
        """The carrier for ``exc`` raised by ``node`` (or by a handle call it made)."""
        if isinstance(exc, NodeExecutionError):  # from a handle: keep the node it names
            return cls(exc.node, exc.deployment, _message_of(exc), _picklable(exc.__cause__))
        return cls(node, deployment, f"{type(exc).__name__}: {exc}", _picklable(exc))


class ReplicaStartError(Exception):
    """A replica's constructor (or import) failed: picklable, names the deployment."""

    def __init__(self, deployment: str, message: str) -> None:
        super().__init__(deployment, message)
        self.deployment = deployment
        self.message = message

    def __str__(self) -> str:
        return f"deployment {self.deployment!r} failed to start: {self.message}"


def _message_of(exc: NodeExecutionError) -> str:
    prefix = str(NodeExecutionError(exc.node, exc.deployment, ""))
    text = str(exc)
    return text[len(prefix) :] if text.startswith(prefix) else text


def _picklable(exc: BaseException | None) -> BaseException | None:
    if exc is None:
        return None
    try:
        cloudpickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def root_cause(exc: BaseException) -> BaseException:
    """The exception behind Ray's wrappers (a task error wraps its argument's error)."""
    seen = 0
    while isinstance(exc, RayTaskError) and seen < 32:
        cause = getattr(exc, "cause", None)
        if cause is None or cause is exc:
            break
        exc = cause
        seen += 1
    return exc


def death_message(
    deployment: str | None, replica: int | None, exc: BaseException, retries: int, ray_node: str | None = None
) -> str:
    who = f"replica {replica} of deployment {deployment!r}" if replica is not None else f"a replica of {deployment!r}"
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    hint = "" if retries else "; set max_retries on the deployment to retry such calls"
    where = f" on Ray node {ray_node}" if ray_node else ""
    return f"{who} died while running this call{tried}{where} ({type(exc).__name__}: {reason}); Ray restarts it{hint}"


def node_error(
    exc: BaseException,
    node: str,
    deployment: str | None,
    replica: int | None = None,
    retries: int = 0,
    ray_node: str | None = None,
) -> NodeExecutionError:
    """A Ray failure seen while waiting on ``node``'s result, as a NodeExecutionError.

    Failures raised inside a replica keep the node they name (which may be upstream of
    ``node``); a dead actor is reported on ``node`` unless the caller knows better.
    """
    cause = root_cause(exc)
    if isinstance(cause, ReplicaCallError):
        return cause.to_node_error()
    if isinstance(cause, NodeExecutionError):
        return cause
    if isinstance(cause, RayActorError):
        error = NodeExecutionError(node, deployment, death_message(deployment, replica, cause, retries, ray_node))
    elif isinstance(cause, TaskCancelledError):
        error = NodeExecutionError(node, deployment, "the call was cancelled")
    else:
        error = NodeExecutionError(node, deployment, f"{type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


@dataclass
class ReplicaSpec:
    """What an actor needs to build its instance (all picklable)."""

    deployment: str
    index: int
    kind: str
    target: Any  # an import path, or the object itself for a plan built in process
    init_args: list[ArgPlan] = field(default_factory=list)
    init_kwargs: dict[str, ArgPlan] = field(default_factory=dict)
    handles: dict[str, list[str]] = field(default_factory=dict)  # deployment -> its actors' names
    retries: dict[str, int] = field(default_factory=dict)  # deployment -> its max_retries
    batching: bool = False
    batch_plans: list[BatchingPlan] = field(default_factory=list)  # the plan's batching values, applied
    threads: int = 32
    # the handles' targets: their limits (max_ongoing_requests, max_queued_requests) route calls as the driver does
    handle_plans: dict[str, DeploymentPlan] = field(default_factory=dict)
    namespace: str | None = None  # where the handles' actors are named (None: this job's)


def load_spec_target(target: Any) -> Any:
    """The user's class or function: imported by path, unwrapped from ``@gs.deployment``."""
    obj = import_object(target) if isinstance(target, str) else target
    if not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        obj = getattr(obj, "__wrapped__", obj)
    return obj


class _Target:
    """One actor a handle may call, with the calls this process has in flight on it."""

    __slots__ = ("actor", "down", "index", "ongoing")

    def __init__(self, actor: Any, index: int) -> None:
        self.actor = actor
        self.index = index
        self.ongoing = 0
        self.down = False


class RemoteHandles:
    """Calls from inside one actor to other deployments' actors, through the same routing and
    limits as the driver's calls: least in-flight first, at most ``max_ongoing_requests`` per
    replica from this process, then a FIFO of at most ``max_queued_requests`` (OverloadedError)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        # Looked up by name (not passed in): the constructor's arguments stay plain data, so Ray can
        # always rebuild a restarted actor from them.
        self._routers: dict[str, ReplicaRouter[_Target]] = {}
        for name, actors in spec.handles.items():
            plan = spec.handle_plans.get(name) or DeploymentPlan(name=name, import_path="", kind="class")
            targets = [_Target(ray.get_actor(actor, namespace=spec.namespace), i) for i, actor in enumerate(actors)]
            self._routers[name] = ReplicaRouter(plan, targets)
        self._retries = spec.retries

    def handle(self, deployment: str, loop: asyncio.AbstractEventLoop) -> DeploymentHandle:
        if deployment not in self._routers:
            raise PlanError(f"no actors for deployment {deployment!r}")
        return DeploymentHandle(deployment, self.call, loop)

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        router = self._routers[deployment]
        target = await router.acquire()  # may wait in the queue, or raise OverloadedError
        node = f"{deployment}.{method}"
        try:
            ref: Any = target.actor.call.remote(node, method, *args, **kwargs)
            try:
                return await ref
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
        except (asyncio.CancelledError, OverloadedError):
            raise
        except Exception as exc:
            raise node_error(exc, node, deployment, target.index, self._retries.get(deployment, 0))  # noqa: B904 - keeps its own __cause__
        finally:
            router.release(target)


class ReplicaActor:
    """One replica of one deployment, run by Ray as an async actor (see the module docstring)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self._instance: Any = None
        self._methods: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._batches: list[tuple[str, int]] = []

    # -- construction ------------------------------------------------------------------
    async def ready(self) -> tuple[int, str]:
        """Build the instance now (the driver waits on every replica at start); its pid and Ray node id."""
        await self._ensure()
        return os.getpid(), ray.get_runtime_context().get_node_id()

    async def _ensure(self) -> Any:
        if self._instance is None:  # the constructor is synchronous: no other call interleaves
            self._instance = self._construct()
        return self._instance

    def _construct(self) -> Any:
        spec = self.spec
        try:
            target = load_spec_target(spec.target)
        except Exception as exc:
            raise ReplicaStartError(spec.deployment, f"cannot load {spec.target!r}: {exc}") from None
        self._pool = concurrent.futures.ThreadPoolExecutor(spec.threads, thread_name_prefix=f"gs-{spec.deployment}")
        if spec.kind == "function":
            configure_batching(target, spec.batch_plans)
            return target
        loop = asyncio.get_running_loop()
        handles = RemoteHandles(spec)
        args, kwargs = build_args(spec.init_args, spec.init_kwargs, lambda name: handles.handle(name, loop))
        try:
            instance = target(*args, **kwargs)
        except Exception as exc:
            raise ReplicaStartError(spec.deployment, f"constructor raised {type(exc).__name__}: {exc}") from None
        configure_batching(instance, spec.batch_plans)
        if spec.batching:
            observe_batches(instance, lambda method, size: self._batches.append((method, size)))
        return instance

    # -- calls -------------------------------------------------------------------------
    def _method(self, instance: Any, name: str) -> tuple[Callable[..., Any], bool]:
        found = self._methods.get(name)
        if found is None:
            if inspect.isfunction(instance) and name == "__call__":
                fn: Callable[..., Any] = instance
            else:
                fn = getattr(instance, name)
            is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
            found = self._methods[name] = (fn, is_async)
        return found

    async def call(self, node: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` for ``node``; Ray has already resolved reference arguments."""
        spec = self.spec
        try:
            instance = self._instance if self._instance is not None else await self._ensure()
            fn, is_async = self._method(instance, method)
            if is_async:
                return await fn(*args, **kwargs)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
            if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
                result = await result
            return result
        except ReplicaStartError as exc:
            raise ReplicaCallError(node, spec.deployment, f"the replica could not be rebuilt: {exc.message}") from None
        except OverloadedError:  # a handle's target is full: the request gets a 503, as on the driver
            raise
        except Exception as exc:
            raise ReplicaCallError.wrap(node, spec.deployment, exc) from None

    @ray.method(concurrency_group="control")  # never takes one of the max_ongoing_requests slots
    async def drain_batches(self) -> list[tuple[str, int]]:
        """The (method, size) of every batch sent since the last drain."""
        out, self._batches = self._batches, []
        return out
