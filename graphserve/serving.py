"""Serving graphs over HTTP: ``gs.serve(...)`` (what ``graphserve deploy`` runs).

    server = gs.serve(app, port=8000)                       # blocks until SIGTERM/SIGINT
    server = gs.serve([app1, "plan.json"], port=0, blocking=False)
    server.url; server.shutdown()

This is the glue between the compiler (targets become Plans with
:func:`graphserve.targets.load_plan`; graphs are drawn with ``graphserve.compiler.render``)
and the runtime's ASGI ingress
(``graphserve.runtime.ingress``), run by uvicorn (uvloop and httptools where installed).
The socket is bound before the server starts, so ``port=0`` picks a free port that is
known at once (``server.port``). The graphs' constructors run in the ASGI lifespan
startup: ``serve`` returns (or, blocking, starts listening) only once they all ran, and
a failing one raises :class:`DeploymentStartError` naming the deployment.

On SIGTERM/SIGINT the server stops accepting connections, lets in-flight requests
finish for up to ``shutdown_timeout_s`` and then stops the graphs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError
from graphserve.registry import TOKEN_ENV, default_render
from graphserve.runtime import http_defaults
from graphserve.runtime.http_defaults import MAX_BODY_BYTES, SHUTDOWN_TIMEOUT_S, STARTUP_TIMEOUT_S, mib
from graphserve.targets import load_plan

if TYPE_CHECKING:
    from graphserve.plan import Plan
    from graphserve.runtime.http_server import Server

_SERVER_OPTIONS = {
    "shutdown_timeout_s": f"how long in-flight requests may finish on shutdown (default {SHUTDOWN_TIMEOUT_S:g})",
    "access_log": "log every request (uvicorn's access log; off by default)",
    "on_ready": "called with the Server once it accepts connections",
}
_INGRESS_OPTIONS = {
    "max_body_bytes": f"largest accepted request body (413 above; default {mib(MAX_BODY_BYTES)})",
    "max_in_flight": "requests one graph answers at once before answering 503 (default unbounded)",
    "timeout_s": "deadline for graphs that set no timeout_s of their own (504 past it)",
    "drift_window_s": "how long a graph planned for an SLO must differ from its plan's rate or p99 before it "
    "counts as drift (logged, in /-/metrics; default 30)",
    "render": "render(plan, format, figures=False) -> bytes for /-/graphs/<name>.svg (default: graphviz)",
    "tracer_provider": "OpenTelemetry tracer provider for request and node spans (default: the process's, if set)",
}
_OPTIONS = {
    **_SERVER_OPTIONS,
    **_INGRESS_OPTIONS,
    "cluster": "cluster for compiling Apps ('detect' (default), 'cpus=8,gpus=1', a dict, or None)",
    "startup_timeout_s": f"how long serve(blocking=False) waits for the constructors (default {STARTUP_TIMEOUT_S:g})",
    "backend_options": "keyword arguments for the backend (e.g. {'address': 'auto'} for Ray)",
}


def serve(
    apps: Any,
    host: str = http_defaults.HOST,
    port: int = http_defaults.PORT,
    backend: str = "local",
    token: str | None = None,
    blocking: bool = True,
    **options: Any,
) -> Server:
    """Serve one graph or several over HTTP; see the module docstring.

    ``apps``: an App (or a bound node), a Plan, a ``"module:app"`` / ``"plan.json"``
    string, or a list of them. ``token`` (default: the ``GRAPHSERVE_TOKEN`` environment
    variable) requires ``Authorization: Bearer <token>`` on graph routes. ``blocking``
    serves until SIGTERM/SIGINT; ``blocking=False`` serves from a background thread and
    returns once ready. Options (``**options``): see ``_OPTIONS`` (``max_body_bytes``,
    ``max_in_flight``, ``timeout_s``, ``shutdown_timeout_s``, ``startup_timeout_s``,
    ``cluster``, ``backend_options``, ``access_log``, ``on_ready``, ``render``).
    """
    from graphserve.runtime.http_server import Server
    from graphserve.runtime.ingress import Ingress
    from graphserve.runtime.metrics import Metrics
    from graphserve.runtime.running_graph import GraphRuntime

    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        known = "\n  ".join(f"{k}: {v}" for k, v in _OPTIONS.items())
        raise GraphError(f"serve() got unknown option(s) {unknown}; options are:\n  {known}")
    # On Ray the backend checks the plan against the Ray cluster itself, not this machine.
    plans = load_plans(apps, cluster=options.get("cluster", "detect" if backend == "local" else None))
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    metrics = Metrics()
    backend_options = options.get("backend_options") or {}
    runtimes = [GraphRuntime(plan, backend=backend, metrics=metrics, **backend_options) for plan in plans]
    ingress_options = {k: v for k, v in options.items() if k in _INGRESS_OPTIONS}
    default_timeout_s = ingress_options.pop("timeout_s", None)
    ingress_options.setdefault("render", default_render)
    ingress = Ingress(runtimes, token=token, default_timeout_s=default_timeout_s, metrics=metrics, **ingress_options)
    server = Server(ingress, host, port, **{k: v for k, v in options.items() if k in _SERVER_OPTIONS})
    if blocking:
        server.run()
    else:
        server.start(timeout=options.get("startup_timeout_s", STARTUP_TIMEOUT_S))
    return server


def load_plans(apps: Any, cluster: Any = "detect") -> list[Plan]:
    """Plans for ``apps`` (see :func:`serve`): each compiled or loaded by :func:`graphserve.targets.load_plan`."""
    items = list(apps) if isinstance(apps, (list, tuple)) else [apps]
    if not items:
        raise GraphError("serve() needs at least one graph")
    return [load_plan(item, cluster) for item in items]
