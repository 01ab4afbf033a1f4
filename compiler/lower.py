"""Lowering: the DSL's bind objects -> :class:`GraphIR`.

Walks from the app's output, gives every node a stable id (deployment.method, with
``#2``, ``#3`` for repeats, in a deterministic walk order), turns constructor arguments
that are deployments into handles, and notes structural problems (several inputs,
nodes where plain values are needed, name clashes, dead nodes) as diagnostics rather
than raising, so validation can report everything at once.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from graphserve import packing as builtin_glue
from graphserve.dsl import (
    App,
    CallNode,
    DAGNode,
    Deployment,
    DeploymentNode,
    Glue,
    InputNode,
    SelectNode,
    SwitchNode,
)
from graphserve.errors import Diagnostic, Location
from graphserve.plan import SLOPlan

from .codes import Code
from .ir import Arg, ConstArg, GraphIR, HandleArg, IRDeployment, IRNode, NodeArg, StructArg


class _Lowerer:
    def __init__(self, app: App) -> None:
        self.app = app
        self.ir = GraphIR(
            name=app.name,
            timeout_s=app.timeout_s,
            route_prefix=app.route_prefix,
            slo=(
                SLOPlan(p99_s=app.slo.p99_ms / 1000, rate_rps=float(app.slo.rate), headroom=app.slo.headroom)
                if app.slo is not None
                else None
            ),
            location=app.location,
        )
        self.diagnostics: list[Diagnostic] = []
        self.node_ids: dict[int, str] = {}  # id(DSL node) -> IR id
        self.deployment_names: dict[int, str] = {}  # id(DeploymentNode or Deployment) -> name
        self.name_owner: dict[str, Any] = {}  # deployment name -> target
        self.used_ids: set[str] = set()
        self.inputs: list[InputNode] = []
        self.seen_deployment_nodes: list[DeploymentNode] = []
        self.selections: dict[tuple[str, str, str], str] = {}  # (source, access, key) -> attr node
        self.input_substitute: DAGNode | None = None  # what the app's InputNodes stand for (App.inputs_as)

    # -- helpers ---------------------------------------------------------------------
    def problem(
        self,
        code: str,
        message: str,
        location: Location | None,
        node: str | None = None,
        hint: str | None = None,
        severity: str = "error",
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, node, location, hint, severity))

    def fresh_id(self, base: str) -> str:
        if base not in self.used_ids:
            self.used_ids.add(base)
            return base
        n = 2
        while f"{base}#{n}" in self.used_ids:
            n += 1
        self.used_ids.add(f"{base}#{n}")
        return f"{base}#{n}"

    # -- deployments -----------------------------------------------------------------
    def deployment_name(self, key: Any, deployment: Deployment[Any], location: Location | None) -> str:
        if id(key) in self.deployment_names:
            return self.deployment_names[id(key)]
        name = deployment.name
        explicit = "name" in deployment.deployment_options
        owner = self.name_owner.get(name)
        if owner is not None and owner is not deployment.target:
            self.problem(
                Code.DUPLICATE_NAME,
                f"two different deployments are named {name!r} ({_qualname(owner)} and {_qualname(deployment.target)})",
                location,
                hint="give one of them another name with .options(name=...)",
            )
        elif owner is not None:
            if explicit:
                self.problem(
                    Code.DUPLICATE_NAME,
                    f"deployment name {name!r} is bound twice with different arguments",
                    location,
                    hint="give each binding its own name with .options(name=...)",
                )
            base, n = name, 1
            while name in self.name_owner:
                name = f"{base}_{n}"
                n += 1
        self.name_owner[name] = deployment.target
        self.deployment_names[id(key)] = name
        return name

    def lower_deployment(self, node: DeploymentNode) -> str:
        if id(node) in self.deployment_names:
            return self.deployment_names[id(node)]
        dep = node._deployment
        name = self.deployment_name(node, dep, node._location)
        self.seen_deployment_nodes.append(node)
        ird = IRDeployment(
            name=name,
            target=dep.target,
            is_function=False,
            options=dep.deployment_options,
            location=dep._location,
        )
        self.ir.deployments[name] = ird
        self.ir.handles.add_node(name)
        ird.init_args = [self.init_arg(a, name, node._location) for a in node._args]
        ird.init_kwargs = {k: self.init_arg(v, name, node._location) for k, v in node._kwargs.items()}
        return name

    def lower_function_deployment(self, dep: Deployment[Any], location: Location | None) -> str:
        key = dep
        if id(key) in self.deployment_names:
            return self.deployment_names[id(key)]
        name = self.deployment_name(key, dep, location)
        self.ir.deployments[name] = IRDeployment(
            name=name,
            target=dep.target,
            is_function=True,
            options=dep.deployment_options,
            location=dep._location,
            bound=False,
        )
        self.ir.handles.add_node(name)
        return name

    def init_arg(self, value: Any, owner: str, location: Location | None) -> Arg:
        if isinstance(value, DeploymentNode):
            target = self.lower_deployment(value)
            self.ir.handles.add_edge(owner, target)
            return HandleArg(target)
        if _is_bound_function(value):  # Ray Serve: a bound function deployment arrives as a handle too
            target = self.lower_function_deployment(value._target, value._location)
            self.deployment_names[id(value)] = target
            self.ir.handles.add_edge(owner, target)
            return HandleArg(target)
        if isinstance(value, DAGNode):
            self.problem(
                Code.NODE_IN_CONSTRUCTOR,
                f"constructor argument of {owner!r} is a graph node ({value!r}); "
                "constructors take plain values or other deployments (as handles)",
                location,
                node=owner,
                hint="pass per-request data to a method with .method.bind(...) instead",
            )
            return ConstArg(None)
        if isinstance(value, (list, tuple)) and _contains(value, DAGNode):
            form: Literal["list", "tuple"] = "list" if isinstance(value, list) else "tuple"
            return StructArg(form, tuple((i, self.init_arg(v, owner, location)) for i, v in enumerate(value)))
        if isinstance(value, dict) and _contains(value, DAGNode):
            return StructArg("dict", tuple((k, self.init_arg(v, owner, location)) for k, v in value.items()))
        hidden = [v for v in getattr(value, "__dict__", {}).values() if _contains(v, DAGNode)]
        if hidden and not isinstance(value, type):
            self.problem(
                Code.NODE_IN_CONSTRUCTOR,
                f"constructor argument of {owner!r} is a {type(value).__name__} holding {hidden[0]!r}; "
                "graphserve finds bound deployments only as arguments or in lists, tuples and dicts",
                location,
                node=owner,
                hint=f"pass {hidden[0]!r} to {owner}.bind(...) itself and wrap the handle in the constructor",
            )
        return ConstArg(value)

    # -- dataflow nodes --------------------------------------------------------------
    def arg(self, value: Any, consumer: str, location: Location | None) -> Arg:
        if isinstance(value, DeploymentNode):
            self.problem(
                Code.DEPLOYMENT_AS_ARGUMENT,
                f"{value!r} is passed to {consumer!r} as a call argument; a bound deployment is not a value",
                location,
                hint="call one of its methods (node.method.bind(...)), or pass it to a constructor to get a handle",
            )
            return ConstArg(None)
        if isinstance(value, DAGNode):
            return NodeArg(self.lower(value))
        if isinstance(value, (list, tuple, dict)) and _contains(value, DAGNode):
            return NodeArg(self.lower_pack(value, location))
        return ConstArg(value)

    def lower_pack(self, value: list[Any] | tuple[Any, ...] | dict[Any, Any], location: Location | None) -> str:
        if isinstance(value, dict):
            fn: Any = builtin_glue.pack_dict
            node = IRNode(id=self.fresh_id("pack_dict"), kind="call", location=location, glue=fn)
            node.kwargs = {str(k): self.arg(v, node.id, location) for k, v in value.items()}
        else:
            fn = builtin_glue.pack_list if isinstance(value, list) else builtin_glue.pack_tuple
            node = IRNode(id=self.fresh_id(fn.__name__), kind="call", location=location, glue=fn)
            node.args = [self.arg(v, node.id, location) for v in value]
        self.ir.add(node)
        return node.id

    def lower(self, value: DAGNode) -> str:
        if id(value) in self.node_ids:
            return self.node_ids[id(value)]
        node_id = self._lower(value)
        self.node_ids[id(value)] = node_id
        return node_id

    def _lower(self, value: DAGNode) -> str:
        loc = value._location
        substitute = self.app.inputs_as
        if isinstance(value, InputNode) and substitute is not None and value is not substitute[0]:
            if self.input_substitute is None:  # e.g. a DAGDriver's adapter in front of the graph's InputNode
                self.input_substitute = substitute[1]()
            return self.lower(self.input_substitute)
        if isinstance(value, InputNode):
            if self.inputs and self.inputs[0] is not value:
                self.problem(
                    Code.MULTIPLE_INPUTS,
                    "the graph uses more than one InputNode",
                    loc,
                    hint="create one gs.InputNode() and select fields from it",
                )
                return self.ir.input or "input"
            self.inputs.append(value)
            node = IRNode(id="input", kind="input", location=loc, schema=value._schema)
            self.used_ids.add("input")
            self.ir.input = node.id
            self.ir.add(node)
            return node.id
        if isinstance(value, SelectNode):
            source = self.lower(value._source)
            same = self.selections.get((source, value._access, repr(value._key)))
            if same is not None:  # `inp.x` written twice is one node
                return same
            suffix = f".{value._key}" if value._access == "attr" else f"[{value._key!r}]"
            node = IRNode(
                id=self.fresh_id(source + suffix),
                kind="attr",
                location=loc,
                key=value._key,
                access="item" if value._access == "item" else "attr",
                args=[NodeArg(source)],
            )  # type: ignore[arg-type]
            self.ir.add(node)
            self.selections[(source, value._access, repr(value._key))] = node.id
            return node.id
        if isinstance(value, CallNode):
            return self.lower_call(value)
        if isinstance(value, SwitchNode):
            return self.lower_switch(value)
        if isinstance(value, DeploymentNode):
            return self.lower_ingress(value)
        raise TypeError(f"unknown node type {type(value).__name__}")  # pragma: no cover

    def lower_call(self, value: CallNode) -> str:
        loc = value._location
        target = value._target
        if isinstance(target, DeploymentNode):
            dep = self.lower_deployment(target)
            method = value._method or "__call__"
            node = IRNode(id=self.fresh_id(f"{dep}.{method}"), kind="call", location=loc, deployment=dep, method=method)
        elif isinstance(target, Deployment):
            dep = self.lower_function_deployment(target, loc)
            node = IRNode(id=self.fresh_id(dep), kind="call", location=loc, deployment=dep, method="__call__")
        else:
            assert isinstance(target, Glue)
            node = IRNode(id=self.fresh_id(target.__name__), kind="call", location=loc, glue=target.fn)
        self.used_ids.add(node.id)
        node.args = [self.arg(a, node.id, loc) for a in value._args]
        node.kwargs = {k: self.arg(v, node.id, loc) for k, v in value._kwargs.items()}
        self.ir.add(node)
        return node.id

    def lower_switch(self, value: SwitchNode) -> str:
        loc = value._location
        node = IRNode(id=self.fresh_id("switch"), kind="switch", location=loc)
        selector = self.arg(value._selector, node.id, loc)
        if not isinstance(selector, NodeArg):
            self.problem(
                Code.BAD_SWITCH,
                "the selector of a switch must be a graph node",
                loc,
                node.id,
                hint="pass a node (e.g. inp.kind, or model_out > 0.5)",
            )
        else:
            node.selector = selector.node
        for arm, branch in value._branches.items():
            if not isinstance(arm, (bool, int, str, type(None))):
                self.problem(Code.BAD_SWITCH, f"switch arm {arm!r} is not a bool, int, str or None", loc, node.id)
            node.branches.append((arm, self.arg(branch, node.id, loc)))
        if value._has_default:
            node.default = self.arg(value._default, node.id, loc)
        self.ir.add(node)
        return node.id

    def lower_ingress(self, value: DeploymentNode) -> str:
        """A bound deployment used as the app: its ``__call__`` gets the request itself.

        As in Ray Serve, a ``__call__(self)`` without parameters is called without the request,
        and a deployment with only named methods is an app too (reached through its handle:
        ``handle.method.remote(...)``).
        """
        dep = self.lower_deployment(value)
        self.ir.raw_ingress = True
        call = _own_method(value._deployment.target, "__call__")
        node = IRNode(
            id=self.fresh_id(f"{dep}.__call__"),
            kind="call",
            location=value._location,
            deployment=dep,
            method="__call__",
            args=[NodeArg(self.ensure_input())] if call is not None and _takes_an_argument(call, True) else [],
        )
        self.ir.add(node)
        self.ir.ingress = node.id
        return node.id

    def ensure_input(self) -> str:
        if self.ir.input is None:
            node = IRNode(id="input", kind="input", location=self.app.location)
            self.used_ids.add("input")
            self.ir.input = node.id
            self.ir.add(node)
        return self.ir.input

    # -- the whole graph ---------------------------------------------------------------
    def run(self) -> GraphIR:
        output = self.app.output
        out = IRNode(id="output", kind="output", location=self.app.location)
        if isinstance(output, dict):
            out.form = "dict"
            out.keys = [str(k) for k in output]
            values = list(output.values())
        elif isinstance(output, (list, tuple)):
            out.form = "list" if isinstance(output, list) else "tuple"
            values = list(output)
        else:
            values = [output]
        for value in values:
            if isinstance(value, DeploymentNode) and out.form == "single":  # Ray Serve style: the app is its ingress
                out.args.append(NodeArg(self.lower(value)))
            elif _contains(value, DAGNode):
                out.args.append(self.arg(value, out.id, self.app.location))
            else:
                self.problem(
                    Code.BAD_OUTPUT,
                    f"graph output {value!r} is not a graph node",
                    self.app.location,
                    hint="pass the node(s) whose values the graph returns to gs.graph(...)",
                )
                out.args.append(ConstArg(value))
        self._function_ingress(out)
        self.ensure_input()
        self.used_ids.add("output")
        self.ir.add(out)
        self.ir.output = out.id
        self._dead_nodes()
        return self.ir

    def _function_ingress(self, out: IRNode) -> None:
        """``app = fn.bind()`` with no InputNode: the function gets the request (Ray Serve style)."""
        if self.inputs or out.form != "single" or not isinstance(out.args[0], NodeArg):
            return
        node = self.ir.node(out.args[0].node)
        dep = self.ir.deployments.get(node.deployment or "")
        if node.kind == "call" and dep is not None and dep.is_function and not node.args and not node.kwargs:
            self.ir.raw_ingress = True
            self.ir.ingress = node.id
            if _takes_an_argument(dep.target, False):  # a function without parameters is called without it
                node.args = [NodeArg(self.ensure_input())]
                self.ir.add(node)

    def _dead_nodes(self) -> None:
        roots: list[DAGNode] = [*self.inputs, *self.seen_deployment_nodes]
        seen: set[int] = set()
        while roots:
            node = roots.pop()
            for consumer in node._consumers:
                if id(consumer) in seen:
                    continue
                seen.add(id(consumer))
                roots.append(consumer)
                lowered = id(consumer) in self.node_ids or id(consumer) in self.deployment_names
                if not lowered and not isinstance(consumer, DeploymentNode):
                    self.problem(
                        Code.DEAD_NODE,
                        f"{_describe(consumer)} is built but reaches no output; it will never run",
                        consumer._location,
                        severity="warning",
                        hint="pass it to gs.graph(...) or remove it",
                    )


def _describe(node: DAGNode) -> str:
    if isinstance(node, CallNode):
        target = node._target
        if isinstance(target, DeploymentNode):
            return f"call {target._deployment.name}.{node._method or '__call__'}"
        if isinstance(target, Deployment):
            return f"call {target.name}"
        return f"glue {getattr(target, '__name__', 'function')}"
    return type(node).__name__


def _is_bound_function(value: Any) -> bool:
    """``fn.bind(...)`` of a function deployment with plain (non-node) arguments."""
    return (
        isinstance(value, CallNode)
        and isinstance(value._target, Deployment)
        and value._target.is_function
        and not _contains([value._args, value._kwargs], DAGNode)
    )


def _own_method(cls: Any, name: str) -> Any:
    """``cls``'s own (or inherited, but not ``object``'s or ``type``'s) attribute ``name``, or None."""
    for klass in inspect.getmro(cls) if isinstance(cls, type) else ():
        if klass is not object and name in vars(klass):
            return vars(klass)[name]
    return None


def _takes_an_argument(fn: Any, is_method: bool) -> bool:
    """Whether ``fn`` can be called with one positional argument (the request)."""
    if isinstance(fn, staticmethod):
        fn, is_method = fn.__func__, False
    try:
        params = list(inspect.signature(inspect.unwrap(fn)).parameters.values())
    except (TypeError, ValueError):
        return True
    if is_method and params:
        params = params[1:]
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _contains(value: Any, kind: type) -> bool:
    if isinstance(value, kind):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains(v, kind) for v in value)
    if isinstance(value, dict):
        return any(_contains(v, kind) for v in value.values())
    return False


def _qualname(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def lower(app: App) -> tuple[GraphIR, list[Diagnostic]]:
    """Lower an app to the IR; structural problems come back as diagnostics."""
    lowerer = _Lowerer(app)
    ir = lowerer.run()
    return ir, lowerer.diagnostics
