"""The HTTP ingress: an ASGI app serving one or more running graphs (``GraphRuntime``).

Graph routes (``POST /<graph name>`` or the plan's ``route_prefix``; a single graph is
also at ``/``; GET with a body is accepted too) are found by a plain ASGI path lookup
with no middleware, else by prefix as Ray Serve routes (a graph at ``/api`` answers
``/api/x``; the longest prefix wins; the request keeps its full path, and the matched
route is ``scope["graphserve.route_prefix"]``), and answered by their
:class:`~graphserve.runtime.graph_route.GraphRoute` (``graph_route.py``: read the body,
parse it with orjson, ``await runtime.execute(...)`` on the server's own event loop,
write orjson; each step a function). A plan whose ingress takes the request itself
(``plan.http_request``, Ray Serve style) gets a Starlette ``Request`` instead of the
parsed body, for any method; its output may be a Starlette ``Response`` (sent as it
is), bytes, or a str (sent as text when the app has no InputNode). Graphs can be
added and removed while serving (:meth:`Ingress.add_graph`, used by ``gs.run``).
Everything else (``/-/healthz``, ``/-/ready``, ``/-/metrics``, ``/-/graphs``,
``/-/graphs/<name>.svg``, ``/openapi.json``, and the live page: ``/-/``, ``/-/stats``,
``/-/events``, see ``graph_page.py``) is a small Starlette app. A browser opening ``/``
(``Accept: text/html``, no body) is sent to the page even where a graph is served at ``/``.

Answers (see ``http_errors``): 200 the output as JSON; 400 malformed JSON or a bad
``X-Request-Timeout-S``; 401 missing/wrong bearer token (when a token is set); 405
neither POST nor GET; 413 body above ``max_body_bytes``; 422 invalid body (pydantic's errors);
500 ``{"error", "node"}`` (the traceback is logged with the request id, never sent);
503 + ``Retry-After`` when the graph's queues or its ``max_in_flight`` bound are full,
while starting/stopping, or for a request cancelled when the shutdown bound ran out;
504 past the deadline (the graph's ``timeout_s`` or the server default, shortened by
the ``X-Request-Timeout-S`` header). Every response has
``X-Request-Id`` (the caller's when it sent a valid one).

Runtimes are started in the ASGI lifespan startup, so every constructor has run before
the server accepts connections; a failing one fails the startup (``startup_error``)
after stopping the graphs already started. Shutdown stops them. Rendering graphs needs
the compiler, which the runtime never imports: the caller passes ``render``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphserve.errors import DeploymentStartError, GraphError, RouteConflictError
from graphserve.plan import Plan

from . import http_defaults
from .drift import DEFAULT_WINDOW_S, DriftMonitor
from .drift import KINDS as DRIFT_KINDS
from .encoding import dumps
from .graph_page import GraphPage
from .graph_route import GraphRoute, RouteLimits, RouteObservers, valid_request_id
from .http_errors import error_body
from .live_stats import GraphView, LiveStats
from .metrics import Labels, Metrics
from .openapi import openapi_document
from .otel import exporter_if_configured
from .routing import DeploymentLoad
from .running_graph import GraphRuntime


class Renderer(Protocol):
    """``render(plan, format, figures=False)`` -> the drawing (bytes or str), e.g.
    ``graphserve.compiler.render.render``; ``figures``: room for the live page's figures."""

    def __call__(self, plan: Plan, fmt: str, *, figures: bool = False) -> bytes | str: ...


logger = logging.getLogger("graphserve.ingress")

_RENDER_TYPES = {"svg": "image/svg+xml", "png": "image/png", "dot": "text/vnd.graphviz"}
_OPS_PREFIX = "/-/"
ROUTE_PREFIX_KEY = "graphserve.route_prefix"  # the ASGI scope key naming the graph route a request matched
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Ingress:
    """The ASGI app; see the module docstring.

    ``runtimes`` are not started yet (the lifespan starts them). They share one
    :class:`Metrics` registry (``metrics``, by default the first runtime's), so
    ``/-/metrics`` is one exposition. ``tracer_provider``: an OpenTelemetry tracer provider
    to export request and node spans to (default: the one this process set, if any).
    """

    def __init__(
        self,
        runtimes: list[GraphRuntime],
        *,
        token: str | None = None,
        max_body_bytes: int = http_defaults.MAX_BODY_BYTES,
        max_in_flight: int | None = None,
        default_timeout_s: float | None = None,
        render: Renderer | None = None,
        metrics: Metrics | None = None,
        title: str = "graphserve",
        version: str = "0.1.0",
        allow_empty: bool = False,
        drift_window_s: float = DEFAULT_WINDOW_S,
        tracer_provider: Any = None,
    ) -> None:
        if not runtimes and not allow_empty:
            raise GraphError("the ingress needs at least one graph")
        if max_body_bytes <= 0:
            raise GraphError(f"max_body_bytes must be > 0, got {max_body_bytes}")
        if max_in_flight is not None and max_in_flight <= 0:
            raise GraphError(f"max_in_flight must be > 0, got {max_in_flight}")
        self.metrics = metrics if metrics is not None else (runtimes[0].metrics if runtimes else Metrics())
        for runtime in runtimes:
            runtime.metrics = self.metrics  # one registry: read by the executor made in start()
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.limits = RouteLimits(self.token, max_body_bytes, max_in_flight, default_timeout_s)
        if not drift_window_s > 0:
            raise GraphError(f"drift_window_s must be > 0, got {drift_window_s}")
        self.drift_window_s = drift_window_s
        self._drift_task: asyncio.Task[None] | None = None
        self.live = LiveStats(self.metrics)
        self.observers = RouteObservers(self.live)  # its OpenTelemetry exporter is set at startup
        self._tracer_provider = tracer_provider
        self.render = render
        self.routes: list[GraphRoute] = []
        self._prefixes: list[tuple[str, GraphRoute]] = []
        self._paths: dict[str, GraphRoute] = {}
        for runtime in runtimes:
            path = _route_path(runtime.plan)
            route = self._route(runtime, path)
            self._add_path(path, route)
            self.routes.append(route)
        if len(self.routes) == 1 and "/" not in self._paths:
            self._add_path("/", self.routes[0])
        self.graphs = {route.name: route for route in self.routes}
        if len(self.graphs) != len(self.routes):
            raise GraphError(f"two graphs have the same name: {sorted(r.name for r in self.routes)}")
        self.ready = False
        self.stopping = False
        self.startup_error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once started
        self._title, self._version = title, version
        self._refresh_openapi()
        self._refresh_prefixes()
        self.page = GraphPage(self.live, self._views)
        self._ops = _with_request_id(self._ops_app())
        self._describe_metrics()

    def _by_prefix(self, path: str) -> GraphRoute | None:
        """The graph whose route is the longest prefix of ``path`` (as Ray Serve routes), if any.

        ``/api`` answers ``/api/x`` but not ``/apix``; a graph at ``/`` answers every path
        but the server's own (``/-/...``, ``/openapi.json``).
        """
        if path.startswith(_OPS_PREFIX) or path == "/openapi.json":
            return None
        for prefix, route in self._prefixes:
            if prefix == "/" or path.startswith(prefix + "/"):
                return route
        return None

    def _refresh_prefixes(self) -> None:
        self._prefixes = sorted(((r.path, r) for r in self.routes), key=lambda item: len(item[0]), reverse=True)

    def _refresh_openapi(self) -> None:
        routes = [(r.path, r.plan) for r in self.routes]
        self._openapi = dumps(openapi_document(routes, self._title, self._version, token=self.token is not None))

    def _add_path(self, path: str, route: GraphRoute) -> None:
        if path.startswith(_OPS_PREFIX) or path == "/openapi.json":
            raise RouteConflictError(f"graph {route.name!r}: route {path!r} is reserved for the server", path)
        keys = {path, path.rstrip("/") or "/", path.rstrip("/") + "/"}
        for key in keys:
            other = self._paths.get(key)
            if other is not None and other is not route:
                raise RouteConflictError(f"graphs {other.name!r} and {route.name!r} both want route {path!r}", path)
        for key in keys:
            self._paths[key] = route

    # -- graphs added and removed while serving (gs.run / Ray Serve's serve.run) -----------
    async def add_graph(self, runtime: GraphRuntime, path: str | None = None) -> GraphRoute:
        """Start ``runtime`` (on this, the serving loop) and serve it at ``path`` (default: its route)."""
        name = runtime.plan.name
        if name in self.graphs:
            raise GraphError(f"a graph named {name!r} is already served at {self.graphs[name].path!r}")
        path = _route_path(runtime.plan) if path is None else (path.rstrip("/") or "/")
        route = self._route(runtime, path)
        probe = dict(self._paths)
        self._add_path(path, route)  # refuses a taken route before anything is constructed
        self._paths = probe
        runtime.metrics = self.metrics
        try:
            await runtime.start()
        except BaseException as exc:
            await _stop_quietly(runtime)
            if isinstance(exc, GraphError) or not isinstance(exc, Exception):
                raise
            raise DeploymentStartError(name, f"{type(exc).__name__}: {exc}") from exc
        self._add_path(path, route)
        self.routes.append(route)
        self.graphs[name] = route
        self._refresh_openapi()
        self._refresh_prefixes()
        logger.info("graph %r ready at %s", name, path)
        return route

    def _route(self, runtime: GraphRuntime, path: str) -> GraphRoute:
        route = GraphRoute(runtime, path, self.limits, self.metrics, self.observers)
        if runtime.plan.slo is not None:  # planned for an SLO: watch for drift from it
            route.drift = DriftMonitor(runtime.plan, self.drift_window_s, start=time.perf_counter())
        return route

    async def remove_graph(self, name: str) -> None:
        """Stop serving graph ``name`` and stop it (requests still running finish first on their own)."""
        route = self.graphs.pop(name, None)
        if route is None:
            return
        self.routes.remove(route)
        self._paths = {key: r for key, r in self._paths.items() if r is not route}
        self._refresh_openapi()
        self._refresh_prefixes()
        self.live.forget(name)
        await _stop_quietly(route.runtime)

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self._paths.get(scope["path"]) or self._by_prefix(scope["path"])
            if route is not None:
                if scope["method"] == "GET" and scope["path"] == "/" and _browser_visit(scope, route):
                    await self._ops(scope, receive, send)  # the page, not a 422 for a missing body
                    return
                scope[ROUTE_PREFIX_KEY] = route.path
                await route.serve(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._ops(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except BaseException as exc:
                    self.startup_error = exc
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start every graph (its constructors run here); on failure stop those started."""
        self.loop = asyncio.get_running_loop()
        self.observers.otel = exporter_if_configured(self._tracer_provider)
        started: list[GraphRuntime] = []
        try:
            for route in self.routes:
                try:
                    await route.runtime.start()
                except GraphError:
                    raise
                except Exception as exc:
                    raise DeploymentStartError(route.name, f"{type(exc).__name__}: {exc}") from exc
                started.append(route.runtime)
                logger.info("graph %r ready at %s", route.name, route.path)
        except BaseException:
            for runtime in reversed(started):
                await _stop_quietly(runtime)
            raise
        self.ready = True
        if any(route.drift is not None for route in self.routes):
            self._drift_task = self.loop.create_task(self._check_drift(), name="graphserve-drift")

    async def _check_drift(self) -> None:
        """Check drift even without traffic (a rate that fell to nothing is drift too)."""
        while True:
            await asyncio.sleep(self.drift_window_s / 10)
            now = time.perf_counter()
            for route in self.routes:
                if route.drift is not None:
                    route.drift.check(now)

    def begin_shutdown(self) -> None:
        """The server stops accepting connections: end the page's event streams."""
        self.page.close()

    async def shutdown(self) -> None:
        """Stop every graph (the server has already finished in-flight requests)."""
        self.page.close()
        self.stopping = True
        self.ready = False
        if self._drift_task is not None:
            self._drift_task.cancel()
        for route in reversed(self.routes):
            await _stop_quietly(route.runtime)

    # -- operations routes ---------------------------------------------------------------
    def _ops_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._root, methods=_ANY_METHOD),  # only a browser GET goes to the page
                Route("/-/healthz", self._healthz, methods=["GET"]),
                Route("/-/ready", self._ready, methods=["GET"]),
                Route("/-/metrics", self._metrics, methods=["GET"]),
                Route("/-/graphs", self._graphs, methods=["GET"]),
                Route("/-/graphs/{file}", self._graph_file, methods=["GET"]),
                Route("/openapi.json", self._openapi_json, methods=["GET"]),
                *self.page.routes(),
            ],
            exception_handlers={404: self._not_found},
        )

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        """Ray Serve's words for a path no graph answers, and the routes that are served."""
        routes = {route.name: route.path for route in self.routes}
        return _json_error(404, f"Path '{request.url.path}' not found. Graphs: {routes}")

    async def _root(self, request: Request) -> Response:
        """``/`` where no graph answers: a browser's GET goes to the page, others learn the routes."""
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/-/", status_code=307)
        routes = {route.name: route.path for route in self.routes}
        return _json_error(404, f"Path '/' not found (no graph at '/'). Graphs: {routes}; the live page is at /-/")

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _ready(self, request: Request) -> Response:
        graphs = {route.name: route.runtime.ready for route in self.routes}
        if self.ready and all(graphs.values()):
            return JSONResponse({"status": "ready", "graphs": graphs})
        state = "stopping" if self.stopping else ("failed" if self.startup_error else "starting")
        return JSONResponse({"status": state, "graphs": graphs}, status_code=503)

    async def _metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _graphs(self, request: Request) -> Response:
        data = {route.name: {"route": route.path, "plan": _plan_data(route.plan)} for route in self.routes}
        return Response(dumps({"graphs": data}), media_type="application/json")

    async def _graph_file(self, request: Request) -> Response:
        name, _, fmt = request.path_params["file"].rpartition(".")
        route = self.graphs.get(name)
        if route is None:
            return _json_error(404, f"no graph named {name!r}; graphs: {sorted(self.graphs)}")
        if fmt == "json":
            return Response(dumps(_plan_data(route.plan)), media_type="application/json")
        if fmt not in _RENDER_TYPES:
            return _json_error(404, f"unknown format {fmt!r}: use .json or one of {sorted(_RENDER_TYPES)}")
        render = self.render
        if render is None:
            return _json_error(501, "this server was started without a graph renderer")
        figures = fmt == "svg" and request.query_params.get("figures") == "1"  # the live page's drawing
        try:
            drawing = await asyncio.get_running_loop().run_in_executor(
                None, lambda: render(route.plan, fmt, figures=figures)
            )
        except GraphError as exc:
            return _json_error(501, str(exc))
        return Response(drawing, media_type=_RENDER_TYPES[fmt])

    async def _openapi_json(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

    def _views(self) -> list[GraphView]:
        """The served graphs as the live page sees them now."""
        views = []
        for route in self.routes:
            backend = route.runtime.backend
            load = backend.load() if backend is not None and route.runtime.ready else {}  # on this loop: never mid-stop
            views.append(
                GraphView(
                    name=route.name,
                    path=route.path,
                    plan=route.plan,
                    ready=route.runtime.ready,
                    in_flight=route.in_flight,
                    load=load,
                    batching={name: dep.batching for name, dep in load.items() if dep.batching},
                )
            )
        return views

    # -- metrics -------------------------------------------------------------------------
    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("graphserve_requests_total", "HTTP requests to graph routes, by graph and status")
        m.describe("graphserve_request_duration_seconds", "Time from request to response, by graph")
        m.describe("graphserve_node_latency_seconds", "Time a deployment call took, by graph and node")
        m.describe("graphserve_batch_size", "Sizes of the batches sent to @gs.batch methods")
        m.describe("graphserve_in_flight_requests", "Requests being answered, by graph")
        m.describe("graphserve_queue_depth", "Calls waiting for a replica, by graph and deployment")
        m.describe("graphserve_deployment_ongoing_requests", "Calls running on replicas, by graph and deployment")
        m.describe("graphserve_node_errors_total", "Failed requests, by graph and the node that failed")
        m.describe("graphserve_batch_size_limit", "The batch size limit now, by replica (adaptive batchers move it)")
        m.describe("graphserve_batch_wait_seconds", "The batch wait now, by replica (adaptive batchers move it)")
        m.describe("graphserve_batch_latency_budget_seconds", "An adaptive batcher's share of the SLO, by replica")
        m.describe("graphserve_drift", "1 while a graph's observed rate or p99 has left its plan's (by kind), else 0")
        m.describe("graphserve_drift_events", "Times a graph drifted from its plan, by kind")
        m.describe("graphserve_observed_rate_rps", "Requests per second over the drift window (graphs with an SLO)")
        m.describe("graphserve_observed_p99_seconds", "p99 latency over the drift window (graphs with an SLO)")
        m.describe("graphserve_planned_rate_rps", "The rate the graph's plan was made for")
        m.describe("graphserve_planned_p99_seconds", "The p99 the graph's plan allows (its SLO, or its prediction)")
        m.gauge("graphserve_drift", lambda: self._drift_gauge(lambda d, kind: float(d.states[kind].active)))
        m.gauge("graphserve_drift_events", lambda: self._drift_gauge(lambda d, kind: float(d.states[kind].events)))
        m.gauge("graphserve_observed_rate_rps", lambda: self._drift_gauge(lambda d, _: d.rate, kinds=("",)))
        m.gauge("graphserve_observed_p99_seconds", lambda: self._drift_gauge(lambda d, _: d.p99, kinds=("",)))
        m.gauge("graphserve_planned_rate_rps", lambda: self._drift_gauge(lambda d, _: d.planned_rate, kinds=("",)))
        m.gauge("graphserve_planned_p99_seconds", lambda: self._drift_gauge(lambda d, _: d.planned_p99, kinds=("",)))
        m.gauge("graphserve_in_flight_requests", lambda: {r.labels: float(r.in_flight) for r in self.routes})
        m.gauge("graphserve_queue_depth", lambda: self._load_gauge(lambda load: load.queued))
        m.gauge("graphserve_deployment_ongoing_requests", lambda: self._load_gauge(lambda load: load.ongoing))
        m.gauge("graphserve_batch_size_limit", lambda: self._batch_gauge("size_limit"))
        m.gauge("graphserve_batch_wait_seconds", lambda: self._batch_gauge("wait_s"))
        m.gauge("graphserve_batch_latency_budget_seconds", lambda: self._batch_gauge("latency_budget_s"))

    def _load_gauge(self, figure: Callable[[DeploymentLoad], int]) -> dict[Labels, float]:
        """One figure of every deployment's load, by graph and deployment."""
        values: dict[Labels, float] = {}
        for view in self._views():
            for deployment, load in view.load.items():
                values[(("graph", view.name), ("deployment", deployment))] = float(figure(load))
        return values

    def _drift_gauge(
        self, read: Callable[[DriftMonitor, str], float], kinds: tuple[str, ...] = DRIFT_KINDS
    ) -> dict[Labels, float]:
        values: dict[Labels, float] = {}
        now = time.perf_counter()
        for route in self.routes:
            drift = route.drift
            if drift is None:
                continue
            drift.check(now)  # a scrape sees the window as it is now, traffic or not
            for kind in kinds:
                labels: Labels = (("graph", route.name), ("kind", kind)) if kind else (("graph", route.name),)
                values[labels] = read(drift, kind)
        return values

    def _batch_gauge(self, field: str) -> dict[Labels, float]:
        values: dict[Labels, float] = {}
        for route in self.routes:
            backend = route.runtime.backend
            if backend is None or not route.runtime.ready:  # not started, or stopping
                continue
            for (deployment, replica), methods in backend.batch_limits().items():
                for method, limits in methods.items():
                    value = limits.get(field)
                    if value is None:  # a budget only where the batcher adapts
                        continue
                    labels = (("graph", route.name), ("deployment", deployment), ("replica", str(replica)))
                    values[(*labels, ("method", method))] = float(value)
        return values


def _route_path(plan: Plan) -> str:
    path = plan.route_prefix or "/" + plan.name
    if not path.startswith("/"):
        path = "/" + path
    return path.rstrip("/") or "/"


def _browser_visit(scope: Scope, route: GraphRoute) -> bool:
    """A browser opening ``/`` (it accepts HTML and sends no body) on a graph that reads JSON."""
    if route.plan.http_request:  # the ingress answers GET itself (Ray Serve style)
        return False
    accept = length = b""
    for name, value in scope["headers"]:
        if name == b"accept":
            accept = value
        elif name == b"content-length":
            length = value
    return b"text/html" in accept and length in (b"", b"0")


def _plan_data(plan: Plan) -> Any:
    return plan.model_dump(mode="json", fallback=repr)


def _json_error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json")


async def _stop_quietly(runtime: GraphRuntime) -> None:
    try:
        await runtime.stop()
    except Exception:
        logger.exception("graph %r did not stop cleanly", runtime.plan.name)


def _with_request_id(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app so every HTTP response carries X-Request-Id."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        sent = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        request_id = valid_request_id(sent)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await app(scope, receive, send_with_id)

    return wrapped
