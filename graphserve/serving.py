"""Serving graphs over HTTP: ``gs.serve(...)``, and the ``graphserve deploy`` / ``call`` commands.

    server = gs.serve(app, port=8000)                       # blocks until SIGTERM/SIGINT
    server = gs.serve([app1, "plan.json"], port=0, blocking=False)
    server.url; server.shutdown()

This is the glue between the compiler (Apps are compiled with ``compile_app``; graphs
are drawn with ``graphserve.compiler.render``) and the runtime's ASGI ingress
(``graphserve.runtime.ingress``), run by uvicorn (uvloop and httptools where installed).
The socket is bound before the server starts, so ``port=0`` picks a free port that is
known at once (``server.port``). The graphs' constructors run in the ASGI lifespan
startup: ``serve`` returns (or, blocking, starts listening) only once they all ran, and
a failing one raises :class:`DeploymentStartError` naming the deployment.

On SIGTERM/SIGINT the server stops accepting connections, lets in-flight requests
finish for up to ``shutdown_timeout_s`` and then stops the graphs.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError, RequestError

if TYPE_CHECKING:
    from graphserve.plan import Plan
    from graphserve.runtime.http_server import Server

TOKEN_ENV = "GRAPHSERVE_TOKEN"

_SERVER_OPTIONS = {
    "shutdown_timeout_s": "how long in-flight requests may take to finish on shutdown (default 30)",
    "access_log": "log every request (uvicorn's access log; off by default)",
    "on_ready": "called with the Server once it accepts connections",
}
_INGRESS_OPTIONS = {
    "max_body_bytes": "largest accepted request body (413 above; default 16 MiB)",
    "max_in_flight": "requests one graph answers at once before answering 503 (default unbounded)",
    "timeout_s": "deadline for graphs that set no timeout_s of their own (504 past it)",
    "render": "render(plan, format, figures=False) -> bytes for /-/graphs/<name>.svg (default: graphviz)",
    "tracer_provider": "OpenTelemetry tracer provider for request and node spans (default: the process's, if set)",
}
_OPTIONS = {
    **_SERVER_OPTIONS,
    **_INGRESS_OPTIONS,
    "cluster": "cluster for compiling Apps ('detect' (default), 'cpus=8,gpus=1', a dict, or None)",
    "startup_timeout_s": "how long serve(blocking=False) waits for the constructors (default 600)",
    "backend_options": "keyword arguments for the backend (e.g. {'address': 'auto'} for Ray)",
}


def serve(
    apps: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
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
        server.start(timeout=options.get("startup_timeout_s", 600.0))
    return server


def load_plans(apps: Any, cluster: Any = "detect") -> list[Plan]:
    """Plans for ``apps`` (see :func:`serve`), compiling Apps and loading plan files."""
    items = list(apps) if isinstance(apps, (list, tuple)) else [apps]
    if not items:
        raise GraphError("serve() needs at least one graph")
    return [_to_plan(item, cluster) for item in items]


def _to_plan(item: Any, cluster: Any) -> Plan:
    from graphserve.plan import Plan

    if isinstance(item, Plan):
        return item
    if isinstance(item, (str, Path)):
        from graphserve.targets import is_plan_file, load_app

        target = str(item)
        if is_plan_file(target):
            try:
                text = Path(target).read_text()
            except OSError as exc:
                raise GraphError(f"cannot read plan {target!r}: {exc}") from exc
            return Plan.from_json(text)
        return _to_plan(load_app(target), cluster)
    from graphserve.compiler import compile_app

    if isinstance(cluster, str) and cluster.strip().lower() in ("", "none"):
        cluster = None
    try:
        return compile_app(item, cluster=cluster)
    except ValueError as exc:  # a cluster string that does not parse
        raise GraphError(f"bad --cluster {cluster!r}: {exc} (expected 'cpus=8,gpus=1', 'detect' or 'none')") from exc


def default_render(plan: Plan, fmt: str, *, figures: bool = False) -> bytes | str:
    """Draw ``plan`` with ``graphserve.compiler.render`` (graphviz), imported when first asked for;
    ``figures``: with room for the live page's figures in each deployment node."""
    try:
        from graphserve.compiler.render import render
    except ImportError as exc:
        raise GraphError(f"graph rendering is not available: {exc}") from exc
    try:
        drawing: bytes | str = render(plan, fmt, figures=figures)
    except GraphError:
        raise
    except Exception as exc:  # graphviz missing, or its `dot` binary
        raise GraphError(f"cannot render graph {plan.name!r} as {fmt}: {type(exc).__name__}: {exc}") from exc
    return drawing


# -- command line ----------------------------------------------------------------------
def deploy_command(args: Any) -> int:
    """``graphserve deploy targets... [--backend] [--address] [--host] [--port] [--token] ...``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend_options: dict[str, Any] = {}
    address = getattr(args, "address", None)
    if address:
        backend_options["address"] = address
    default_cluster = "detect" if (getattr(args, "backend", None) or "local") == "local" else None
    options: dict[str, Any] = {"cluster": getattr(args, "cluster", None) or default_cluster, "on_ready": _announce}
    for name in ("timeout_s", "max_body_bytes", "max_in_flight", "shutdown_timeout_s"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    if backend_options:
        options["backend_options"] = backend_options
    targets = getattr(args, "targets", None) or getattr(args, "target", None)
    port = getattr(args, "port", None)
    try:
        serve(
            targets,
            host=getattr(args, "host", None) or "127.0.0.1",
            port=8000 if port is None else int(port),
            backend=getattr(args, "backend", None) or "local",
            token=getattr(args, "token", None),
            **options,
        )
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("graphserve: stopped", flush=True)
    return 0


def _announce(server: Server) -> None:
    for name, url in server.routes.items():
        print(f"graphserve: graph {name!r} at POST {url}", flush=True)
    print(f"graphserve: ready at {server.url} (metrics at {server.url}/-/metrics)", flush=True)
    print(f"graphserve: see the graphs run at {server.page_url}", flush=True)


def call_command(args: Any) -> int:
    """``graphserve call URL|module:app|plan.json '<json>'``: print the result; exit 1 on an error."""
    target: str = args.target
    from graphserve.runtime.encoding import JSONDecodeError, loads

    raw = getattr(args, "body", None)
    if raw is None or raw == "-":
        raw = sys.stdin.read()
    try:
        request = loads(raw) if raw.strip() else None
    except JSONDecodeError as exc:
        print(f"error: the request body is not JSON: {exc}", file=sys.stderr)
        return 2
    timeout_s = getattr(args, "timeout_s", None)
    if target.startswith(("http://", "https://")):
        try:
            headers = _parse_headers(getattr(args, "header", None) or [])
        except GraphError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return _call_url(target, raw.encode(), headers, timeout_s)
    return _call_in_process(target, request, timeout_s, getattr(args, "cluster", None) or "detect")


def _parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise GraphError(f"header {item!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _call_url(url: str, body: bytes, headers: dict[str, str], timeout_s: float | None) -> int:
    lowered = {k.lower() for k in headers}
    if "content-type" not in lowered:
        headers["Content-Type"] = "application/json"
    if "authorization" not in lowered and os.environ.get(TOKEN_ENV):
        headers["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
    if timeout_s is not None and "x-request-timeout-s" not in lowered:
        headers["X-Request-Timeout-S"] = str(timeout_s)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    client_timeout = timeout_s + 10 if timeout_s is not None else 300.0
    try:
        with urllib.request.urlopen(request, timeout=client_timeout) as response:
            print(response.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        print(f"error: HTTP {exc.code}: {text}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach {url}: {reason}", file=sys.stderr)
        return 1


def _call_in_process(target: str, request: Any, timeout_s: float | None, cluster: Any) -> int:
    from graphserve.api import GraphHandle
    from graphserve.runtime.encoding import dumps
    from graphserve.runtime.http_errors import request_error

    try:
        (plan,) = load_plans(target, cluster=cluster)
        handle = GraphHandle(plan)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        result = handle.call(request, timeout_s)
    except RequestError as exc:
        status, body, _ = request_error(exc)
        print(f"error: {status}: {body.decode()}", file=sys.stderr)
        return 1
    finally:
        handle.shutdown()
    try:
        print(dumps(result).decode())
    except TypeError as exc:
        print(f"error: the output cannot be written as JSON: {exc}", file=sys.stderr)
        return 1
    return 0
