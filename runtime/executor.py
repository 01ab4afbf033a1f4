"""The executor: walks a Plan for one request (torch.fx's Interpreter, for dataflow).

Evaluation is demand-driven from the output: a node is computed when a consumer
needs it, and all inputs of a node are started together, so independent nodes run
concurrently and a node starts as soon as its inputs are ready. A switch evaluates
its selector first and then *only* the selected branch: nodes that feed only untaken
branches are never started (the plan's guards say which those are). A node read by
several consumers is computed once per request.

Fused nodes (attr, glue, switch, output) run inline; deployment calls go to the
backend. Every failure is turned into an error that names the node:
:class:`NodeExecutionError` (500), :class:`RequestValidationError` for a request that
lacks a field the graph selects (422), :class:`DeadlineExceededError` past the
deadline (504), whose remaining work is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Any

from graphserve.errors import (
    DeadlineExceededError,
    GraphError,
    NodeExecutionError,
    RequestError,
    RequestValidationError,
)
from graphserve.plan import ConstValue, NodePlan, NodeRef, Plan

from .backend import Backend
from .construction import load_target
from .metrics import Metrics

_MISSING = object()


class _Run:
    """The state of one request: computed values and in-flight shared nodes."""

    __slots__ = ("refs", "tasks", "values")
    refs: list[Any]  # the calls a remote backend started for this request (set only there)

    def __init__(self, input_id: str, request: Any) -> None:
        self.values: dict[str, Any] = {input_id: request}
        self.tasks: dict[str, asyncio.Task[Any]] = {}


class _Op:
    """A node compiled for execution: its inputs as (is_node, node id or constant)."""

    __slots__ = (
        "args",
        "arms",
        "default",
        "deployment",
        "fn",
        "from_input",
        "id",
        "kwargs",
        "method",
        "node",
        "run",
        "shared",
        "truthy",
    )

    def __init__(self, node: NodePlan) -> None:
        self.node = node
        self.id = node.id
        self.args = [_ref(a) for a in node.args]
        self.kwargs = {k: _ref(v) for k, v in node.kwargs.items()}
        self.shared = len(node.consumers) > 1
        self.deployment = node.deployment
        self.method = node.method or "__call__"
        self.fn: Any = None
        self.arms: list[tuple[Any, tuple[bool, Any]]] = [(b.value, _ref(b.arg)) for b in node.branches]
        self.default = _ref(node.default) if node.default is not None else None
        self.truthy = {b.value for b in node.branches} <= {True, False} and node.default is None
        self.from_input = False


def _ref(arg: Any) -> tuple[bool, Any]:
    if isinstance(arg, NodeRef):
        return True, arg.node
    if isinstance(arg, ConstValue):
        return False, arg.value
    raise GraphError(f"argument {arg!r} cannot be evaluated per request")


class GraphExecutor:
    """Executes one Plan on one backend. Safe for many concurrent requests."""

    def __init__(self, plan: Plan, backend: Backend, metrics: Metrics | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.metrics = metrics
        self.input_id = plan.input
        self.output_id = plan.output
        self.ops: dict[str, _Op] = {}
        self._schema = load_target(plan, plan.input_schema) if plan.input_schema else None
        self._local = bool(getattr(backend, "local_values", False))  # values need no resolve()
        # A remote backend (Ray) starts calls with submit() and returns references at once.
        self._remote: Any = None if self._local or not hasattr(backend, "submit") else backend
        for node in plan.nodes:
            op = _Op(node)
            if node.kind == "call" and node.function:
                op.fn = load_target(plan, node.function)
            if node.kind == "attr":
                op.fn = operator.getitem if node.access == "item" else _getattr_or_item
                op.from_input = op.args[0] == (True, plan.input)
            self.ops[node.id] = op
        self._eval_fns: dict[str, Callable[[_Op, _Run], Awaitable[Any]]] = {
            "call": self._call,
            "attr": self._attr,
            "switch": self._switch,
            "output": self._output,
        }
        if self._remote is not None:
            self._eval_fns["call"] = self._call_remote
            self._eval_fns["output"] = self._output_remote

    # -- entry -------------------------------------------------------------------------
    def validate_request(self, request: Any) -> Any:
        """The request validated against the input schema (a model instance), if any."""
        schema = self._schema
        if schema is None or isinstance(request, schema):
            return request
        try:
            return schema.model_validate(request)
        except Exception as exc:  # pydantic.ValidationError
            errors = _jsonable_errors(exc.errors(include_url=False) if hasattr(exc, "errors") else [])
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in errors) or str(exc)
            raise RequestValidationError(f"request does not match {schema.__name__}: {detail}", errors) from None

    async def execute(self, request: Any, timeout_s: float | None = None) -> Any:
        """Run the graph for one request; raises a RequestError subclass on failure.

        A failed or late request cancels the work it started (tasks here, and on a remote
        backend the calls it submitted)."""
        if timeout_s is None:
            timeout_s = self.plan.timeout_s
        run = _Run(self.input_id, self.validate_request(request))
        remote = self._remote
        if remote is not None:
            run.refs = []
        try:
            if timeout_s is None:
                return await self._eval(self.output_id, run)
            async with asyncio.timeout(timeout_s):
                return await self._eval(self.output_id, run)
        except BaseException as exc:
            if remote is not None:
                remote.cancel(run.refs)
            if timeout_s is not None and isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"graph {self.plan.name!r} did not answer within {timeout_s:g}s; its remaining work was cancelled"
                ) from None
            raise
        finally:
            for task in run.tasks.values():
                task.cancel()

    # -- evaluation ----------------------------------------------------------------------
    async def _eval(self, node_id: str, run: _Run) -> Any:
        value = run.values.get(node_id, _MISSING)
        if value is not _MISSING:
            return value
        op = self.ops[node_id]
        if not op.shared:
            value = await self._eval_fns[op.node.kind](op, run)
            run.values[node_id] = value
            return value
        task = run.tasks.get(node_id)
        if task is None:
            task = asyncio.ensure_future(self._eval_fns[op.node.kind](op, run))
            run.tasks[node_id] = task
        value = await task
        run.values[node_id] = value
        return value

    async def _gather(self, refs: list[tuple[bool, Any]], run: _Run) -> list[Any]:
        """Values of ``refs``; unresolved node inputs are computed concurrently."""
        values = run.values
        pending = [i for i, (is_node, ref) in enumerate(refs) if is_node and ref not in values]
        if not pending:
            return [values[ref] if is_node else ref for is_node, ref in refs]
        if len(pending) == 1:
            await self._eval(refs[pending[0]][1], run)
        else:
            tasks = [asyncio.ensure_future(self._eval(refs[i][1], run)) for i in pending[1:]]
            try:
                await self._eval(refs[pending[0]][1], run)
                for task in tasks:
                    await task
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
        return [values[ref] if is_node else ref for is_node, ref in refs]

    async def _inputs(self, op: _Op, run: _Run) -> tuple[list[Any], dict[str, Any]]:
        if not op.kwargs:
            return await self._gather(op.args, run), {}
        keys = list(op.kwargs)
        values = await self._gather([*op.args, *op.kwargs.values()], run)
        n = len(op.args)
        return values[:n], dict(zip(keys, values[n:], strict=True))

    async def _call(self, op: _Op, run: _Run) -> Any:
        args, kwargs = await self._inputs(op, run)
        if op.fn is not None:  # fused glue: inline
            try:
                if not self._local:
                    args = [await self.backend.resolve(a) for a in args]
                    kwargs = {k: await self.backend.resolve(v) for k, v in kwargs.items()}
                return op.fn(*args, **kwargs)
            except Exception as exc:
                raise _node_error(op, exc) from exc
        metrics = self.metrics
        start = time.perf_counter() if metrics is not None else 0.0
        try:
            result = await self.backend.call(op.deployment or "", op.method, tuple(args), kwargs)
        except (RequestError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _node_error(op, exc) from exc
        if metrics is not None:
            metrics.observe(
                "graphserve_node_latency_seconds",
                time.perf_counter() - start,
                (("graph", self.plan.name), ("node", op.id)),
            )
        return result

    async def _call_remote(self, op: _Op, run: _Run) -> Any:
        """A deployment call on a remote backend: started, not awaited (its inputs travel as references)."""
        if op.fn is not None:  # fused glue runs here, on fetched values
            return await self._call(op, run)
        args, kwargs = await self._inputs(op, run)
        try:
            value = await self._remote.submit(op.id, op.deployment or "", op.method, tuple(args), kwargs)
        except (RequestError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _node_error(op, exc) from exc
        run.refs.append(value)
        return value

    async def _attr(self, op: _Op, run: _Run) -> Any:
        (source,) = await self._gather(op.args, run)
        if not self._local:
            source = await self.backend.resolve(source)
        key = op.node.key
        try:
            return op.fn(source, key)
        except (KeyError, AttributeError, IndexError, TypeError) as exc:
            if op.from_input:
                raise RequestValidationError(
                    f"request has no field {key!r} (read by node {op.id!r})",
                    [{"loc": ["body", str(key)], "msg": "Field required", "type": "missing"}],
                ) from None
            raise _node_error(op, exc) from exc

    async def _switch(self, op: _Op, run: _Run) -> Any:
        selector = await self._eval(op.node.selector or "", run)
        if not self._local:
            selector = await self.backend.resolve(selector)
        chosen: tuple[bool, Any] | None = None
        if op.truthy:
            chosen = op.arms[0][1] if bool(selector) == op.arms[0][0] else op.arms[-1][1]
        else:
            for value, ref in op.arms:
                if selector == value:
                    chosen = ref
                    break
            else:
                chosen = op.default
        if chosen is None:
            arms = ", ".join(repr(v) for v, _ in op.arms)
            raise NodeExecutionError(
                op.id, None, f"selector value {selector!r} matches no branch ({arms}) and the switch has no default"
            )
        (value,) = await self._gather([chosen], run)
        return value

    async def _output(self, op: _Op, run: _Run) -> Any:
        values = await self._gather(op.args, run)
        form = op.node.form
        if form == "single":
            return values[0]
        if form == "dict":
            return dict(zip(op.node.keys, values, strict=True))
        return values if form == "list" else tuple(values)

    async def _output_remote(self, op: _Op, run: _Run) -> Any:
        """The output on a remote backend: every value is fetched (all are already running)."""
        values = [await self.backend.resolve(v) for v in await self._gather(op.args, run)]
        form = op.node.form
        if form == "single":
            return values[0]
        if form == "dict":
            return dict(zip(op.node.keys, values, strict=True))
        return values if form == "list" else tuple(values)


def _getattr_or_item(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return value[key]
    return getattr(value, key)


def _node_error(op: _Op, exc: BaseException) -> NodeExecutionError:
    if isinstance(exc, NodeExecutionError):
        return exc
    error: NodeExecutionError = NodeExecutionError.wrapping(op.id, op.deployment, exc)
    return error


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
