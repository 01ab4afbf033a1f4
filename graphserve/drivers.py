"""Ray Serve's deployment graph driver (Ray 2.0-2.6): ``from graphserve.drivers import DAGDriver``.

Ray's deployment graph API is graphserve's model, so its graphs run as written::

    with InputNode() as inp:
        out = model.forward.bind(inp)
    app = DAGDriver.bind(out, http_adapter=json_request)        # one DAG
    app = DAGDriver.options(route_prefix="/dag").bind({"/a": dag_a, "/b": dag_b})  # one per sub-path
    handle = serve.run(app)
    handle.predict.remote(5).result()                            # the DAG's input is 5
    handle.predict_with_route.remote("/a", 5).result()

``DAGDriver.bind`` makes a graphserve App whose first node is the driver: it turns an
HTTP request into the DAG's input with the ``http_adapter`` (default: the Starlette
``Request`` itself, as Ray's), and a handle call's arguments into the input as Ray's
``InputNode`` reads them (:mod:`graphserve.dag`). With several DAGs, the driver also
reads the route (the request's path below the app's prefix, or ``predict_with_route``'s
first argument) and only that DAG runs (a ``gs.switch``); an unknown route is a
:class:`~graphserve.errors.RouteNotFoundError` (HTTP 404) naming the routes. Everything else is
graphserve's: the compiler checks the DAGs before anything runs, and independent nodes
run concurrently.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graphserve import dsl
from graphserve.dag import RoutedRequest
from graphserve.errors import GraphError, HTTPAdapterError, RequestValidationError, RouteNotFoundError

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["DAGDriver", "DAGDriverDeployment"]


class DAGDriverDeployment:
    """The driver deployment: HTTP request (or handle arguments) in, the DAG's input out."""

    def __init__(self, http_adapter: str | Any = None, routes: list[str] | None = None) -> None:
        self.adapter = _load(http_adapter) if isinstance(http_adapter, str) else http_adapter
        self.routes = list(routes or [])

    async def adapt(self, request: Request) -> Any:
        """The DAG's input: the adapted HTTP request, or what a handle call passed."""
        if isinstance(request, RoutedRequest):
            return request.value
        if not _is_starlette_request(request):
            return request
        return await apply_adapter(self.adapter, request)

    def route(self, request: Request) -> str:
        """Which DAG runs: ``predict_with_route``'s route, or the HTTP path below the app's prefix."""
        if isinstance(request, RoutedRequest):
            route = request.route
        elif _is_starlette_request(request):
            path = request.scope.get("path", "/")
            root = str(request.scope.get("graphserve.route_prefix", "") or "")
            route = path[len(root) :] if root not in ("", "/") and path.startswith(root) else path
        else:
            raise RequestValidationError(
                f"this DAGDriver serves several routes {self.routes}: call handle.predict_with_route.remote(route, ...)"
            )
        route = "/" + route.strip("/")
        if route not in self.routes:
            raise RouteNotFoundError(f"no DAG at route {route!r}; routes: {self.routes}")
        return route


async def apply_adapter(adapter: Any, request: Request) -> Any:
    """Run ``adapter`` on ``request`` as FastAPI would inject its parameters (see ``graphserve.http_adapters``)."""
    if adapter is None:
        return request
    if _is_model(adapter):
        return _validate(adapter, await _json(request))
    kwargs: dict[str, Any] = {}
    hints = _hints(adapter)
    for param in inspect.signature(adapter).parameters.values():
        annotation = hints.get(param.name, param.annotation)
        if _is_request_type(annotation):
            kwargs[param.name] = request
        elif _is_model(annotation) or _is_model_mapping(annotation):
            kwargs[param.name] = _validate(annotation, await _json(request))
        elif param.name in request.query_params:
            kwargs[param.name] = _convert(param.name, request.query_params[param.name], annotation)
        elif param.default is inspect.Parameter.empty:
            raise RequestValidationError(
                f"query parameter {param.name!r} is required",
                [{"loc": ["query", param.name], "msg": "Field required", "type": "missing"}],
            )
    result = adapter(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def check_adapter(adapter: Any) -> None:
    """Ray's checks of an ``http_adapter``: callable, and a function's parameters annotated."""
    if adapter is None or _is_model(adapter):
        return
    if isinstance(adapter, str):
        adapter = _load(adapter)
    if not callable(adapter):
        raise HTTPAdapterError(f"http_adapter must be a callable or a pydantic model, got {adapter!r}")
    hints = _hints(adapter)
    for param in inspect.signature(adapter).parameters.values():
        if param.annotation is inspect.Parameter.empty and param.name not in hints:
            raise HTTPAdapterError(
                f"http_adapter {getattr(adapter, '__qualname__', adapter)!r}: parameter {param.name!r} must be "
                "type annotated (a starlette Request, a pydantic model, or a type read from the query string)"
            )


# -- the builder: DAGDriver.bind(...) -----------------------------------------------------------
class _DAGDriver:
    """``DAGDriver``: ``.options(route_prefix=..., name=..., num_replicas=...)`` and ``.bind(dags, http_adapter=)``."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options

    def options(self, **options: Any) -> _DAGDriver:
        return _DAGDriver({**self._options, **options})

    def bind(self, dags: Any, http_adapter: Any = None) -> dsl.App:
        """The App serving ``dags`` (one DAG node, or ``{"/route": dag, ...}``) behind the driver."""
        check_adapter(http_adapter)
        options = dict(self._options)
        route_prefix = options.pop("route_prefix", None)
        location = dsl.caller_location()
        routes = sorted(dags) if isinstance(dags, Mapping) else None
        driver = dsl.Deployment(DAGDriverDeployment, {"name": "DAGDriver", **options}, location)
        node = driver.bind(http_adapter=_reference(http_adapter), routes=routes)
        request = dsl.InputNode()
        adapted = _Adapted(node, request)
        if routes is None:
            output: Any = _as_output(dags, adapted)
        else:
            for route in routes:
                if not (isinstance(route, str) and route.startswith("/")):
                    raise GraphError(f"DAGDriver routes must be paths starting with '/', got {route!r}")
            selector = node.route.bind(request)
            branches = {"/" + route.strip("/"): _as_output(dags[route], adapted) for route in routes}
            output = dsl.switch(selector, branches)
        return dsl.App(output, route_prefix=route_prefix, location=location, inputs_as=(request, adapted.node))

    def __repr__(self) -> str:
        return "DAGDriver"


DAGDriver = _DAGDriver({})


class _Adapted:
    """The driver's ``adapt`` node, built only when something reads the DAG's input."""

    def __init__(self, driver: dsl.DeploymentNode, request: dsl.InputNode) -> None:
        self._driver = driver
        self._request = request
        self._node: dsl.DAGNode | None = None

    def node(self) -> dsl.DAGNode:
        if self._node is None:
            self._node = self._driver.adapt.bind(self._request)
        return self._node


def _as_output(dag: Any, adapted: _Adapted) -> Any:
    """A DAG's output node; a bound class (or a bound function without arguments) is called with the input."""
    if isinstance(dag, dsl.DeploymentNode):
        target = dag._deployment.target
        mro = target.__mro__ if isinstance(target, type) else ()
        call = next((vars(k)["__call__"] for k in mro if k is not object and "__call__" in vars(k)), None)
        takes_input = call is not None and _positional_count(call) > 1
        return dag.__call__.bind(adapted.node()) if takes_input else dag.__call__.bind()
    if not isinstance(dag, dsl.DAGNode):
        raise GraphError(f"DAGDriver.bind takes a DAG node (or a dict of them by route), got {dag!r}")
    return dag


def _positional_count(fn: Any) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _reference(adapter: Any) -> Any:
    """An importable adapter as its ``module:qualname`` (so the Plan stays JSON), else the object."""
    module, qualname = getattr(adapter, "__module__", None), getattr(adapter, "__qualname__", "")
    if adapter is None or not module or "<" in qualname:
        return adapter
    path = f"{module}:{qualname}"
    try:
        return path if _load(path) is adapter else adapter
    except (ImportError, AttributeError):
        return adapter


def _load(path: str) -> Any:
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


# -- adapter helpers ---------------------------------------------------------------------------
def _is_starlette_request(value: Any) -> bool:
    try:
        from starlette.requests import Request
    except ImportError:  # pragma: no cover - starlette is a dependency
        return False
    return isinstance(value, Request)


def _is_request_type(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.strip("'\"").rpartition(".")[2] == "Request"
    return isinstance(annotation, type) and any(
        klass.__name__ in ("Request", "HTTPConnection") and klass.__module__.startswith(("starlette", "fastapi"))
        for klass in annotation.__mro__
    )


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_validate")


def _is_model_mapping(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (dict, Mapping) and len(args) == 2 and _is_model(args[1])


def _validate(annotation: Any, body: Any) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(annotation).validate_python(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        raise RequestValidationError(f"request body does not match the http_adapter: {detail}", errors) from None


def _convert(name: str, text: str, annotation: Any) -> Any:
    kind = annotation if annotation in (int, float, bool, str) else str
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        return kind(text)
    except ValueError:
        raise RequestValidationError(
            f"query parameter {name!r}={text!r} is not a valid {kind.__name__}",
            [{"loc": ["query", name], "msg": f"Input should be a valid {kind.__name__}", "type": kind.__name__}],
        ) from None


async def _json(request: Request) -> Any:
    body = await request.body()
    if not body:
        return None
    try:
        return await request.json()
    except ValueError as exc:
        raise RequestValidationError(f"the request body is not JSON: {exc}") from None


def _hints(fn: Any) -> dict[str, Any]:
    """``fn``'s annotations, each resolved on its own (one unresolvable name spoils no other)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # any failure of a string annotation: resolve them one by one
        pass
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in (getattr(fn, "__annotations__", {}) or {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:  # keep the annotation as written (e.g. a TYPE_CHECKING import)
            hints[name] = annotation
    return hints
