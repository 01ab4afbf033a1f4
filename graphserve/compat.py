"""Ray Serve's API on graphserve: ``import graphserve as serve`` instead of ``from ray import serve``.

Owns what only Ray Serve code needs, on top of ``gs.run`` and the HTTP ingress:

- **the process-wide HTTP server** that ``serve.run`` / ``gs.run`` deploy onto. The first
  run (or ``serve.start(http_options={"host": ..., "port": ...})``) starts it, on
  127.0.0.1 and the port in ``GRAPHSERVE_HTTP_PORT`` (default 8000; 0 picks a free
  one); a busy port is a :class:`GraphError`, never a hang. Later runs add routes; an
  app run again under the same name replaces the old one. A server started implicitly
  stops with its last app; one started with ``serve.start()`` stays up until
  ``serve.shutdown()``. Apps' runtimes live on the server's event loop.
- Ray Serve 2.x lookups: ``serve.delete(name)``, ``serve.get_app_handle(name)``,
  ``serve.get_deployment_handle(deployment, app_name)``.
- **the 1.x API**: ``Model.deploy(*args)`` (each deployment its own app, routed at its
  ``route_prefix``, by default ``/<name>``; ``route_prefix=None`` deploys it without a
  route), ``Model.get_handle()``, ``Model.delete()``, ``serve.get_deployment(name)``,
  ``serve.list_deployments()``.
- **warnings** for what graphserve accepts but does not do (GS117: ``autoscaling_config``,
  ``user_config``, ``ray_actor_options`` keys other than CPUs/GPUs, ...): each distinct
  one is shown once per process as a :class:`GraphWarning` when an app is deployed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import warnings
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError, GraphWarning

if TYPE_CHECKING:
    from graphserve.api import GraphHandle
    from graphserve.dsl import Deployment
    from graphserve.runtime.http_server import Server

logger = logging.getLogger("graphserve.compat")

PORT_ENV = "GRAPHSERVE_HTTP_PORT"
HOST_ENV = "GRAPHSERVE_HTTP_HOST"
DEFAULT_PORT = 8000
STARTUP_TIMEOUT_S = 600.0  # constructors (model loading) may take a while; never forever

_HTTP_OPTIONS_USED = {"host", "port", "request_timeout_s"}


class _State:
    """The process-wide server and what runs on it (guarded by ``_LOCK``)."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.explicit = False  # started by serve.start(): outlives its apps
        self.starting = 0  # apps being deployed right now
        self.apps: dict[str, GraphHandle] = {}  # served apps by name
        self.deployed: dict[str, tuple[Deployment[Any], GraphHandle]] = {}  # 1.x: by deployment name
        self.seen_warnings: set[tuple[str, str | None, str]] = set()


_LOCK = threading.RLock()
_STATE = _State()


# -- warnings --------------------------------------------------------------------------------
def announce_warnings(plan: Any, logging_config: Any = None, stacklevel: int = 3) -> None:
    """Show each of the plan's warnings once per process (GraphWarning), so none goes unseen."""
    items = [(w.code, w.node, w.message, w.location) for w in plan.warnings]
    if logging_config is not None:
        items.append(("GS117", None, "logging_config is accepted but ignored: use Python's logging", None))
    for code, node, message, location in items:
        key = (code, node, message)
        with _LOCK:
            if key in _STATE.seen_warnings:
                continue
            _STATE.seen_warnings.add(key)
        where = f" ({location})" if location else ""
        subject = f"[{node}] " if node else ""
        warnings.warn(f"{code}: {subject}{message}{where}", GraphWarning, stacklevel=stacklevel)


def _warn_ignored(what: str, why: str) -> None:
    key = ("GS117", None, what)
    with _LOCK:
        if key in _STATE.seen_warnings:
            return
        _STATE.seen_warnings.add(key)
    warnings.warn(f"GS117: {what} is accepted but ignored: {why}", GraphWarning, stacklevel=3)


# -- the process-wide server -----------------------------------------------------------------
def start(http_options: Any = None, detached: bool = False, **options: Any) -> None:
    """Ray Serve's ``serve.start``: start the HTTP server now (``http_options``: host, port,
    request_timeout_s); it stays up until ``serve.shutdown()``. Other options are ignored, with a warning."""
    for key in sorted(options):
        _warn_ignored(f"serve.start({key}=...)", "graphserve serves from this process")
    http = _http_options(http_options)
    with _LOCK:
        server = _STATE.server
        if server is None:
            _start_server(http, explicit=True)
            return
        _STATE.explicit = True
        wanted = (http.get("host", server.host), http.get("port", server.port))
        if wanted != (server.host, server.port):
            logger.warning(
                "serve.start(): the HTTP server already runs at %s; http_options %s ignored", server.url, http
            )


def _http_options(http_options: Any) -> dict[str, Any]:
    if http_options is None:
        return {}
    if isinstance(http_options, dict):
        given = dict(http_options)
    else:  # Ray's HTTPOptions, or any object with those attributes
        given = {
            k: getattr(http_options, k)
            for k in (*_HTTP_OPTIONS_USED, "location", "root_path")
            if hasattr(http_options, k)
        }
    for key in sorted(set(given) - _HTTP_OPTIONS_USED):
        if given[key] is not None:
            _warn_ignored(f"http_options[{key!r}]", "graphserve serves one HTTP server from this process")
    return {k: v for k, v in given.items() if k in _HTTP_OPTIONS_USED and v is not None}


def _env_port() -> int:
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return DEFAULT_PORT
    try:
        port = int(text)
    except ValueError:
        raise GraphError(f"{PORT_ENV}={text!r} is not a port number") from None
    if not 0 <= port < 65536:
        raise GraphError(f"{PORT_ENV}={text!r} is not a port number")
    return port


def _start_server(http: dict[str, Any], explicit: bool) -> Server:
    from graphserve.runtime.http_server import Server
    from graphserve.runtime.ingress import Ingress
    from graphserve.serving import TOKEN_ENV, default_render

    host = str(http.get("host") or os.environ.get(HOST_ENV) or "127.0.0.1")
    port = int(http["port"]) if "port" in http else _env_port()
    ingress = Ingress(
        [],
        allow_empty=True,
        token=os.environ.get(TOKEN_ENV) or None,
        default_timeout_s=http.get("request_timeout_s"),
        render=default_render,
    )
    server = Server(ingress, host, port)  # binds now: a busy port is a GraphError here
    server.start(timeout=60.0)
    _STATE.server, _STATE.explicit = server, explicit
    logger.info("graphserve: HTTP server at %s (live graph page at %s)", server.url, server.page_url)
    return server


def stop_server() -> None:
    """Ray Serve's ``serve.shutdown``: stop every served app and the HTTP server."""
    with _LOCK:
        handles = [*_STATE.apps.values(), *(h for _, h in _STATE.deployed.values())]
        _STATE.deployed.clear()
        _STATE.explicit = True  # no implicit stop while the apps go
    try:
        for handle in handles:
            handle.shutdown()
    finally:
        with _LOCK:
            server, _STATE.server, _STATE.explicit = _STATE.server, None, False
    if server is not None:
        server.shutdown(timeout=60.0)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def deploy_plan(plan: Any, route_prefix: str | None, backend: str, backend_options: dict[str, Any]) -> GraphHandle:
    """Start ``plan`` on the process-wide server at ``route_prefix`` (else its own, else ``/``)."""
    if route_prefix is not None and not (isinstance(route_prefix, str) and route_prefix.startswith("/")):
        raise GraphError(f"route_prefix={route_prefix!r} is invalid: expected a path starting with '/'")
    path = route_prefix or plan.route_prefix or "/"
    name = plan.name
    # The lock is never held while waiting on the server's loop: constructors running there
    # may call back in here (a 1.x deployment's __init__ calling other.get_handle()).
    with _LOCK:
        server = _STATE.server
        if server is not None and server.ingress.loop is _running_loop():
            raise GraphError(f"cannot deploy {name!r} from inside a deployment (the server's own event loop)")
        old = _STATE.apps.pop(name, None)
        if server is None:
            server = _start_server({}, explicit=False)
        _STATE.starting += 1  # keeps a server started implicitly up while this app starts
    try:
        if old is not None:  # same name: replace it (Ray Serve redeploys an app run again)
            old.shutdown()
        handle = _add_app(server, plan, path, backend, backend_options)
    finally:
        with _LOCK:
            _STATE.starting -= 1
            _stop_if_idle(server)
    return handle


def _add_app(server: Server, plan: Any, path: str, backend: str, backend_options: dict[str, Any]) -> GraphHandle:
    from graphserve.api import GraphHandle
    from graphserve.runtime.running_graph import GraphRuntime

    name = plan.name
    ingress, loop = server.ingress, server.ingress.loop
    if loop is None:  # pragma: no cover - the lifespan startup always sets it
        raise GraphError("the HTTP server has no event loop")
    runtime = GraphRuntime(plan, backend=backend, metrics=ingress.metrics, **backend_options)
    try:
        asyncio.run_coroutine_threadsafe(ingress.add_graph(runtime, path), loop).result(STARTUP_TIMEOUT_S)
    except TimeoutError:
        raise GraphError(f"app {name!r} did not start within {STARTUP_TIMEOUT_S:g}s") from None
    except GraphError as exc:
        if "both want route" in str(exc):
            hint = "give this app another route_prefix=..., or run it under the same name= to replace the other"
            raise GraphError(f"{exc}; {hint}") from None
        raise

    def stop() -> None:
        with _LOCK:
            if _STATE.apps.get(name) is handle:
                del _STATE.apps[name]
            current = _STATE.server is server
        if current and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(ingress.remove_graph(name), loop).result(60.0)
        with _LOCK:
            _stop_if_idle(server)

    handle = GraphHandle.attach(runtime, loop, stop, server.url + ("" if path == "/" else path))
    with _LOCK:
        _STATE.apps[name] = handle
    return handle


def _stop_if_idle(server: Server) -> None:
    """Stop a server that a run started (not serve.start()) once no app runs on it (under _LOCK)."""
    if _STATE.server is not server or _STATE.explicit or _STATE.starting:
        return
    if any(h.url is not None for h in _STATE.apps.values()):
        return
    if any(h.url is not None for _, h in _STATE.deployed.values()):
        return
    _STATE.server = None
    server.shutdown(timeout=60.0)


def block_until_interrupted() -> None:
    """``serve.run(..., blocking=True)``: serve until Ctrl-C or SIGTERM, then shut everything down."""
    from graphserve.api import shutdown

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


# -- Ray Serve 2.x lookups -------------------------------------------------------------------
def delete(name: str, _blocking: bool = True) -> None:
    """Stop the app ``name`` and remove its route (nothing happens if no app has that name)."""
    with _LOCK:
        handle = _STATE.apps.get(name)
        entry = _STATE.deployed.pop(name, None)
    if handle is not None:
        handle.shutdown()
    if entry is not None:
        entry[1].shutdown()


def get_app_handle(name: str) -> GraphHandle:
    """The handle of the running app ``name``."""
    with _LOCK:
        handle = _STATE.apps.get(name)
        if handle is None:
            running = sorted(_STATE.apps)
            raise GraphError(f"no app named {name!r} is running; running apps: {running}")
        return handle


def get_deployment_handle(deployment_name: str, app_name: str | None = None) -> Any:
    """A handle to deployment ``deployment_name`` of a running app (the only one that has it, or ``app_name``)."""
    with _LOCK:
        apps = {n: h for n, h in _STATE.apps.items() if app_name is None or n == app_name}
        apps.update({n: h for n, (_, h) in _STATE.deployed.items() if app_name is None or n == app_name})
    owners = {h for h in apps.values() if any(d.name == deployment_name for d in h.plan.deployments)}
    if len(owners) != 1:
        what = "no running app has" if not owners else "several running apps have"
        raise GraphError(f"{what} a deployment named {deployment_name!r}; pass app_name=... ({sorted(apps)})")
    return owners.pop().deployment(deployment_name)


# -- Ray Serve 1.x -----------------------------------------------------------------------------
def deploy_deployment(deployment: Deployment[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``Model.deploy(*args)``: this deployment as its own app, named after it, at its route."""
    from graphserve.api import run

    options = deployment.deployment_options
    route = options["route_prefix"] if "route_prefix" in options else "/" + deployment.name
    name = deployment.name
    with _LOCK:
        entry = _STATE.deployed.pop(name, None)
    if entry is not None:
        entry[1].shutdown()
    handle = run(deployment.bind(*args, **kwargs), name=name, route_prefix=route, http=route is not None)
    with _LOCK:
        _STATE.deployed[name] = (deployment, handle)


def deployed_handle(name: str) -> Any:
    """``Model.get_handle()``: a handle to the deployment ``name`` deployed with ``.deploy()`` or ``serve.run``."""
    with _LOCK:
        entry = _STATE.deployed.get(name)
    if entry is not None:
        return entry[1].options()
    return get_deployment_handle(name)


def deployment_url(name: str) -> str | None:
    with _LOCK:
        entry = _STATE.deployed.get(name)
    return entry[1].url if entry is not None else None


def get_deployment(name: str) -> Deployment[Any]:
    """Ray Serve 1.x ``serve.get_deployment(name)``: the deployment deployed under ``name``."""
    with _LOCK:
        entry = _STATE.deployed.get(name)
        if entry is None:
            raise GraphError(f"no deployment named {name!r} is deployed; deployed: {sorted(_STATE.deployed)}")
        return entry[0]


def list_deployments() -> dict[str, Deployment[Any]]:
    """Ray Serve 1.x ``serve.list_deployments()``: the deployments deployed with ``.deploy()``, by name."""
    with _LOCK:
        return {name: dep for name, (dep, _) in _STATE.deployed.items()}


def ingress(app: Any) -> Any:
    """Ray Serve's ``@serve.ingress(fastapi_app)`` is not supported."""
    raise GraphError(
        "@serve.ingress (a FastAPI app as the ingress) is not supported by graphserve; "
        "take a starlette Request in __call__ instead (async def __call__(self, request: Request))"
    )
