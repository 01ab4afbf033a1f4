"""The Ray side of the Ray backend: one :class:`ReplicaActor` per replica, its handles,
and the errors that cross process boundaries.

An actor holds one replica of a deployment: the same replica core as the local backend
(``replica.py``: target loading, construction with handles, method lookup, sync/async
dispatch). It builds it lazily on its own event loop (on :meth:`ReplicaActor.ready` at
start, or on the first call after Ray restarted a dead actor), so handles, batchers and
``asyncio`` objects the constructor creates belong to the loop that runs the calls.
Sync methods run in the actor's threads, one per place (``max_ongoing_requests``); as on
the local backend, a cancelled sync call keeps its place (Ray's ``max_concurrency`` and the
driver's count) until its thread returns: a ``max_ongoing_requests=1`` model never runs two
calls at once. ``@gs.batch`` wrappers batch inside the actor with ``runtime/batcher.py``.
:meth:`ReplicaActor.ping` answers in its own concurrency group, so a busy replica still
shows it is alive.

Handles a constructor receives are :class:`~graphserve.runtime.handle.DeploymentHandle`
objects whose calls go straight to the target deployment's actors without passing through
the driver, routed as the driver routes (:class:`~graphserve.runtime.routing.ReplicaRouter`
with the target's ``max_ongoing_requests`` and ``max_queued_requests``; a refused call is an
:class:`OverloadedError`, a 503 for the request).

Calls the driver started on one replica in one step of its event loop may arrive as one
actor call, :meth:`ReplicaActor.calls` (see ``ray_backend.py``): each item runs as its own
task with the replica's semantics (its inputs awaited on their own, ``@gs.batch`` batching
across them, an error for that item only, carried as a :class:`RayTaskError` in its place
of the results so only its reference fails); :meth:`ReplicaActor.cancel_calls` cancels one
item. The actor's places are counted per call, not per actor call: a replica runs at most
``max_ongoing_requests`` calls at once however they arrived.

Errors are carried in two small picklable exceptions (:class:`ReplicaCallError`, and the
replica core's :class:`~graphserve.runtime.replica.ReplicaStartError`) that name the node
and deployment where they happened; the driver turns them back into
:class:`NodeExecutionError` / :class:`DeploymentStartError` with :func:`node_error`,
whichever downstream reference it was waiting on.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import traceback
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

from graphserve.errors import NodeExecutionError, OverloadedError, PlanError
from graphserve.plan import ArgPlan, BatchingPlan, DeploymentPlan

from .backend import BatchLimits
from .batcher import batch_limits, configure_batching, observe_batches
from .handle import DeploymentHandle
from .otel import attached, inject
from .replica import Replica, ReplicaStartError, construct, threads
from .routing import ReplicaRouter
from .tracing import CURRENT, ActorRecord

#: One coalesced call: node, method, args, kwargs (references nested: each item awaits its own).
Item = tuple[str, str, tuple[Any, ...], dict[str, Any]]


class ReplicaCallError(Exception):
    """A call failed inside a replica: picklable, names the node that failed."""

    def __init__(
        self,
        node: str,
        deployment: str | None,
        message: str,
        cause: BaseException | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(node, deployment, message, cause, error_type)
        self.node = node
        self.deployment = deployment
        self.message = message
        self.cause = cause
        self.error_type = error_type

    def __str__(self) -> str:
        return str(self.to_node_error())

    def to_node_error(self) -> NodeExecutionError:
        error: NodeExecutionError
        if self.cause is not None:
            error = NodeExecutionError.wrapping(self.node, self.deployment, self.cause, self.message)
            error.error_type = self.error_type
        else:
            error = NodeExecutionError(self.node, self.deployment, self.message, self.error_type)
        error.__cause__ = self.cause
        return error

    @classmethod
    def wrap(cls, node: str, deployment: str, exc: BaseException) -> ReplicaCallError:
        """The carrier for ``exc`` raised by ``node`` (or by a handle call it made)."""
        if isinstance(exc, NodeExecutionError):  # from a handle: keep the node it names
            return cls(exc.node, exc.deployment, _message_of(exc), _picklable(exc.__cause__), exc.error_type)
        return cls(node, deployment, f"{type(exc).__name__}: {exc}", _picklable(exc), type(exc).__name__)


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
        message = death_message(deployment, replica, cause, retries, ray_node)
        error = NodeExecutionError(node, deployment, message, type(cause).__name__)
    elif isinstance(cause, TaskCancelledError):
        error = NodeExecutionError(node, deployment, "the call was cancelled", type(cause).__name__)
    else:
        error = NodeExecutionError.wrapping(node, deployment, cause)
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
    threads: int = 1  # the deployment's max_ongoing_requests: one thread per place
    # the handles' targets: their limits (max_ongoing_requests, max_queued_requests) route calls as the driver does
    handle_plans: dict[str, DeploymentPlan] = field(default_factory=dict)
    namespace: str | None = None  # where the handles' actors are named (None: this job's)
    user_config: Any = None  # Ray Serve's user_config: given to reconfigure() after construction


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
        return DeploymentHandle(deployment, self.call, loop, references=self)

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self.fetch(await self.submit(deployment, method, args, kwargs))

    # References: a DeploymentResponse passed on to another call travels as its ObjectRef.
    async def submit(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        router = self._routers[deployment]
        target = await router.acquire()  # may wait in the queue, or raise OverloadedError
        parent = CURRENT.get()
        call = _Call(
            None,
            f"{deployment}.{method}",
            deployment,
            target,
            router,
            parent=parent if isinstance(parent, ActorRecord) else None,
        )
        try:
            args, kwargs = _refs(args), _refs(kwargs)
            if call.parent is not None:  # a traced call: the target sends its record back too
                call.ref, call.record = target.actor.call_traced.remote(call.node, method, inject(), *args, **kwargs)
            else:
                call.ref = target.actor.call.remote(call.node, method, *args, **kwargs)
        except BaseException:
            self.forget(call)
            raise
        return call

    async def fetch(self, call: _Call) -> Any:
        try:
            value = await call.ref
            if call.record is not None and call.parent is not None:
                call.parent.calls.append(await call.record)
            return value
        except asyncio.CancelledError:
            ray.cancel(call.ref)
            raise
        except OverloadedError:  # the target's own handle call was refused: still a 503
            raise
        except Exception as exc:
            retries = self._retries.get(call.deployment, 0)
            raise node_error(exc, call.node, call.deployment, call.target.index, retries)  # noqa: B904 - keeps its own __cause__
        finally:
            self.forget(call)

    def forget(self, call: _Call) -> None:
        """The call is no longer in flight from here (fetched, failed, or passed on to another call)."""
        if not call.counted:
            call.counted = True
            call.router.release(call.target)


@dataclass
class _Call:
    """A call started from inside an actor: its ObjectRef, where it runs, and its trace record."""

    ref: Any
    node: str
    deployment: str
    target: _Target
    router: ReplicaRouter[_Target]
    record: Any = None
    parent: Any = None
    counted: bool = False


def _refs(value: Any) -> Any:
    """Arguments with started calls as their ObjectRefs (Ray resolves them in the callee's worker)."""
    if isinstance(value, _Call):
        return value.ref
    if isinstance(value, tuple):
        return tuple(_refs(v) for v in value)
    if isinstance(value, list):
        return [_refs(v) for v in value]
    if isinstance(value, dict):
        return {k: _refs(v) for k, v in value.items()}
    return value


async def resolve_nested_refs(value: Any, top: bool = True) -> Any:
    """``value`` (a call's arguments) with the ObjectRefs nested in its lists, tuples and dicts
    fetched (Ray fetches only top-level arguments): a DeploymentResponse at any depth reaches the
    method as its value. ``top=False``: the top-level references too (a coalesced call's items,
    which Ray sees nested in the item list)."""
    found: list[Any] = []
    for item in value.values() if isinstance(value, dict) else value:
        _nested_refs(item, found, top=top)
    if not found:
        return value
    values = await asyncio.gather(*found)
    by_id = {id(ref): result for ref, result in zip(found, values, strict=True)}
    return _replace_refs(value, by_id)


def _nested_refs(value: Any, found: list[Any], top: bool = False) -> None:
    if isinstance(value, ray.ObjectRef):
        if not top:
            found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _nested_refs(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _nested_refs(item, found)


def _replace_refs(value: Any, by_id: dict[int, Any]) -> Any:
    if isinstance(value, ray.ObjectRef):
        return by_id.get(id(value), value)
    if isinstance(value, tuple):
        return tuple(_replace_refs(v, by_id) for v in value)
    if isinstance(value, list):
        return [_replace_refs(v, by_id) for v in value]
    if isinstance(value, dict):
        return {k: _replace_refs(v, by_id) for k, v in value.items()}
    return value


def _not_a_stream(result: Any, node: str) -> Any:
    """A generator cannot leave its actor: say so instead of failing to pickle it."""
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        raise TypeError(
            f"{node} returned a generator: streaming (generators, StreamingResponse) is not supported on the Ray "
            "backend; run the app on the local backend, or return a list"
        )
    return result


class ReplicaActor:
    """One replica of one deployment, run by Ray as an async actor (see the module docstring)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self._replica: Replica | None = None
        self._building: asyncio.Future[Replica] | None = None
        self._batches: list[tuple[str, str, int]] = []  # (deployment, method, size) of each batch sent
        self._latencies: deque[tuple[str, float]] = deque(maxlen=100_000)  # (node, seconds) until drained
        self._places = asyncio.Semaphore(max(1, spec.threads))  # calls at once, however they arrived
        self._received = [0, 0]  # actor calls, and the calls they carried (coalesced ones count each)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop calls run on (cancel_calls comes from another)
        self._coalesced: dict[tuple[str, int], list[asyncio.Task[Any]]] = {}  # running coalesced calls' items
        self._early_cancels: dict[tuple[str, int], set[int]] = {}  # cancels that came before their call

    # -- construction ------------------------------------------------------------------
    async def ready(self) -> tuple[int, str]:
        """Build the replica now (the driver waits on every replica at start); its pid and Ray node id."""
        self._loop = asyncio.get_running_loop()
        await self._ensure()
        return os.getpid(), ray.get_runtime_context().get_node_id()

    async def _ensure(self) -> Replica:
        if self._replica is None:  # built once, even when calls arrive while an async __init__ runs
            if self._building is None or (self._building.done() and self._building.exception() is not None):
                self._building = asyncio.ensure_future(self._build())
            self._replica = await asyncio.shield(self._building)
        return self._replica

    async def _build(self) -> Replica:
        spec = self.spec
        loop = asyncio.get_running_loop()
        handles = RemoteHandles(spec)
        try:
            instance = await construct(
                spec.deployment,
                spec.kind,
                spec.target,
                spec.init_args,
                spec.init_kwargs,
                lambda name: handles.handle(name, loop),
                spec.user_config,
            )
        except ReplicaStartError as exc:  # its cause may not pickle: the message says it
            raise ReplicaStartError(exc.deployment, exc.message) from None
        configure_batching(instance, spec.batch_plans)  # the plan's batching values (a function's too)
        if spec.batching and spec.kind == "class":
            observe_batches(instance, lambda method, size: self._batches.append((spec.deployment, method, size)))
        # a cancelled sync call holds its coroutine (the actor's place) until its thread returns
        return Replica(instance, spec.index, threads(spec.threads, f"gs-{spec.deployment}"), wait_for_threads=True)

    # -- calls -------------------------------------------------------------------------
    async def call(self, node: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` for ``node``; Ray has already resolved reference arguments."""
        self._received[0] += 1
        self._received[1] += 1
        return await self._timed(node, method, args, kwargs)

    async def _timed(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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
        record = ActorRecord(node, self.deployment_of(node), self.spec.index)
        token = CURRENT.set(record)
        try:
            with attached(carrier):
                value = await self.call(node, method, *args, **kwargs)
        finally:
            CURRENT.reset(token)
        return value, record.to_json()

    def deployment_of(self, node: str) -> str:
        """The deployment that runs ``node`` here (a fused actor hosts several)."""
        return self.spec.deployment

    async def _run(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async with self._places:
            return await self._run_in_place(node, method, args, kwargs)

    async def _run_in_place(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            replica = self._replica or await self._ensure()
            if any(isinstance(a, (list, tuple, dict)) for a in args):
                args = await resolve_nested_refs(args)
            if any(isinstance(v, (list, tuple, dict)) for v in kwargs.values()):
                kwargs = await resolve_nested_refs(kwargs)
            return _not_a_stream(await replica.invoke(method, args, kwargs), node)
        except ReplicaStartError as exc:
            message = f"the replica could not be rebuilt: {exc.message}"
            raise ReplicaCallError(node, self.spec.deployment, message) from None
        except OverloadedError:  # a handle's target is full: the request gets a 503, as on the driver
            raise
        except Exception as exc:  # the user's method: carried to the driver, naming the node
            raise ReplicaCallError.wrap(node, self.spec.deployment, exc) from None

    async def calls(self, caller: str, key: int, items: list[Item], /) -> list[Any]:
        """Several calls in one actor call (the driver coalesced them; it asks Ray for one result
        per item): each item runs as its own task, as :meth:`call` would run it, and its result,
        or its error as a RayTaskError (which Ray stores as that item's failure), takes its place.
        ``caller`` and ``key`` name the call for :meth:`cancel_calls`."""
        self._received[0] += 1
        self._received[1] += len(items)
        done = await self.run_coalesced(caller, key, [self._item(*item) for item in items])
        return [
            self.item_error(items[i][0], out) if isinstance(out, BaseException) else out for i, out in enumerate(done)
        ]

    async def run_coalesced(self, caller: str, key: int, items: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        """Each item as a task of its own, cancellable one by one (:meth:`cancel_calls`); their
        results or exceptions, in order."""
        self._loop = asyncio.get_running_loop()
        ident = (caller, key)
        tasks = [asyncio.ensure_future(item) for item in items]
        self._coalesced[ident] = tasks
        for index in self._early_cancels.pop(ident, ()):
            tasks[index].cancel()
        try:
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            del self._coalesced[ident]

    async def _item(self, node: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One coalesced call: its inputs awaited (its own, not the other items'), then run as :meth:`call`."""
        if args:
            args = await resolve_nested_refs(args, top=False)
        if kwargs:
            kwargs = await resolve_nested_refs(kwargs, top=False)
        return await self._timed(node, method, args, kwargs)

    def item_error(self, node: str, exc: BaseException) -> RayTaskError:
        """A failed item's place in the results: Ray stores a RayTaskError as that reference's error."""
        if isinstance(exc, asyncio.CancelledError):
            cause: BaseException = ReplicaCallError(
                node, self.deployment_of(node), "the call was cancelled", None, "TaskCancelledError"
            )
        else:
            cause = root_cause(exc)  # an input's own failure keeps naming the node it came from
        text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        return RayTaskError("calls", text, cause)

    @ray.method(concurrency_group="control")  # answered while every place is taken
    async def cancel_calls(self, caller: str, key: int, index: int) -> None:
        """Cancel item ``index`` of coalesced call ``key`` (the others go on); a cancel that
        comes before its call is kept until the call comes (at most 4096 of them)."""
        loop = self._loop
        if loop is None:  # no call has run here yet
            self._cancel_item(caller, key, index)
        else:  # the items run on the default group's loop, not this one's
            loop.call_soon_threadsafe(self._cancel_item, caller, key, index)

    def _cancel_item(self, caller: str, key: int, index: int) -> None:
        tasks = self._coalesced.get((caller, key))
        if tasks is not None:
            tasks[index].cancel()
            return
        early = self._early_cancels
        early.setdefault((caller, key), set()).add(index)
        if len(early) > 4096:  # calls that finished before their cancel came: forget the oldest
            del early[next(iter(early))]

    @ray.method(concurrency_group="control")
    async def received(self) -> tuple[int, int]:
        """How many actor calls came, and how many calls they carried (a coalesced call counts each;
        on a fused actor, a request's batch of calls into the group counts one)."""
        return self._received[0], self._received[1]

    @ray.method(concurrency_group="control")  # never takes one of the max_ongoing_requests slots
    async def ping(self) -> int:
        """Answered even while every place is taken: the replica's process is alive."""
        return os.getpid()

    @ray.method(concurrency_group="control")  # never takes one of the max_ongoing_requests slots
    async def drain_metrics(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, float]]]:
        """The (deployment, method, size) of every batch sent and the (node, seconds) of every call
        since the last drain."""
        batches, self._batches = self._batches, []
        latencies = list(self._latencies)
        self._latencies.clear()
        return batches, latencies

    @ray.method(concurrency_group="control")
    async def batch_limits(self) -> dict[str, dict[str, BatchLimits]]:
        """Deployment -> the current limits of its batchers in this replica (empty before its first batch)."""
        limits = batch_limits(self._replica.instance) if self._replica is not None else {}
        return {self.spec.deployment: limits} if limits else {}
