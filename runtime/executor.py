"""The executor: walks a Plan for one request (torch.fx's Interpreter, for dataflow).

Evaluation is demand-driven from the output: a node is computed when a consumer
needs it, and all missing inputs of a node are started together, so independent nodes
run concurrently and a node starts as soon as its inputs are ready. A switch evaluates
its selector first and then *only* the selected branch: nodes that feed only untaken
branches are never started (the plan's guards say which those are). A node read by
several consumers is computed once per request. A chain of deployment calls, each read
only by the next through its one node input, runs in the frame of its last call, one call
after the other (one coroutine for the chain, not one per node).

Each node is compiled once into an :class:`_Op` whose ``compute`` is the method for
its kind. Deployment calls go to the backend's :meth:`~Backend.submit`, whose value
(a result, or on a remote backend a reference) is passed on to later calls as it is;
the nodes that look at values themselves (glue, field selection, switch selector,
output) get them through :meth:`~Backend.fetch`. That is the one path, for every
backend (``backend.py``).

Every failure is turned into an error that names the node:
:class:`NodeExecutionError` (500), :class:`RequestValidationError` for a request that
does not match the input schema or lacks a field the graph selects (422),
:class:`DeadlineExceededError` past the deadline (504). A failed or late request
cancels what it started: its tasks here, and the backend's calls (:meth:`~Backend.cancel`).

A traced request (``execute(..., trace=Trace(...))``, see ``tracing.py``) walks the same
path: a deployment call or glue gets a span from when its inputs are ready to when its
value is (on Ray, the actor's own record of the call), fused nodes are marked when they
produce theirs. An untraced request pays one ``trace is None`` check per node.

An optional :class:`~.observer.ExecutionObserver` (``executor.observer``; the profiler
sets one) is told every deployment call with its inputs and times and every switch's
arm, on the same path; without one each call and switch pays one ``is None`` check.
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from graphserve.errors import (
    DeadlineExceededError,
    GraphError,
    NodeExecutionError,
    RequestError,
    RequestValidationError,
)
from graphserve.plan import ConstValue, NodePlan, NodeRef, Plan

from .backend import Backend
from .observer import ExecutionObserver
from .replica import load_target
from .tracing import CURRENT, Trace

Ref = tuple[bool, Any]  # (True, node id) or (False, a constant)
_NONE: dict[str, Any] = {}  # the keyword arguments of a call that has none (only ever unpacked, never changed)
Compute = Callable[["_Op", "_Run"], Coroutine[Any, Any, Any]]


class _Run:
    """The state of one request: computed values, shared nodes being computed, submitted calls."""

    __slots__ = ("shared", "submitted", "trace", "values")

    def __init__(self, input_id: str, request: Any, trace: Trace | None) -> None:
        self.values: dict[str, Any] = {input_id: request}
        self.shared: dict[str, asyncio.Future[Any]] = {}  # nodes several consumers read, while computed
        self.submitted: list[Any] = []  # values of the backend calls this request started (to cancel)
        self.trace = trace


class _Op:
    """A node compiled for execution (see the module docstring)."""

    __slots__ = (
        "arms",
        "chain",
        "compute",
        "default",
        "deployment",
        "fn",
        "form",
        "from_input",
        "id",
        "key",
        "keys",
        "kwargs",
        "method",
        "needs",
        "node",
        "one",
        "only_arg",
        "positional",
        "selector",
        "shared",
        "truthy",
    )

    def __init__(self, node: NodePlan, compute: Compute) -> None:
        self.node = node
        self.id = node.id
        self.compute = compute
        self.chain: tuple[_Op, ...] = (self,)  # a deployment call: the calls it runs, itself last
        args = [_ref(a) for a in node.args]
        self.kwargs = {k: _ref(v) for k, v in node.kwargs.items()}
        self.positional = _positional(args)
        # the nodes this one reads before it runs (a switch reads its selector, then one arm)
        refs = [*args, *self.kwargs.values()]
        self.needs = tuple(dict.fromkeys(ref for is_node, ref in refs if is_node))
        self.one = self.needs[0] if len(self.needs) == 1 else None  # the only node read (chains)
        self.only_arg = self.one if args == [(True, self.one)] and not self.kwargs else None  # ...as the only argument
        self.shared = len(node.consumers) > 1
        self.deployment = node.deployment or ""
        self.method = node.method or "__call__"
        self.fn: Any = None
        self.key = node.key
        self.from_input = False
        self.selector = node.selector or ""
        self.arms: list[tuple[Any, Ref]] = [(b.value, _ref(b.arg)) for b in node.branches]
        self.default = _ref(node.default) if node.default is not None else None
        self.truthy = {b.value for b in node.branches} <= {True, False} and node.default is None
        self.form = node.form
        self.keys = node.keys


def _ref(arg: Any) -> Ref:
    if isinstance(arg, NodeRef):
        return True, arg.node
    if isinstance(arg, ConstValue):
        return False, arg.value
    raise GraphError(f"argument {arg!r} cannot be evaluated per request")


def _positional(refs: list[Ref]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function from the run's values to the positional arguments (built once per node)."""
    if all(is_node for is_node, _ in refs):
        ids = [ref for _, ref in refs]
        if not ids:
            return lambda values: ()
        if len(ids) == 1:
            only = ids[0]
            return lambda values: (values[only],)
        return operator.itemgetter(*ids)  # type: ignore[return-value]
    return lambda values: tuple([values[ref] if is_node else ref for is_node, ref in refs])


class GraphExecutor:
    """Executes one Plan on one backend. Safe for many concurrent requests."""

    def __init__(self, plan: Plan, backend: Backend) -> None:
        self.plan = plan
        self.backend = backend
        self.observer: ExecutionObserver | None = None  # told about every call and switch (the profiler)
        self._keep_values = backend.cancels_calls  # else a failed request has no calls to cancel
        self.input_id = plan.input
        self.output_id = plan.output
        self._schema = load_target(plan.resolve(plan.input_schema)) if plan.input_schema else None
        computes: dict[str, Compute] = {  # by node kind; a call is a deployment's or glue
            "attr": self._attr,
            "switch": self._switch,
            "output": self._output,
        }
        self.ops: dict[str, _Op] = {}
        for node in plan.nodes:
            compute: Compute
            if node.kind == "call":
                compute = self._glue if node.function else self._call
            else:
                compute = computes.get(node.kind, self._missing_node)
            op = _Op(node, compute)
            if node.kind == "call" and node.function:
                op.fn = load_target(plan.resolve(node.function))
            if node.kind == "attr":
                op.fn = operator.getitem if node.access == "item" else _getattr_or_item
                op.from_input = op.needs == (plan.input,)
            self.ops[node.id] = op
        for op in self.ops.values():
            if op.compute == self._call:
                op.chain = self._chain(op)

    def _chain(self, op: _Op) -> tuple[_Op, ...]:
        """``op`` and the deployment calls before it that only it reads, through single node
        inputs, first one first: a chain ``a -> b -> op`` runs in ``op``'s frame (``_call``).
        A call read by one node is computed only when that node is (never before, never by
        another), so its consumer can run it."""
        chain = [op]
        while chain[-1].one is not None:
            before = self.ops.get(chain[-1].one)
            if before is None or before.shared or before.compute != self._call:
                break
            chain.append(before)
        return tuple(reversed(chain))

    # -- entry -------------------------------------------------------------------------
    def validate_request(self, request: Any) -> Any:
        """The request validated against the input schema (a model instance), if any."""
        schema = self._schema
        if schema is None or isinstance(request, schema):
            return request
        try:
            return schema.model_validate(request)
        except ValidationError as exc:
            errors = _jsonable_errors(exc.errors(include_url=False))
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in errors) or str(exc)
            raise RequestValidationError(f"request does not match {schema.__name__}: {detail}", errors) from None

    async def execute(self, request: Any, timeout_s: float | None = None, trace: Trace | None = None) -> Any:
        """Run the graph for one request; raises a RequestError subclass on failure.

        A failed or late request cancels the work it started (tasks here, and the
        backend's calls it submitted). ``trace`` records the nodes that ran."""
        if timeout_s is None:
            timeout_s = self.plan.timeout_s
        run = _Run(self.input_id, self.validate_request(request), trace)
        if trace is not None:
            trace.mark(self.input_id)
        try:
            if timeout_s is None:
                return await self._eval(self.output_id, run)
            async with asyncio.timeout(timeout_s):
                return await self._eval(self.output_id, run)
        except BaseException as exc:
            self.backend.cancel(run.submitted)
            if timeout_s is not None and isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"graph {self.plan.name!r} did not answer within {timeout_s:g}s; its remaining work was cancelled"
                ) from None
            raise
        finally:
            if run.shared:
                for future in run.shared.values():
                    future.cancel()  # (a no-op for those done) consumers still waiting stop too

    # -- evaluation ----------------------------------------------------------------------
    def _eval(self, node_id: str, run: _Run) -> Coroutine[Any, Any, Any]:
        """What computes ``node_id`` (not yet in ``run.values``); each ``compute`` stores the
        node's value in ``run.values`` and returns it."""
        op = self.ops[node_id]
        if op.shared:
            return self._shared(op, run)
        return op.compute(op, run)

    async def _shared(self, op: _Op, run: _Run) -> Any:
        """A node several consumers read: computed once, in the task of the first to ask for
        it (no task of its own); the others wait for its future."""
        waiting = run.shared.get(op.id)
        if waiting is not None:
            return await waiting
        future = run.shared[op.id] = asyncio.get_running_loop().create_future()
        try:
            value = await op.compute(op, run)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the first consumer raises it, the others may not ask
            raise
        future.set_result(value)
        return value

    def _missing(self, needs: tuple[str, ...], run: _Run) -> Awaitable[Any] | None:
        """What computes the nodes of ``needs`` not yet in ``run.values`` (None: nothing)."""
        values = run.values
        if len(needs) == 1:
            return None if needs[0] in values else self._eval(needs[0], run)
        missing = [n for n in needs if n not in values]
        if not missing:
            return None
        if len(missing) == 1:
            return self._eval(missing[0], run)
        return self._eval_all(missing, run)

    async def _eval_all(self, missing: list[str], run: _Run) -> None:
        """Several nodes at once: the first on this task, the others as tasks of their own."""
        tasks = [asyncio.ensure_future(self._eval(n, run)) for n in missing[1:]]
        try:
            await self._eval(missing[0], run)
            for task in tasks:
                await task
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _call(self, op: _Op, run: _Run) -> Any:
        """A deployment call, after the calls of its chain (``op.chain``), all in this frame (no
        coroutine per link): each submitted to the backend, its value passed on as it is."""
        values = run.values
        chain = op.chain
        first = chain[0]
        one = first.one
        if one is not None:  # the common case, inline: a node with one node input
            if one not in values:
                source = self.ops[one]  # _eval, inline
                await (self._shared(source, run) if source.shared else source.compute(source, run))
        elif first.needs:
            pending = self._missing(first.needs, run)
            if pending is not None:
                await pending
        submit = self.backend.submit
        value = None
        for link in chain:
            only_arg = link.only_arg
            args = (values[only_arg],) if only_arg is not None else link.positional(values)
            kwargs = (
                {k: values[ref] if is_node else ref for k, (is_node, ref) in link.kwargs.items()}
                if link.kwargs
                else _NONE
            )
            if self.observer is not None:
                value = await self._call_observed(link, run, args, kwargs, self.observer)
                continue
            if run.trace is not None:
                value = await self._call_traced(link, run, args, kwargs, run.trace)
                continue
            try:
                value = await submit(link.id, link.deployment, link.method, args, kwargs)
            except (RequestError, asyncio.CancelledError):
                raise
            except Exception as exc:  # the deployment's own failure: named after its node
                raise _node_error(link, exc) from exc
            if self._keep_values:
                run.submitted.append(value)
            values[link.id] = value
        return value

    async def _call_observed(
        self, op: _Op, run: _Run, args: tuple[Any, ...], kwargs: dict[str, Any], observer: ExecutionObserver
    ) -> Any:
        """:meth:`_call` told to the observer: the call's inputs (values as the backend sees
        them: results on the local backend) and when it started and returned."""
        started = time.perf_counter()
        if run.trace is not None:
            value = await self._call_traced(op, run, args, kwargs, run.trace)
        else:
            try:
                value = await self.backend.submit(op.id, op.deployment, op.method, args, kwargs)
            except (RequestError, asyncio.CancelledError):
                raise
            except Exception as exc:  # the deployment's own failure: named after its node
                raise _node_error(op, exc) from exc
            if self._keep_values:
                run.submitted.append(value)
            run.values[op.id] = value
        observer.call_finished(op.id, args, kwargs, started, time.perf_counter())
        return value

    async def _call_traced(
        self, op: _Op, run: _Run, args: tuple[Any, ...], kwargs: dict[str, Any], trace: Trace
    ) -> Any:
        """:meth:`_call` with a span, current while the call runs (batchers and handles read it)."""
        span = trace.begin_node(op.id)
        token = CURRENT.set(span)
        try:
            with trace.current(span):
                value = await self.backend.submit(op.id, op.deployment, op.method, args, kwargs, span)
        except (RequestError, asyncio.CancelledError) as exc:
            span.finish(exc)
            raise
        except Exception as exc:
            span.finish(exc)
            raise _node_error(op, exc) from exc
        finally:
            CURRENT.reset(token)
        span.finish()
        if self._keep_values:
            run.submitted.append(value)
        run.values[op.id] = value
        return value

    async def _glue(self, op: _Op, run: _Run) -> Any:
        """Fused glue: run inline on fetched values."""
        pending = self._missing(op.needs, run) if op.needs else None
        if pending is not None:
            await pending
        values = run.values
        span = run.trace.begin_node(op.id) if run.trace is not None else None
        keywords = [values[ref] if is_node else ref for is_node, ref in op.kwargs.values()]
        fetched = await self.backend.fetch([*op.positional(values), *keywords])
        count = len(fetched) - len(op.kwargs)
        try:
            value = op.fn(*fetched[:count], **dict(zip(op.kwargs, fetched[count:], strict=True)))
        except Exception as exc:  # the user's function: named after its node
            if span is not None:
                span.finish(exc)
            raise _node_error(op, exc) from exc
        if span is not None:
            span.finish()
        values[op.id] = value
        return value

    async def _attr(self, op: _Op, run: _Run) -> Any:
        pending = self._missing(op.needs, run)
        if pending is not None:
            await pending
        (source,) = await self.backend.fetch(list(op.positional(run.values)))
        key = op.key
        try:
            value = op.fn(source, key)
        except (KeyError, AttributeError, IndexError, TypeError) as exc:
            if op.from_input:
                raise RequestValidationError(
                    f"request has no field {key!r} (read by node {op.id!r})",
                    [{"loc": ["body", str(key)], "msg": "Field required", "type": "missing"}],
                ) from None
            raise _node_error(op, exc) from exc
        if run.trace is not None:
            run.trace.mark(op.id)
        run.values[op.id] = value
        return value

    async def _switch(self, op: _Op, run: _Run) -> Any:
        values = run.values
        if op.selector not in values:
            await self._eval(op.selector, run)
        (selector,) = await self.backend.fetch([values[op.selector]])
        chosen: Ref | None = None
        arm = -1  # the arm's number as the plan's guards count them; -1: the default
        if op.truthy:
            arm = 0 if bool(selector) == op.arms[0][0] else len(op.arms) - 1
            chosen = op.arms[arm][1]
        else:
            for index, (value, ref) in enumerate(op.arms):
                if selector == value:
                    chosen, arm = ref, index
                    break
            else:
                chosen = op.default
        if chosen is None:
            arms = ", ".join(repr(v) for v, _ in op.arms)
            raise NodeExecutionError(
                op.id, None, f"selector value {selector!r} matches no branch ({arms}) and the switch has no default"
            )
        if self.observer is not None:
            self.observer.switch_taken(op.id, arm)
        is_node, ref = chosen
        value = ref  # a constant arm
        if is_node:
            value = values[ref] if ref in values else await self._eval(ref, run)
        if run.trace is not None:
            run.trace.mark(op.id)
        values[op.id] = value
        return value

    async def _output(self, op: _Op, run: _Run) -> Any:
        """The graph's output: every value fetched, in the plan's form."""
        one = op.one
        if one is not None:
            if one not in run.values:
                await self._eval(one, run)
        elif op.needs:
            pending = self._missing(op.needs, run)
            if pending is not None:
                await pending
        fetched = await self.backend.fetch(list(op.positional(run.values)))
        if run.trace is not None:
            run.trace.mark(op.id)
        form = op.form
        if form == "single":
            value = fetched[0]
        elif form == "dict":
            value = dict(zip(op.keys, fetched, strict=True))
        else:
            value = fetched if form == "list" else tuple(fetched)
        run.values[op.id] = value
        return value

    async def _missing_node(self, op: _Op, run: _Run) -> Any:  # pragma: no cover - plans never ask
        raise GraphError(f"node {op.id!r} ({op.node.kind}) cannot be evaluated")


def _getattr_or_item(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return value[key]
    return getattr(value, key)


def _node_error(op: _Op, exc: BaseException) -> NodeExecutionError:
    if isinstance(exc, NodeExecutionError):
        return exc
    error: NodeExecutionError = NodeExecutionError.wrapping(op.id, op.node.deployment, exc)
    return error


def _jsonable_errors(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        item = {k: v for k, v in err.items() if k in ("loc", "msg", "type", "input")}
        item["loc"] = list(item.get("loc", ()))
        try:
            json.dumps(item.get("input"))
        except (TypeError, ValueError):
            item["input"] = repr(item.get("input"))
        out.append(item)
    return out
