"""The HTTP ingress: an ASGI app serving one or more running graphs (``GraphRuntime``).

Graph routes (``POST /<graph name>`` or the plan's ``route_prefix``; a single graph is
also at ``/``; GET with a body is accepted too) are served by a plain ASGI path lookup
with no middleware: read the body, parse it with orjson, ``await runtime.execute(...)``
on the server's own event loop, write orjson. A plan whose ingress takes the request
itself (``plan.http_request``, Ray Serve style) gets a Starlette ``Request`` instead of
the parsed body, for any method; its output may be a Starlette ``Response`` (sent as
it is), bytes, or a str (sent as text when the app has no InputNode). Graphs can be
added and removed while serving (:meth:`Ingress.add_graph`, used by ``gs.run``).
Everything else (``/-/healthz``, ``/-/ready``, ``/-/metrics``, ``/-/graphs``,
``/-/graphs/<name>.svg``, ``/openapi.json``) is a small Starlette app.

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
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from graphserve.errors import DeploymentStartError, GraphError, RequestError, RouteConflictError
from graphserve.plan import Plan

from .encoding import JSONDecodeError, dumps, loads
from .http_errors import Headers, error_body, request_error, retry_after
from .metrics import Labels, Metrics
from .openapi import openapi_document
from .running_graph import GraphRuntime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: ``render(plan, format)`` -> the drawing (bytes or str), e.g. ``graphserve.compiler.render``.
Renderer = Callable[[Plan, str], bytes | str]

logger = logging.getLogger("graphserve.ingress")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_REQUEST_ID = re.compile(rb"[!-~]{1,200}")
_JSON = b"application/json"
_RENDER_TYPES = {"svg": "image/svg+xml", "png": "image/png", "dot": "text/vnd.graphviz"}
_OPS_PREFIX = "/-/"
_GRAPH_METHODS = ("POST", "GET")  # GET with a body too, as Ray Serve's proxy and its docs do
_TEXT = b"text/plain; charset=utf-8"


class GraphRoute:
    """One graph at one path, with its admission counter and precomputed metric labels."""

    __slots__ = (
        "in_flight",
        "labels",
        "max_in_flight",
        "name",
        "path",
        "plan",
        "runtime",
        "status_labels",
        "timeout_s",
    )

    def __init__(self, runtime: GraphRuntime, path: str, default_timeout_s: float | None, max_in_flight: int | None):
        self.runtime = runtime
        self.plan = runtime.plan
        self.name = runtime.plan.name
        self.path = path
        self.timeout_s = runtime.plan.timeout_s if runtime.plan.timeout_s is not None else default_timeout_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.labels: Labels = (("graph", self.name),)
        self.status_labels: dict[int, Labels] = {}

    def status(self, status: int) -> Labels:
        labels = self.status_labels.get(status)
        if labels is None:
            labels = self.status_labels[status] = (("graph", self.name), ("status", str(status)))
        return labels


class Ingress:
    """The ASGI app; see the module docstring.

    ``runtimes`` are not started yet (the lifespan starts them). They share one
    :class:`Metrics` registry (``metrics``, by default the first runtime's), so
    ``/-/metrics`` is one exposition.
    """

    def __init__(
        self,
        runtimes: list[GraphRuntime],
        *,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_in_flight: int | None = None,
        default_timeout_s: float | None = None,
        render: Renderer | None = None,
        metrics: Metrics | None = None,
        title: str = "graphserve",
        version: str = "0.1.0",
        allow_empty: bool = False,
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
        self.render = render
        self.routes: list[GraphRoute] = []
        self._paths: dict[str, GraphRoute] = {}
        for runtime in runtimes:
            path = _route_path(runtime.plan)
            route = GraphRoute(runtime, path, default_timeout_s, max_in_flight)
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
        self._default_timeout_s = default_timeout_s
        self._max_in_flight = max_in_flight
        self._title, self._version = title, version
        self._refresh_openapi()
        self._ops = _with_request_id(self._ops_app())
        self._describe_metrics()

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
        route = GraphRoute(runtime, path, self._default_timeout_s, self._max_in_flight)
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
        logger.info("graph %r ready at %s", name, path)
        return route

    async def remove_graph(self, name: str) -> None:
        """Stop serving graph ``name`` and stop it (requests still running finish first on their own)."""
        route = self.graphs.pop(name, None)
        if route is None:
            return
        self.routes.remove(route)
        self._paths = {key: r for key, r in self._paths.items() if r is not route}
        self._refresh_openapi()
        await _stop_quietly(route.runtime)

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self._paths.get(scope["path"])
            if route is not None:
                await self._serve_graph(route, scope, receive, send)
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

    async def shutdown(self) -> None:
        """Stop every graph (the server has already finished in-flight requests)."""
        self.stopping = True
        self.ready = False
        for route in reversed(self.routes):
            await _stop_quietly(route.runtime)

    # -- graph routes (the hot path) -------------------------------------------------------
    async def _serve_graph(self, route: GraphRoute, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        request_id: bytes | None = None
        auth = length = timeout = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                auth = value
            elif name == b"x-request-timeout-s":
                timeout = value
        if request_id is None or _REQUEST_ID.fullmatch(request_id) is None:
            request_id = os.urandom(12).hex().encode()
        status, body, headers = await self._answer(route, scope, receive, request_id, auth, length, timeout)
        if status:
            start_headers = [
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id),
            ]
            if headers:
                start_headers += headers
            if headers is None or not any(name == b"content-type" for name, _ in headers):
                start_headers.append((b"content-type", _JSON))
            await send({"type": "http.response.start", "status": status, "headers": start_headers})
            await send({"type": "http.response.body", "body": body})
        else:
            status = 499  # the client went away before sending its body: nothing to answer
        metrics = self.metrics
        metrics.inc("graphserve_requests_total", route.status(status))
        metrics.observe("graphserve_request_duration_seconds", time.perf_counter() - start, route.labels)

    async def _answer(
        self,
        route: GraphRoute,
        scope: Scope,
        receive: Receive,
        request_id: bytes,
        auth: bytes | None,
        length: bytes | None,
        timeout: bytes | None,
    ) -> tuple[int, bytes, Headers | None]:
        if scope["method"] not in _GRAPH_METHODS and not route.plan.http_request:
            text = f"graph {route.name!r} answers POST (or GET) with a JSON body"
            return 405, error_body(405, text), [(b"allow", b"GET, POST")]
        if self.token is not None and not self._authorized(auth):
            return 401, error_body(401, "missing or wrong bearer token"), [(b"www-authenticate", b"Bearer")]
        if not route.runtime.ready:
            state = "stopping" if self.stopping else "starting"
            return 503, error_body(503, f"graph {route.name!r} is {state}"), retry_after(1)
        if route.max_in_flight is not None and route.in_flight >= route.max_in_flight:
            return (
                503,
                error_body(503, f"graph {route.name!r} is overloaded: {route.in_flight} requests in flight"),
                retry_after(1),
            )
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return 400, error_body(400, "bad Content-Length header"), [(b"connection", b"close")]
            if declared > self.max_body_bytes:
                return 413, self._too_large(), [(b"connection", b"close")]
        deadline = route.timeout_s
        if timeout is not None:
            try:
                requested = float(timeout)
            except ValueError:
                requested = math.nan
            if not (requested > 0 and math.isfinite(requested)):
                return 400, error_body(400, "X-Request-Timeout-S must be a number of seconds > 0"), None
            deadline = requested if deadline is None else min(deadline, requested)
        route.in_flight += 1
        try:
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False):
                chunks = [body]
                size = len(body)
                while message.get("more_body", False):
                    message = await receive()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        return 413, self._too_large(), [(b"connection", b"close")]
                    chunks.append(chunk)
                body = b"".join(chunks)
            if message["type"] == "http.disconnect":
                return 0, b"", None
            if len(body) > self.max_body_bytes:
                return 413, self._too_large(), [(b"connection", b"close")]
            if route.plan.http_request:  # the ingress reads the request itself (Ray Serve style)
                request: Any = _starlette_request(scope, body)
            else:
                try:
                    request = loads(body) if body else None
                except JSONDecodeError as exc:
                    return 400, error_body(400, f"malformed JSON: {exc}"), None
            try:
                result = await route.runtime.execute(request, deadline)
            except RequestError as exc:
                status, payload, headers = request_error(exc)
                if status >= 500 and status not in (503, 504):
                    _log_failure(route, request_id, exc)
                return status, payload, headers
            except Exception as exc:
                _log_failure(route, request_id, exc)
                return 500, error_body(500, f"graph {route.name!r} failed: {type(exc).__name__}", node=None), None
            except asyncio.CancelledError:
                # only the server cancels a request task: its graceful-shutdown bound ran out
                logger.warning("request %s to graph %r cancelled: the server is shutting down", request_id, route.name)
                text = f"graph {route.name!r}: the server is shutting down and cancelled this request"
                return 503, error_body(503, text), [*retry_after(1), (b"connection", b"close")]
            try:
                return _encode_result(route, result)
            except TypeError as exc:
                _log_failure(route, request_id, exc)
                message_text = f"the output of graph {route.name!r} cannot be sent as JSON: {exc}"
                return 500, error_body(500, message_text, node=route.plan.output), None
        finally:
            route.in_flight -= 1

    def _authorized(self, auth: bytes | None) -> bool:
        if auth is None or self.token is None:
            return False
        scheme, _, credentials = auth.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    def _too_large(self) -> bytes:
        return error_body(413, f"request body is larger than {self.max_body_bytes} bytes")

    # -- operations routes ---------------------------------------------------------------
    def _ops_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/-/healthz", self._healthz, methods=["GET"]),
                Route("/-/ready", self._ready, methods=["GET"]),
                Route("/-/metrics", self._metrics, methods=["GET"]),
                Route("/-/graphs", self._graphs, methods=["GET"]),
                Route("/-/graphs/{file}", self._graph_file, methods=["GET"]),
                Route("/openapi.json", self._openapi_json, methods=["GET"]),
            ]
        )

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
        if self.render is None:
            return _json_error(501, "this server was started without a graph renderer")
        try:
            drawing = await asyncio.get_running_loop().run_in_executor(None, self.render, route.plan, fmt)
        except GraphError as exc:
            return _json_error(501, str(exc))
        return Response(drawing, media_type=_RENDER_TYPES[fmt])

    async def _openapi_json(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

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
        m.gauge("graphserve_in_flight_requests", lambda: {r.labels: float(r.in_flight) for r in self.routes})
        m.gauge("graphserve_queue_depth", lambda: self._backend_gauge("queue_depth"))
        m.gauge("graphserve_deployment_ongoing_requests", lambda: self._backend_gauge("in_flight"))

    def _backend_gauge(self, reader: str) -> dict[Labels, float]:
        values: dict[Labels, float] = {}
        for route in self.routes:
            read = getattr(route.runtime.backend, reader, None)
            if read is None:
                continue
            try:
                counts = read()
            except Exception:  # a stopped or remote backend: no reading this time
                continue
            for deployment, count in counts.items():
                values[(("graph", route.name), ("deployment", deployment))] = float(count)
        return values


def _route_path(plan: Plan) -> str:
    path = plan.route_prefix or "/" + plan.name
    if not path.startswith("/"):
        path = "/" + path
    return path.rstrip("/") or "/"


def _starlette_request(scope: Scope, body: bytes) -> Request:
    """A Starlette Request over the body already read (for ingresses that take the request)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _encode_result(route: GraphRoute, result: Any) -> tuple[int, bytes, Headers | None]:
    """The answer for a graph's output: a Starlette Response as it is, bytes as they are, a str
    as text on apps without an InputNode (Ray Serve's rule), everything else as JSON."""
    if isinstance(result, Response):
        body = getattr(result, "body", None)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"{type(result).__name__} (a streaming response) is not supported as a graph output")
        headers = [(name, value) for name, value in result.raw_headers if name != b"content-length"]
        return result.status_code, bytes(body), headers
    if isinstance(result, (bytes, bytearray, memoryview)):
        return 200, bytes(result), [(b"content-type", b"application/octet-stream")]
    if isinstance(result, str) and route.plan.raw_ingress:
        return 200, result.encode(), [(b"content-type", _TEXT)]
    return 200, dumps(result), None


def _plan_data(plan: Plan) -> Any:
    return plan.model_dump(mode="json", fallback=repr)


def _json_error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json")


def _log_failure(route: GraphRoute, request_id: bytes, exc: BaseException) -> None:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    logger.error(
        "request %s to graph %r failed: %s",
        request_id.decode(),
        route.name,
        exc,
        exc_info=(type(cause), cause, cause.__traceback__),
    )


async def _stop_quietly(runtime: GraphRuntime) -> None:
    try:
        await runtime.stop()
    except Exception:
        logger.exception("graph %r did not stop cleanly", runtime.plan.name)


def _with_request_id(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> Any:
    """Wrap an ASGI app so every HTTP response carries X-Request-Id."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = value
        if request_id is None:
            request_id = os.urandom(12).hex().encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await app(scope, receive, send_with_id)

    return wrapped
