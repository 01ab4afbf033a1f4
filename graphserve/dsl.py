"""The bind-style DSL: deployments, graph nodes, inputs and branches.

This module only *records* what the user wrote; it checks nothing and runs nothing.
Every node keeps the file:line of the user's ``.bind(...)`` call so the compiler can
point at it. The compiler (``graphserve.compiler``) reads these objects; the runtime
never sees them.

    @gs.deployment
    class Model:
        async def __call__(self, x: float) -> float: ...

    with gs.InputNode() as inp:
        out = Model.bind().__call__.bind(inp.x)
    app = gs.graph(out)
"""

from __future__ import annotations

import copy
import operator
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, overload

from graphserve.errors import DeploymentOptionError, GraphError, Location

T = TypeVar("T")

BATCH_ATTR = "__gs_batch__"  # where @gs.batch (graphserve.batching) records its options
BATCH_EXPLICIT_ATTR = "__gs_batch_explicit__"  # ... and which of them the user wrote


def batch_config(fn: Any) -> dict[str, Any] | None:
    """The batching options ``@gs.batch`` recorded on ``fn``, or None."""
    config = getattr(fn, BATCH_ATTR, None)
    return dict(config) if isinstance(config, dict) else None


def batch_explicit(fn: Any) -> list[str]:
    """The ``@gs.batch`` options the user wrote on ``fn`` (the rest are defaults)."""
    explicit = getattr(fn, BATCH_EXPLICIT_ATTR, None)
    return list(explicit) if isinstance(explicit, list) else []


@dataclass(frozen=True)
class SLO:
    """A latency objective: ``p99_ms`` milliseconds at ``rate`` requests per second.

    ``gs.graph(output, slo=gs.SLO(p99_ms=50, rate=400, profile="profile.json"))``: the planner
    chooses batch sizes, waits, replicas and placement from the profile (``graphserve profile``
    writes one)."""

    p99_ms: float
    rate: float
    profile: str | None = None
    headroom: float = 0.8

    def __post_init__(self) -> None:
        for name in ("p99_ms", "rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SLO {name} must be a positive number, got {value!r}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"SLO headroom must be in (0, 1], got {self.headroom!r}")


def caller_location() -> Location | None:
    """The first stack frame outside the graphserve packages (compiler and runtime
    included): the user's call site."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "graphserve" and not module.startswith("graphserve."):
            return Location(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


class DAGNode:
    """Base of every node the user can pass around while building a graph."""

    _location: Location | None

    def __init__(self) -> None:
        self._location = caller_location()
        self._consumers: list[DAGNode] = []  # nodes built on this one (finds dead nodes)

    def _link(self, *values: Any) -> None:
        """Record this node as a consumer of every node among ``values`` (nested too)."""
        for value in values:
            if isinstance(value, DAGNode):
                value._consumers.append(self)
            elif isinstance(value, (list, tuple)):
                self._link(*value)
            elif isinstance(value, dict):
                self._link(*value.values())

    # Comparisons build cheap "glue" nodes, so `gs.cond(score > 0.5, ...)` reads naturally.
    # __eq__ is left alone: nodes must stay hashable and comparable by identity.
    def __gt__(self, other: Any) -> CallNode:
        return _glue_op(operator.gt, self, other)

    def __ge__(self, other: Any) -> CallNode:
        return _glue_op(operator.ge, self, other)

    def __lt__(self, other: Any) -> CallNode:
        return _glue_op(operator.lt, self, other)

    def __le__(self, other: Any) -> CallNode:
        return _glue_op(operator.le, self, other)

    def __bool__(self) -> bool:
        raise TypeError(
            "a graph node has no truth value while the graph is being built; "
            "use gs.cond(node, then, otherwise) or gs.switch(...) to branch on it"
        )


class _Selectable(DAGNode):
    """A node whose value can be indexed: ``node.field``, ``node["key"]``, ``node[0]``."""

    def __getattr__(self, name: str) -> SelectNode:
        if name.startswith("__") or name.startswith("_"):
            raise AttributeError(name)
        return SelectNode(self, name, "attr")

    def __getitem__(self, key: Any) -> SelectNode:
        return SelectNode(self, key, "item")


class InputNode(_Selectable):
    """Stands for the request. Usable as a context manager, as in Ray Serve.

    ``schema`` is an optional pydantic model: requests are validated against it and
    ``inp.field`` is checked against its fields at build time.
    """

    def __init__(self, schema: type | None = None) -> None:
        super().__init__()
        self._schema = schema

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"InputNode(schema={getattr(self._schema, '__name__', None)})"


class SelectNode(_Selectable):
    """``source.key`` (access="attr") or ``source[key]`` (access="item")."""

    def __init__(self, source: DAGNode, key: Any, access: str) -> None:
        super().__init__()
        self._source = source
        self._key = key
        self._access = access
        self._link(source)

    def __repr__(self) -> str:
        return f"SelectNode({self._source!r}, {self._key!r})"


class CallNode(_Selectable):
    """A call: a deployment's method, a function deployment, or a glue function."""

    def __init__(
        self,
        target: DeploymentNode | Deployment | Glue,
        method: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        self._target = target
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._link(*args, *kwargs.values())
        if isinstance(target, DeploymentNode):
            self._link(target)

    def __repr__(self) -> str:
        return f"CallNode({self._target!r}.{self._method})"


class SwitchNode(_Selectable):
    """Evaluates ``selector`` and then only the branch it selects."""

    def __init__(self, selector: Any, branches: dict[Any, Any], default: Any, has_default: bool) -> None:
        super().__init__()
        self._selector = selector
        self._branches = branches
        self._default = default
        self._has_default = has_default
        self._link(selector, *branches.values(), default)


class MethodRef:
    """``deployment_node.method``: call ``.bind(...)`` on it to make a call node."""

    def __init__(self, node: DeploymentNode, method: str) -> None:
        self._node = node
        self._method = method

    def bind(self, *args: Any, **kwargs: Any) -> CallNode:
        return CallNode(self._node, self._method, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphError(
            f"{self!r}(...) calls nothing while the app is being built: write {self!r}.bind(...) to wire a "
            f"call into the graph, or, on a running app, handle.{self._method}.remote(...)"
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphError(
            f"{self!r}.remote(...): this node is not running; run the app first "
            f"(handle = serve.run(app)) and call handle.{self._method}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"{self._node!r}.{self._method}"


class DeploymentNode(DAGNode):
    """A deployment bound to constructor arguments: ``Model.bind(...)``.

    ``node.method.bind(...)`` makes a call node. Passed as a constructor argument to
    another deployment, it arrives there as a handle.
    """

    def __init__(self, deployment: Deployment, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self._deployment = deployment
        self._args = args
        self._kwargs = kwargs
        self._link(*args, *kwargs.values())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and name != "__call__":
            raise AttributeError(name)
        if name in _MISUSES and not hasattr(self._deployment.target, name):
            return _Misuse(self._deployment.name, name)
        return MethodRef(self, name)

    def __repr__(self) -> str:
        return f"{self._deployment.name}.bind(...)"


_MISUSES = {
    "bind": "{name}.bind(...) is already bound: bind once, then call a method with "
    "{name}.bind(...).method.bind(...), or pass the node to another deployment's .bind(...) to get a handle",
    "remote": "{name}.bind(...) is not running: run it (handle = serve.run({name}.bind(...))) and call "
    "handle.remote(...)",
    "options": "options go on the deployment, before binding: {name}.options(...).bind(...)",
    "deploy": "{name}.bind(...) is an app, not a deployment: serve.run({name}.bind(...)), or {name}.deploy(...) "
    "(Ray Serve 1.x)",
}


class _Misuse:
    """``Model.bind().bind()`` and the like: a message saying what to write instead."""

    def __init__(self, name: str, attribute: str) -> None:
        self._message = _MISUSES[attribute].format(name=name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphError(self._message)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise GraphError(self._message)


class Deployment(Generic[T]):
    """What ``@gs.deployment`` makes of a class or function: ``.bind(...)`` makes graph nodes.

    ``gs.deployment`` makes :class:`graphserve.compat.Deployment`, this class plus Ray
    Serve 1.x's ``deploy()``/``get_handle()``/``delete()``/``url``, which run things.
    """

    def __init__(self, target: T, options: dict[str, Any], location: Location | None) -> None:
        self._target = target
        self._options = dict(options)
        self._location = location
        self.__doc__ = getattr(target, "__doc__", None)
        self.__wrapped__ = target

    @property
    def func_or_class(self) -> T:
        return self._target

    @property
    def target(self) -> T:
        return self._target

    @property
    def is_function(self) -> bool:
        return not isinstance(self._target, type)

    @property
    def name(self) -> str:
        return str(self._options.get("name") or getattr(self._target, "__name__", "deployment"))

    @property
    def deployment_options(self) -> dict[str, Any]:
        return dict(self._options)

    def options(self, **options: Any) -> Self:
        """A copy with some options changed, e.g. ``Model.options(name="a", num_replicas=2)``."""
        check_options(options)
        return self._with_options(options)

    def _with_options(self, options: dict[str, Any]) -> Self:
        clone = copy.copy(self)
        clone._options = {**self._options, **options}
        clone._location = caller_location() or self._location
        return clone

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """Bind constructor arguments (classes) or call arguments (functions)."""
        if self.is_function:
            return CallNode(self, None, args, kwargs)
        return DeploymentNode(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise GraphError(
            f"{self.name} is a deployment and cannot be called or constructed directly: build an app with "
            f"{self.name}.bind(...) and run it (handle = serve.run(app)), then call handle.remote(...); "
            f"the class or function itself is {self.name}.func_or_class"
        )

    def __repr__(self) -> str:
        return f"Deployment({self.name})"


class Glue:
    """A cheap pure function run inline by the executor (fused), not as a deployment."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "glue")

    def bind(self, *args: Any, **kwargs: Any) -> CallNode:
        return CallNode(self, None, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"glue({self.__name__})"


def check_options(options: dict[str, Any]) -> None:
    """What Ray Serve refuses as soon as the options are written (everything else is checked at build time)."""
    if "max_replicas_per_node" in options and "placement_group_bundles" in options:
        raise DeploymentOptionError(
            "Setting max_replicas_per_node is not allowed when placement_group_bundles is provided."
        )
    if "max_ongoing_requests" in options and options["max_ongoing_requests"] is None:
        raise DeploymentOptionError("max_ongoing_requests must be an integer >= 1, not None")


def _glue_op(op: Callable[[Any, Any], Any], left: Any, right: Any) -> CallNode:
    return CallNode(Glue(op), None, (left, right), {})


def glue(fn: Callable[..., Any]) -> Glue:
    """Mark a small pure function as glue: ``is_high = gs.glue(lambda s: s > 0.5)`` is not
    importable, so prefer a module-level ``def``; ``is_high.bind(score)`` makes a node."""
    return Glue(fn)


@overload
def deployment(_target: T) -> Deployment[T]: ...


@overload
def deployment(_target: None = None, **options: Any) -> Callable[[T], Deployment[T]]: ...


def deployment(_target: Any = None, **options: Any) -> Any:
    """Declare a deployment, bare (``@gs.deployment``) or with options
    (``@gs.deployment(num_replicas=2, num_gpus=1)``)."""
    location = caller_location()
    check_options(options)
    if _target is not None:
        return Deployment(_target, options, location)

    def wrap(target: Any) -> Deployment[Any]:
        return Deployment(target, options, location)

    return wrap


def cond(predicate: Any, then: Any, otherwise: Any) -> SwitchNode:
    """Run ``then`` when ``predicate`` is truthy, else ``otherwise``; the other side never runs."""
    return SwitchNode(predicate, {True: then, False: otherwise}, None, False)


_NO_DEFAULT = object()


def switch(selector: Any, branches: Mapping[Any, Any], default: Any = _NO_DEFAULT) -> SwitchNode:
    """Run only ``branches[selector]`` (or ``default``); no other branch runs."""
    has_default = default is not _NO_DEFAULT
    return SwitchNode(selector, dict(branches), default if has_default else None, has_default)


class App:
    """A graph ready to compile: its output (a node, or a list/tuple/dict of nodes) and options.

    ``inputs_as=(request, make_node)``: every ``InputNode`` of the graph other than
    ``request`` stands for the value of the node ``make_node()`` builds (once, when the
    compiler first meets such an ``InputNode``), computed from ``request``, the graph's one
    real input. Ray Serve's ``DAGDriver`` uses it to put its HTTP adapter in front of a
    graph written with its own ``InputNode``.
    """

    def __init__(
        self,
        output: Any,
        name: str | None = None,
        timeout_s: float | None = None,
        route_prefix: str | None = None,
        location: Location | None = None,
        inputs_as: tuple[InputNode, Callable[[], DAGNode]] | None = None,
        slo: SLO | None = None,
    ) -> None:
        self.output = output
        self.name = name or _default_name(output)
        self.named = name is not None  # an app run without a name is Ray Serve's "default" app
        self.timeout_s = timeout_s
        self.slo = slo
        self.route_prefix = route_prefix
        self.location = location
        self.inputs_as = inputs_as

    def __repr__(self) -> str:
        return f"App({self.name!r})"


def _default_name(output: Any) -> str:
    if isinstance(output, DeploymentNode):
        return output._deployment.name
    if isinstance(output, CallNode) and isinstance(output._target, DeploymentNode):
        return output._target._deployment.name
    if isinstance(output, CallNode) and isinstance(output._target, Deployment):
        return output._target.name
    return "default"


def graph(
    output: Any,
    name: str | None = None,
    *,
    timeout_s: float | None = None,
    route_prefix: str | None = None,
    slo: SLO | None = None,
) -> App:
    """Make an app from the graph's output node(s); ``slo``: let the planner choose the tunables."""
    if slo is not None and not isinstance(slo, SLO):
        raise TypeError(f"slo must be a gs.SLO(p99_ms=..., rate=...), got {type(slo).__name__}")
    return App(output, name=name, timeout_s=timeout_s, route_prefix=route_prefix, location=caller_location(), slo=slo)


def as_app(target: Any) -> App:
    """An App from an App or a bare node (a bound deployment is an app, as in Ray Serve)."""
    if isinstance(target, App):
        return target
    return App(target, location=caller_location())
