"""The user-facing entry points that tie the DSL, the compiler and the runtime together:
``gs.build(app)`` -> Plan, ``gs.run(app)`` -> a running graph with a handle,
``gs.shutdown()`` stops everything.

What runs in this process (apps, the HTTP server ``gs.run`` serves on, warnings shown)
is kept by :mod:`graphserve.registry`; this module builds on it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from graphserve import registry
from graphserve.dag import RoutedRequest, dag_input
from graphserve.dsl import App, as_app
from graphserve.errors import GraphError, GraphWarning

DEFAULT_APP_NAME = "default"  # Ray Serve's name for an app run without one


def build(app: Any, cluster: Any = None) -> Any:
    """Validate and plan ``app``; returns a :class:`graphserve.compiler.Plan`.

    ``cluster`` ({"cpus": 8, "gpus": 2}, "cpus=8,gpus=2" or "detect") makes infeasible
    placements errors; None checks no resources. An app with a ``gs.SLO`` is planned for it
    (batch sizes, waits, replicas, placement) from its profile.
    """
    from graphserve.targets import load_plan

    return load_plan(app, cluster)


class GraphHandle:
    """A running graph, and Ray Serve's handle to it (an instance of ``graphserve.handle.DeploymentHandle``).

    ``handle.remote(...)`` starts a call at once and returns a ``DeploymentResponse``:
    ``await`` it from any event loop (``asyncio.wait``/``gather`` accept it) or call
    ``.result()`` from blocking code. On an app without an InputNode (Ray Serve style,
    ``app = Ingress.bind(...)``) the call goes straight to the ingress deployment, with
    any arguments; ``handle.method.remote(...)`` and
    ``handle.options(method_name="method")`` call its other methods. On a graph,
    ``handle.remote(request, timeout_s=None)`` runs the graph for one request.
    ``handle.call(request)`` runs the graph from blocking code; ``handle.shutdown()``
    stops it. ``handle.url`` is its HTTP route when it is served (see :func:`run`).
    """

    def __init__(self, plan: Any, backend: str = "local", **backend_options: Any) -> None:
        """Start ``plan`` on an event loop of its own (no HTTP)."""
        from graphserve.runtime import BackgroundLoop, GraphRuntime

        background = BackgroundLoop(name=f"graphserve-{plan.name}")
        runtime = GraphRuntime(plan, backend=backend, **backend_options)
        try:
            background.run(runtime.start())
        except BaseException:
            background.close()
            raise

        def stop() -> None:
            if not background.loop.is_closed():
                try:
                    background.run(runtime.stop(), timeout=30)
                finally:
                    background.close()

        self._setup(runtime, background.loop, stop, None)

    @classmethod
    def attach(
        cls, runtime: Any, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], url: str | None
    ) -> GraphHandle:
        """A handle to ``runtime``, already started on ``loop`` (the HTTP server's); ``stop()`` stops it."""
        handle = cls.__new__(cls)
        handle._setup(runtime, loop, stop, url)
        return handle

    def _setup(self, runtime: Any, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], url: str | None) -> None:
        self.plan = runtime.plan
        self.runtime = runtime
        self.url = url
        self.ingress_deployment = ingress_deployment(self.plan)
        self.deployment_name = self.ingress_deployment or self.plan.name
        self.deployed_at = time.time()
        self._loop = loop
        self._stop = stop
        self._stopped = False
        registry.track(self)

    # -- Ray Serve's handle API ----------------------------------------------------------------
    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Start a call now; returns an awaitable ``DeploymentResponse`` (``.result()`` blocks)."""
        if self._stopped:
            raise GraphError(f"graph {self.plan.name!r} was shut down")
        if self.ingress_deployment is not None:
            return self.runtime.handle(self.ingress_deployment).remote(*args, **kwargs)
        timeout_s = kwargs.pop("timeout_s", None)
        return self._start(self._execute(dag_input(args, kwargs), timeout_s))

    async def _execute(self, request: Any, timeout_s: float | None) -> Any:
        """Run the graph; responses of other calls in ``request`` are waited for first (chaining)."""
        from graphserve.runtime.handle import resolve_responses

        return await self.runtime.execute(await resolve_responses(request), timeout_s)

    def options(self, method_name: str | None = None, stream: bool = False, **_ignored: Any) -> Any:
        """A handle to a method of the app's ingress deployment (Ray Serve's ``handle.options``);
        ``stream=True`` makes its calls return ``DeploymentResponseGenerator`` s."""
        handle = self.runtime.handle(self._ingress("options(method_name=...)"), method_name or "__call__")
        return handle.options(stream=True) if stream else handle

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self.__dict__.get("ingress_deployment") is None and name in ("predict", "predict_with_route"):
            return _DAGMethod(self, with_route=name == "predict_with_route")  # Ray's RayServeDAGHandle
        if self.__dict__.get("ingress_deployment") is None:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}; graph handles call "
                "deployments with handle.deployment(name, method)"
            )
        return self.runtime.handle(self.__dict__["ingress_deployment"], name)

    def _ingress(self, what: str) -> str:
        if self.ingress_deployment is None:
            raise GraphError(
                f"graph {self.plan.name!r} has an InputNode, so it has no ingress deployment for {what}; "
                "use handle.deployment(name, method)"
            )
        return str(self.ingress_deployment)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> Any:
        from graphserve.runtime.handle import DeploymentResponse

        if self._stopped:
            coro.close()
            raise GraphError(f"graph {self.plan.name!r} was shut down")
        return DeploymentResponse.start(coro, self._loop)

    # -- graphserve's -----------------------------------------------------------------------------
    def call(self, request: Any = None, timeout_s: float | None = None) -> Any:
        """Run the graph for ``request`` and wait for its output (from blocking code)."""
        from graphserve.runtime.background_loop import running_loop

        if running_loop() is self._loop:
            raise GraphError("handle.call() would block the loop the graph runs on; use `await handle.remote(...)`")
        return self._start(self.runtime.execute(request, timeout_s)).result()

    def deployment(self, name: str, method: str = "__call__") -> Any:
        """A handle to one deployment of the running graph."""
        return self.runtime.handle(name, method)

    def shutdown(self) -> None:
        registry.untrack(self)
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> GraphHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"GraphHandle({self.plan.name!r}, url={self.url!r})"


class _DAGMethod:
    """``handle.predict`` / ``handle.predict_with_route`` of a graph, as Ray's ``RayServeDAGHandle`` has them.

    ``predict.remote(*args, **kwargs)`` runs the graph with the arguments as its input (one
    argument is the input itself; several are read as ``inp[0]``, ``inp["key"]``);
    ``predict_with_route.remote(route, ...)`` picks the DAG of a ``DAGDriver`` serving several.
    """

    def __init__(self, handle: GraphHandle, with_route: bool) -> None:
        self._handle = handle
        self._with_route = with_route

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        if not self._with_route:
            return self._handle.remote(*args, **kwargs)
        if not args:
            raise TypeError("predict_with_route.remote(route, *args, **kwargs) needs the route")
        request = RoutedRequest(args[0], dag_input(args[1:], kwargs))
        return self._handle._start(self._handle._execute(request, None))


def ingress_deployment(plan: Any) -> str | None:
    """The deployment that takes the request on an app without an InputNode, else None."""
    if not plan.raw_ingress:
        return None
    nodes = {node.id: node for node in plan.nodes}
    for arg in nodes[plan.output].args:  # such an app's output is its ingress call
        source = nodes.get(getattr(arg, "node", None) or "")
        if source is not None and source.kind == "call" and source.deployment:
            return str(source.deployment)
    return None


def run(
    app: App | Any,
    backend: str = "local",
    cluster: Any = "detect",
    *,
    name: str | None = None,
    route_prefix: str | None = None,
    blocking: bool = False,
    http: bool = True,
    _local_testing_mode: bool = False,
    logging_config: Any = None,
    **backend_options: Any,
) -> GraphHandle:
    """Compile ``app``, start it and serve it over HTTP, as Ray Serve's ``serve.run``; returns a handle.

    HTTP: the app is added to this process's HTTP server (started on first use, at
    ``serve.start(http_options=...)``'s host and port, else 127.0.0.1 and the port in
    ``GRAPHSERVE_HTTP_PORT`` (default 8000; 0 picks a free one); a busy port is a
    GraphError) at ``route_prefix`` (else the app's or its ingress deployment's, else
    ``/``). The app is named ``name``, else the name given to ``gs.graph``, else
    ``"default"``, as Ray Serve names it; an app of the same name, or at the same route,
    is replaced.
    ``http=False`` (or ``_local_testing_mode=True``) runs it in process only.
    ``blocking=True`` serves until Ctrl-C / SIGTERM, then shuts everything down.
    The plan's warnings (e.g. GS117, a Ray Serve option graphserve ignores) are shown
    once each as :class:`graphserve.errors.GraphWarning`.

    On ``backend="ray"`` the default ``cluster="detect"`` checks nothing at planning time
    (this machine is not the Ray cluster): the Ray backend checks the Ray cluster's own
    resources before any actor starts.
    """
    if backend == "ray" and cluster == "detect":
        cluster = None
    app = as_app(app)
    plan = build(app, cluster=cluster)
    plan.name = name if name is not None else app.name if app.named else DEFAULT_APP_NAME
    announce_warnings(plan, logging_config=logging_config)
    if http and not _local_testing_mode:
        handle = registry.serve_plan(plan, route_prefix, backend, backend_options, GraphHandle.attach)
    else:
        handle = GraphHandle(plan, backend=backend, **backend_options)
    if blocking:
        block_until_interrupted()
    return handle


def shutdown() -> None:
    """Stop every graph started with :func:`run` (or ``.deploy()``) and this process's HTTP server."""
    registry.stop_everything()


def announce_warnings(plan: Any, logging_config: Any = None, stacklevel: int = 3) -> None:
    """Show each of the plan's warnings once per process (GraphWarning), so none goes unseen."""
    items = [(w.code, w.node, w.message, w.location) for w in plan.warnings]
    if logging_config is not None:
        items.append(("GS117", None, "logging_config is accepted but ignored: use Python's logging", None))
    for code, node, message, location in items:
        if not registry.first_time((code, node, message)):
            continue
        where = f" ({location})" if location else ""
        subject = f"[{node}] " if node else ""
        warnings.warn(f"{code}: {subject}{message}{where}", GraphWarning, stacklevel=stacklevel)


def block_until_interrupted() -> None:
    """``run(..., blocking=True)``: serve until Ctrl-C or SIGTERM, then shut everything down."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        shutdown()
