"""Validation: every check on the IR, before anything is constructed or run.

Each check appends :class:`~graphserve.errors.Diagnostic` s; nothing raises until
:func:`check` has collected them all (Hamilton's habit), so one build shows every
problem with its stable code, node, file:line and a hint. Type inference runs here
too: :func:`validate` returns the type each node produces, for the planner's edge
labels.
"""

from __future__ import annotations

import inspect
import json
import numbers
import operator
from typing import Any

from graphserve.dsl import batch_config
from graphserve.errors import Diagnostic, GraphValidationError

from . import edgetypes
from .codes import Code
from .digraph import cycles, topological_order
from .ir import Arg, ConstArg, GraphIR, IRDeployment, IRNode, NodeArg

#: Options graphserve implements, with a check for each value.
_OPTION_CHECKS: dict[str, tuple[str, Any]] = {
    "name": ("a non-empty string", lambda v: isinstance(v, str) and v != "" and "/" not in v),
    "num_replicas": ("an integer >= 1 (or 'auto')", lambda v: v == "auto" or (_is_int(v) and v >= 1)),
    "num_cpus": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
    "num_gpus": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
    "max_ongoing_requests": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "max_concurrent_queries": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "max_queued_requests": ("an integer >= 0, or -1 for no limit", lambda v: _is_int(v) and v >= -1),
    "max_retries": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "route_prefix": ("a path starting with '/'", lambda v: v is None or (isinstance(v, str) and v.startswith("/"))),
    "timeout_s": ("a number > 0", lambda v: v is None or (_is_num(v) and v > 0)),
    "ray_actor_options": ("a dict", lambda v: v is None or isinstance(v, dict)),
    "user_config": ("JSON-serializable (a dict, list, str, number or None)", lambda v: _json_ok(v)),
    "fuse": ("True or False", lambda v: isinstance(v, bool)),
}

#: Ray Serve options accepted for compatibility but not implemented; each warns once.
UNSUPPORTED_OPTIONS = {
    "autoscaling_config": "autoscaling is not implemented; num_replicas (else min_replicas, at least 1) replicas run",
    "health_check_period_s": "health checks are not run per replica",
    "health_check_timeout_s": "health checks are not run per replica",
    "graceful_shutdown_wait_loop_s": "shutdown waits for in-flight requests instead",
    "graceful_shutdown_timeout_s": "shutdown waits for in-flight requests instead",
    "logging_config": "use Python's logging configuration",
    "placement_group_bundles": "replicas are placed by num_cpus/num_gpus",
    "placement_group_strategy": "replicas are placed by num_cpus/num_gpus",
    "max_replicas_per_node": "replicas are placed by num_cpus/num_gpus",
    "version": "deployments are not versioned",
    "request_router_class": "replicas are chosen by power of two choices",
    "request_router_config": "replicas are chosen by power of two choices",
}

_RAY_ACTOR_OPTIONS_USED = {"num_cpus", "num_gpus"}
_COMPARISONS = (operator.gt, operator.ge, operator.lt, operator.le)  # `node > 0.5` glue: returns bool

_BATCH_CHECKS: dict[str, tuple[str, Any]] = {
    "max_batch_size": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "batch_wait_timeout_s": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
    "max_concurrent_batches": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "adaptive": ("True or False", lambda v: isinstance(v, bool)),
    "sized_by_fn": ("True or False", lambda v: isinstance(v, bool)),
}


def _json_ok(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _qual(target: Any) -> str:
    return getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))


class _Token:
    """Stands for one argument while binding a signature."""

    def __init__(self, arg: Arg) -> None:
        self.arg = arg


def resolve_callable(ir: GraphIR, node: IRNode) -> Any:
    """The Python callable a call node invokes, or None if it does not exist."""
    if node.glue is not None:
        return node.glue
    dep = ir.deployments[node.deployment or ""]
    if dep.is_function:
        return dep.target
    method = node.method or "__call__"
    if not any(method in vars(k) for k in inspect.getmro(dep.target) if k is not object):
        return None
    return getattr(dep.target, method)


def _bind(fn: Any, args: list[Arg], kwargs: dict[str, Arg], is_method: bool) -> inspect.BoundArguments:
    sig = inspect.signature(fn)
    tokens = [_Token(a) for a in args]
    ktokens = {k: _Token(v) for k, v in kwargs.items()}
    if is_method:
        return sig.bind(None, *tokens, **ktokens)
    return sig.bind(*tokens, **ktokens)


def _is_plain_method(cls: Any, method: str) -> bool:
    for klass in inspect.getmro(cls):
        if method in vars(klass):
            return not isinstance(vars(klass)[method], (staticmethod, classmethod))
    return True


class _Validator:
    def __init__(self, ir: GraphIR) -> None:
        self.ir = ir
        self.diagnostics: list[Diagnostic] = []
        self.types: dict[str, Any] = {}

    def problem(
        self,
        code: str,
        message: str,
        node: IRNode | IRDeployment | None,
        hint: str | None = None,
        severity: str = "error",
    ) -> None:
        location = node.location if node is not None else None
        name = node.id if isinstance(node, IRNode) else (node.name if node is not None else None)
        self.diagnostics.append(Diagnostic(code, message, name, location, hint, severity))

    def run(self) -> None:
        for dep in self.ir.deployments.values():
            self.check_options(dep)
            self.check_constructor(dep)
        self.check_cycles()
        for node_id in topological_order(self.ir.dag) or []:
            node = self.ir.node(node_id)
            getattr(self, f"visit_{node.kind}")(node)

    # -- deployments -----------------------------------------------------------------
    def check_options(self, dep: IRDeployment) -> None:
        for key, value in dep.options.items():
            if key in UNSUPPORTED_OPTIONS:
                self.problem(
                    Code.UNSUPPORTED_OPTION,
                    f"option {key!r} is accepted but ignored: {UNSUPPORTED_OPTIONS[key]}",
                    dep,
                    severity="warning",
                )
                continue
            check = _OPTION_CHECKS.get(key)
            if check is None:
                self.problem(
                    Code.BAD_OPTION,
                    f"unknown option {key!r}",
                    dep,
                    hint=f"known options: {', '.join(sorted(_OPTION_CHECKS))}",
                )
            elif not check[1](value):
                self.problem(Code.BAD_OPTION, f"option {key}={value!r} is invalid: expected {check[0]}", dep)
        if dep.options.get("user_config") is not None and not callable(getattr(dep.target, "reconfigure", None)):
            self.problem(
                Code.BAD_OPTION,
                f"user_config is set but {dep.name} has no reconfigure() method to receive it",
                dep,
                hint=f"add `def reconfigure(self, config: dict) -> None` to {dep.name} (called as each replica starts)",
            )
        actor_options = dep.options.get("ray_actor_options") or {}
        if isinstance(actor_options, dict):
            for key in actor_options:
                if key not in _RAY_ACTOR_OPTIONS_USED:
                    self.problem(
                        Code.UNSUPPORTED_OPTION,
                        f"ray_actor_options[{key!r}] is accepted but ignored",
                        dep,
                        severity="warning",
                    )
            for key in _RAY_ACTOR_OPTIONS_USED & set(actor_options):
                if not (_is_num(actor_options[key]) and actor_options[key] >= 0):
                    self.problem(
                        Code.BAD_OPTION,
                        f"ray_actor_options[{key!r}]={actor_options[key]!r} is invalid: expected a number >= 0",
                        dep,
                    )
        if not dep.is_function:
            for name, member in inspect.getmembers(dep.target):
                self.check_batch(dep, name, member)
        else:
            self.check_batch(dep, dep.name, dep.target)

    def check_batch(self, dep: IRDeployment, name: str, member: Any) -> None:
        config = batch_config(member)
        if config is None:
            return
        where = f"{dep.name}.{name}" if not dep.is_function else dep.name
        original = inspect.unwrap(member)
        if not (inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original)):
            self.problem(
                Code.BATCH_NOT_ASYNC,
                f"@gs.batch method {where} is not async",
                dep,
                hint=f"declare it `async def {name}(self, items: list[...]) -> list[...]`",
            )
        for key, value in config.items():
            label, ok = _BATCH_CHECKS[key]
            if not ok(value):
                self.problem(Code.BAD_OPTION, f"@gs.batch {key}={value!r} on {where} is invalid: expected {label}", dep)

    def check_constructor(self, dep: IRDeployment) -> None:
        if dep.is_function:
            return
        try:
            _bind(dep.target, dep.init_args, dep.init_kwargs, is_method=False)
        except TypeError as exc:
            self.problem(
                Code.SIGNATURE,
                f"{dep.name}.bind(...) does not match {_qual(dep.target)}.__init__: {exc}",
                dep,
                hint=f"signature: {_qual(dep.target)}{_signature(dep.target)}",
            )
        except ValueError:
            pass  # no signature available (builtins): nothing to check

    def check_cycles(self) -> None:
        for cycle in cycles(self.ir.handles):
            path = " -> ".join([*cycle, cycle[0]])
            dep = self.ir.deployments[cycle[0]]
            self.problem(
                Code.HANDLE_CYCLE,
                f"deployments hold handles to each other in a cycle: {path}",
                dep,
                hint="a deployment cannot (indirectly) receive a handle to itself",
            )

    # -- dataflow nodes (visited in topological order, so input types are known) -----------
    def type_of(self, arg: Arg) -> Any:
        if isinstance(arg, NodeArg):
            return self.types.get(arg.node, edgetypes.ANY)
        if isinstance(arg, ConstArg):
            return type(arg.value) if arg.value is not None else type(None)
        return edgetypes.ANY

    def visit_input(self, node: IRNode) -> None:
        schema = node.schema
        if schema is not None and not (isinstance(schema, type) and hasattr(schema, "model_validate")):
            self.problem(
                Code.BAD_SCHEMA,
                f"InputNode schema {schema!r} is not a pydantic model",
                node,
                hint="pass a pydantic.BaseModel subclass, or no schema",
            )
            schema = None
        self.types[node.id] = schema if schema is not None else edgetypes.ANY

    def visit_attr(self, node: IRNode) -> None:
        source = self.type_of(node.args[0])
        known, tp = edgetypes.field_type(source, node.key, node.access)
        if not known:
            what = (
                "the input schema"
                if isinstance(node.args[0], NodeArg) and node.args[0].node == self.ir.input
                else "the value"
            )
            fields = getattr(source, "model_fields", None) or edgetypes.hints(source)
            self.problem(
                Code.UNKNOWN_FIELD,
                f"{what} {edgetypes.describe(source)} has no field {node.key!r}",
                node,
                hint=f"fields: {', '.join(sorted(map(str, fields)))}" if fields else None,
            )
        self.types[node.id] = tp

    def visit_call(self, node: IRNode) -> None:
        fn = resolve_callable(self.ir, node)
        dep = self.ir.deployments.get(node.deployment or "")
        if fn is None and dep is not None:
            methods = sorted(n for n, m in inspect.getmembers(dep.target, callable) if not n.startswith("_"))
            if node.id == self.ir.ingress and methods:  # Ray Serve: an app reached through its handle's methods
                self.types[node.id] = edgetypes.ANY
                return
            self.problem(
                Code.UNKNOWN_METHOD,
                f"deployment {dep.name} ({_qual(dep.target)}) has no method {node.method!r}",
                node,
                hint=f"methods: {', '.join(methods) or '(none)'}",
            )
            self.types[node.id] = edgetypes.ANY
            return
        if not callable(fn):
            self.problem(Code.NOT_CALLABLE, f"{node.method!r} of {dep.name if dep else '?'} is not callable", node)
            self.types[node.id] = edgetypes.ANY
            return
        is_method = dep is not None and not dep.is_function and _is_plain_method(dep.target, node.method or "")
        self.types[node.id] = bool if fn in _COMPARISONS else edgetypes.return_type(fn)
        try:
            bound = _bind(fn, node.args, node.kwargs, is_method)
        except TypeError as exc:
            self.problem(
                Code.SIGNATURE,
                f"arguments do not match {_qual(fn)}: {exc}",
                node,
                hint=f"signature: {_qual(fn)}{_signature(fn)}",
            )
            return
        except ValueError:
            return
        params = inspect.signature(fn).parameters
        for name, value in bound.arguments.items():
            kind = params[name].kind
            tokens = (
                list(value)
                if kind is inspect.Parameter.VAR_POSITIONAL
                else list(value.values())
                if kind is inspect.Parameter.VAR_KEYWORD
                else [value]
            )
            expected = edgetypes.param_type(fn, name)
            for token in tokens:
                if isinstance(token, _Token):
                    self.check_edge(node, token.arg, name, expected)

    def check_edge(self, node: IRNode, arg: Arg, param: str, expected: Any) -> None:
        if not isinstance(arg, NodeArg):
            if (
                isinstance(arg, ConstArg)
                and arg.value is not None
                and isinstance(expected, type)
                and not edgetypes.is_compatible(type(arg.value), expected)
            ):
                self.problem(
                    Code.TYPE_MISMATCH,
                    f"parameter {param!r} expects {edgetypes.describe(expected)}, "
                    f"but the constant {arg.value!r} is {type(arg.value).__name__}",
                    node,
                )
            return
        produced = self.types.get(arg.node, edgetypes.ANY)
        if not edgetypes.is_compatible(produced, expected):
            self.problem(
                Code.TYPE_MISMATCH,
                f"parameter {param!r} expects {edgetypes.describe(expected)}, but {arg.node!r} produces "
                f"{edgetypes.describe(produced)}",
                node,
                hint="fix the wiring, or the annotations of the producer or consumer",
            )

    def visit_switch(self, node: IRNode) -> None:
        arms = [self.type_of(arg) for _, arg in node.branches]
        if node.default is not None:
            arms.append(self.type_of(node.default))
        self.types[node.id] = edgetypes.union_of(arms)
        if not node.branches and node.default is None:
            self.problem(Code.BAD_SWITCH, "switch has no branches", node)

    def visit_output(self, node: IRNode) -> None:
        self.types[node.id] = edgetypes.ANY


def _signature(fn: Any) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def validate(ir: GraphIR) -> tuple[list[Diagnostic], dict[str, Any]]:
    """Every diagnostic (errors and warnings) and the inferred type of each node."""
    validator = _Validator(ir)
    validator.run()
    return validator.diagnostics, validator.types


def check(ir: GraphIR, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Raise one :class:`GraphValidationError` listing every error; return the warnings."""
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        raise GraphValidationError(sorted(diagnostics, key=_order), graph=ir.name)
    return [d for d in diagnostics if d.severity != "error"]


def _order(d: Diagnostic) -> tuple[int, str, int, str]:
    return (
        0 if d.severity == "error" else 1,
        d.location.file if d.location else "",
        d.location.line if d.location else 0,
        d.code,
    )
