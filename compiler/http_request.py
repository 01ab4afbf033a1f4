"""Which graphs get the raw HTTP request, and where Ray Serve style apps are routed.

A Ray Serve app's ingress reads the HTTP request itself (``await request.json()``,
``await request.body()``, ``request.query_params``). graphserve hands the ingress a
Starlette ``Request`` instead of the parsed JSON body when every call that reads the
graph's input takes it in a parameter that is

- annotated as a Starlette (or FastAPI) ``Request``, or
- unannotated, on an app without an InputNode (``app = Ingress.bind(...)``), as in
  Ray Serve, where ``async def __call__(self, request)`` is the usual spelling.

Annotations are recognised by module and name (``starlette.requests.Request`` and its
subclasses, ``fastapi.Request``, or an unresolvable string ending in ``Request``): the
compiler never imports starlette. A parameter annotated with anything else (``Any``,
``dict``, a pydantic model) gets the JSON body as before.
"""

from __future__ import annotations

import inspect
from typing import Any

from graphserve.errors import Diagnostic

from . import edgetypes
from .codes import Code
from .ir import GraphIR, IRNode, NodeArg

_REQUEST_CLASSES = {
    ("starlette.requests", "Request"),
    ("starlette.requests", "HTTPConnection"),
    ("fastapi", "Request"),
    ("fastapi.requests", "Request"),
}


def is_request_annotation(annotation: Any) -> bool:
    """True for a Starlette/FastAPI Request class (or subclass), or a string naming one."""
    if isinstance(annotation, str):
        return annotation.strip().strip("'\"").rpartition(".")[2] == "Request"
    for klass in getattr(annotation, "__mro__", ()):
        if (getattr(klass, "__module__", ""), getattr(klass, "__qualname__", "")) in _REQUEST_CLASSES:
            return True
    return False


def _parameter(fn: Any, slot: int | str, is_method: bool) -> inspect.Parameter | None:
    try:
        params = list(inspect.signature(inspect.unwrap(fn)).parameters.values())
    except (TypeError, ValueError):
        return None
    if is_method and params:
        params = params[1:]
    if isinstance(slot, str):
        return next((p for p in params if p.name == slot), None)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if slot < len(positional):
        return positional[slot]
    return next((p for p in params if p.kind is p.VAR_POSITIONAL), None)


def _wants_request(ir: GraphIR, node: IRNode, slot: int | str) -> bool:
    from .validate import _is_plain_method, resolve_callable  # validate imports nothing from here

    fn = resolve_callable(ir, node)
    dep = ir.deployments.get(node.deployment or "")
    if fn is None or dep is None:
        return False
    is_method = not dep.is_function and _is_plain_method(dep.target, node.method or "__call__")
    param = _parameter(fn, slot, is_method)
    if param is None:
        return False
    if param.annotation is inspect.Parameter.empty:
        return ir.raw_ingress
    resolved = edgetypes.hints(fn).get(param.name, param.annotation)
    return is_request_annotation(resolved)


def http_request(ir: GraphIR) -> tuple[bool, list[Diagnostic]]:
    """Whether the graph's input is the HTTP request itself; a diagnostic when its readers disagree."""
    if ir.input is None:
        return False, []
    readers: list[tuple[IRNode, bool]] = []
    for consumer in sorted(ir.dag.successors(ir.input)):
        node = ir.node(consumer)
        slots: list[int | str] = [i for i, a in enumerate(node.args) if a == NodeArg(ir.input)]
        slots += [k for k, a in node.kwargs.items() if a == NodeArg(ir.input)]
        for slot in slots:
            readers.append((node, node.kind == "call" and _wants_request(ir, node, slot)))
    wanted = [node.id for node, wants in readers if wants]
    if not wanted:
        return False, []
    if len(wanted) == len(readers):
        return True, []
    others = sorted({node.id for node, wants in readers if not wants})
    first = ir.node(wanted[0])
    problem = Diagnostic(
        Code.TYPE_MISMATCH,
        f"{', '.join(wanted)} take(s) the HTTP request (a Starlette Request) but {', '.join(others)} "
        "read(s) the request as a JSON body; the graph's input cannot be both",
        first.id,
        first.location,
        "read the body inside the Request-taking method, or drop the Request annotation",
    )
    return False, [problem]


def ingress_route_prefix(ir: GraphIR) -> str | None:
    """The app's route: its own ``route_prefix``, else the ingress deployment's (Ray Serve 1.x style)."""
    if ir.route_prefix is not None or not ir.raw_ingress or ir.ingress is None:
        return ir.route_prefix
    dep = ir.deployments.get(ir.node(ir.ingress).deployment or "")
    if dep is not None and isinstance(dep.options.get("route_prefix"), str):
        return str(dep.options["route_prefix"])
    return None
