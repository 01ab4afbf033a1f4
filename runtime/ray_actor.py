"""The Ray side of the Ray backend: one :class:`ReplicaActor` per replica, its handles,
and the errors that cross process boundaries.

An actor holds one replica of a deployment: the same replica core as the local backend
(``replica.py``: target loading, construction with handles, method lookup, sync/async
dispatch). It builds it lazily on its own event loop (on :meth:`ReplicaActor.ready` at
start, or on the first call after Ray restarted a dead actor), so handles, batchers and
``asyncio`` objects the constructor creates belong to the loop that runs the calls.
``@gs.batch`` wrappers batch inside the actor with ``runtime/batcher.py``.

Handles a constructor receives are :class:`~graphserve.runtime.handle.DeploymentHandle`
objects whose calls go straight to the target deployment's actors (least in-flight
first) without passing through the driver.

Errors are carried in two small picklable exceptions (:class:`ReplicaCallError`, and the
replica core's :class:`~graphserve.runtime.replica.ReplicaStartError`) that name the node
and deployment where they happened; the driver turns them back into
:class:`NodeExecutionError` / :class:`DeploymentStartError` with :func:`node_error`,
whichever downstream reference it was waiting on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

from graphserve.errors import NodeExecutionError, PlanError
from graphserve.plan import ArgPlan, BatchingPlan

from .backend import BatchLimits
from .batcher import batch_limits, configure_batching, observe_batches
from .handle import DeploymentHandle
from .otel import attached, inject
from .replica import Replica, ReplicaStartError, construct
from .tracing import CURRENT, ActorRecord


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


def death_message(deployment: str | None, replica: int | None, exc: BaseException, retries: int) -> str:
    who = f"replica {replica} of deployment {deployment!r}" if replica is not None else f"a replica of {deployment!r}"
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    hint = "" if retries else "; set max_retries on the deployment to retry such calls"
    return f"{who} died while running this call{tried} ({type(exc).__name__}: {reason}); Ray restarts it{hint}"


def node_error(
    exc: BaseException, node: str, deployment: str | None, replica: int | None = None, retries: int = 0
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
        error = NodeExecutionError(node, deployment, death_message(deployment, replica, cause, retries))
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


class RemoteHandles:
    """Calls from inside one actor to other deployments' actors (least in-flight first)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        # Looked up by name (not passed in): the constructor's arguments stay plain data, so Ray can
        # always rebuild a restarted actor from them.
        self._actors = {name: [ray.get_actor(actor) for actor in actors] for name, actors in spec.handles.items()}
        self._retries = spec.retries
        self._inflight = {name: [0] * len(actors) for name, actors in spec.handles.items()}

    def handle(self, deployment: str, loop: asyncio.AbstractEventLoop) -> DeploymentHandle:
        if deployment not in self._actors:
            raise PlanError(f"no actors for deployment {deployment!r}")
        return DeploymentHandle(deployment, self.call, loop)

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        counts = self._inflight[deployment]
        index = min(range(len(counts)), key=counts.__getitem__)
        node = f"{deployment}.{method}"
        parent = CURRENT.get()
        ref: Any
        record: Any = None
        if isinstance(parent, ActorRecord):  # a traced call: the target sends its record back too
            actor = self._actors[deployment][index]
            ref, record = actor.call_traced.remote(node, method, inject(), *args, **kwargs)
        else:
            ref = self._actors[deployment][index].call.remote(node, method, *args, **kwargs)
        counts[index] += 1
        try:
            value = await ref
            if record is not None and isinstance(parent, ActorRecord):
                parent.calls.append(await record)
            return value
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except Exception as exc:
            raise node_error(exc, node, deployment, index, self._retries.get(deployment, 0))  # noqa: B904 - keeps its own __cause__
        finally:
            counts[index] -= 1


class ReplicaActor:
    """One replica of one deployment, run by Ray as an async actor (see the module docstring)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self._replica: Replica | None = None
        self._batches: list[tuple[str, int]] = []
        self._latencies: deque[tuple[str, float]] = deque(maxlen=100_000)  # (node, seconds) until drained

    # -- construction ------------------------------------------------------------------
    async def ready(self) -> int:
        """Build the replica now (the driver waits on every replica at start)."""
        await self._ensure()
        return os.getpid()

    async def _ensure(self) -> Replica:
        if self._replica is None:  # the constructor is synchronous: no other call interleaves
            self._replica = self._build()
        return self._replica

    def _build(self) -> Replica:
        spec = self.spec
        loop = asyncio.get_running_loop()
        handles = RemoteHandles(spec)
        try:
            instance = construct(
                spec.deployment,
                spec.kind,
                spec.target,
                spec.init_args,
                spec.init_kwargs,
                lambda name: handles.handle(name, loop),
            )
        except ReplicaStartError as exc:  # its cause may not pickle: the message says it
            raise ReplicaStartError(exc.deployment, exc.message) from None
        configure_batching(instance, spec.batch_plans)  # the plan's batching values (a function's too)
        if spec.batching and spec.kind == "class":
            observe_batches(instance, lambda method, size: self._batches.append((method, size)))
        pool = concurrent.futures.ThreadPoolExecutor(spec.threads, thread_name_prefix=f"gs-{spec.deployment}")
        return Replica(instance, spec.index, pool)

    # -- calls -------------------------------------------------------------------------
    async def call(self, node: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` for ``node``; Ray has already resolved reference arguments."""
        start = time.perf_counter()
        try:
            return await self._run(node, method, args, kwargs)
        finally:
            self._latencies.append((node, time.perf_counter() - start))

    @ray.method(num_returns=2)
    async def call_traced(
        self, node: str, method: str, carrier: dict[str, str] | None, /, *args: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        """:meth:`call` for a traced request: the result, and this call's record (times in the
        actor, batch size, the handle calls it made). ``carrier``: the caller's OpenTelemetry
        context (W3C headers), current while the method runs."""
        record = ActorRecord(node, self.spec.deployment, self.spec.index)
        token = CURRENT.set(record)
        try:
            with attached(carrier):
                value = await self.call(node, method, *args, **kwargs)
        finally:
            CURRENT.reset(token)
        return value, record.to_json()

    async def _run(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            replica = self._replica or await self._ensure()
            return await replica.invoke(method, args, kwargs)
        except ReplicaStartError as exc:
            message = f"the replica could not be rebuilt: {exc.message}"
            raise ReplicaCallError(node, self.spec.deployment, message) from None
        except Exception as exc:  # the user's method: carried to the driver, naming the node
            raise ReplicaCallError.wrap(node, self.spec.deployment, exc) from None

    @ray.method(concurrency_group="control")  # never takes one of the max_ongoing_requests slots
    async def drain_metrics(self) -> tuple[list[tuple[str, int]], list[tuple[str, float]]]:
        """The (method, size) of every batch sent and the (node, seconds) of every call since the last drain."""
        batches, self._batches = self._batches, []
        latencies = list(self._latencies)
        self._latencies.clear()
        return batches, latencies

    @ray.method(concurrency_group="control")
    async def batch_limits(self) -> dict[str, BatchLimits]:
        """The current limits of this replica's batchers (empty before its first batch)."""
        return batch_limits(self._replica.instance) if self._replica is not None else {}
