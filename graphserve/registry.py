"""What this process runs: its apps, its HTTP server, and the warnings it has shown.

One module owns all of it, under one lock:

- **every running app** (each ``gs.run``/``serve.run``, ``Model.deploy()``, ``GraphHandle``),
  so ``gs.shutdown()`` stops them all;
- **the process-wide HTTP server** that ``gs.run``/``serve.run`` deploy onto. The first
  served app (or ``serve.start(http_options=...)``) starts it, on 127.0.0.1 (or
  ``$GRAPHSERVE_HTTP_HOST``) and the port in ``GRAPHSERVE_HTTP_PORT`` (default 8000; 0
  picks a free one); a busy port is a :class:`GraphError`, never a hang. Later apps add
  routes; an app served again under the same name replaces the old one. A server started
  by a run stops with its last app; one started explicitly stays up until
  :func:`stop_everything`. Apps' runtimes live on the server's event loop;
- **the apps served by name** on that server, and Ray Serve 1.x deployments
  (``Model.deploy()``) by deployment name;
- **the warnings already shown**, so each is shown once per process.

``graphserve.api`` builds on this module (``gs.run``, ``gs.shutdown``, ``GraphHandle``);
``graphserve.compat`` and ``graphserve.serving`` build on ``api``. An app here is anything
with the :class:`RunningApp` shape (``api.GraphHandle``), so this module imports no layer
above it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from graphserve.errors import GraphError, RouteConflictError, RoutePrefixError

if TYPE_CHECKING:
    from graphserve.plan import Plan
    from graphserve.runtime.http_server import Server
    from graphserve.runtime.running_graph import GraphRuntime

logger = logging.getLogger("graphserve.registry")

PORT_ENV = "GRAPHSERVE_HTTP_PORT"
HOST_ENV = "GRAPHSERVE_HTTP_HOST"
TOKEN_ENV = "GRAPHSERVE_TOKEN"
SERVER_TIMEOUT_S = 60.0


class RunningApp(Protocol):
    """What this module needs of a running app (``graphserve.api.GraphHandle``)."""

    plan: Plan
    url: str | None

    def shutdown(self) -> None: ...

    def deployment(self, name: str, method: str = "__call__") -> Any: ...

    def options(self, method_name: str | None = None, **_ignored: Any) -> Any: ...


App = TypeVar("App", bound=RunningApp)
# attach(runtime, loop, stop, url) -> the app's handle (``GraphHandle.attach``)
Attach = Callable[["GraphRuntime", asyncio.AbstractEventLoop, Callable[[], None], str], App]


@dataclass
class _State:
    server: Server | None = None
    explicit: bool = False  # started by serve.start(): outlives its apps
    starting: int = 0  # apps being deployed right now (keeps an implicit server up)
    running: list[RunningApp] = field(default_factory=list)  # every running app, served or not
    served: dict[str, RunningApp] = field(default_factory=dict)  # apps on the server, by name
    deployed: dict[str, tuple[Any, RunningApp]] = field(default_factory=dict)  # 1.x: name -> (Deployment, app)
    shown: set[tuple[str, str | None, str]] = field(default_factory=set)  # warnings shown


_LOCK = threading.RLock()
_STATE = _State()


# -- every running app -------------------------------------------------------------------------
def track(app: RunningApp) -> None:
    """Record a started app (``gs.shutdown()`` stops it)."""
    with _LOCK:
        _STATE.running.append(app)


def untrack(app: RunningApp) -> None:
    with _LOCK:
        if app in _STATE.running:
            _STATE.running.remove(app)


def running_apps() -> list[RunningApp]:
    with _LOCK:
        return list(_STATE.running)


def first_time(key: tuple[str, str | None, str]) -> bool:
    """True the first time ``key`` (code, node, message) is asked about in this process."""
    with _LOCK:
        if key in _STATE.shown:
            return False
        _STATE.shown.add(key)
        return True


# -- apps by name ----------------------------------------------------------------------------
def served_app(name: str) -> RunningApp | None:
    with _LOCK:
        return _STATE.served.get(name)


def server_url() -> str | None:
    """The URL of the process-wide HTTP server, when it runs."""
    with _LOCK:
        return _STATE.server.url if _STATE.server is not None else None


def served_names() -> list[str]:
    with _LOCK:
        return sorted(_STATE.served)


def apps_by_name(app_name: str | None = None) -> dict[str, RunningApp]:
    """Served apps and 1.x deployments by name (only ``app_name``'s, when given)."""
    with _LOCK:
        apps = dict(_STATE.served)
        apps.update({n: app for n, (_, app) in _STATE.deployed.items()})
    return {n: app for n, app in apps.items() if app_name is None or n == app_name}


def record_deployed(name: str, deployment: Any, app: RunningApp) -> None:
    """A 1.x ``Model.deploy()``: ``deployment`` runs as ``app``."""
    with _LOCK:
        _STATE.deployed[name] = (deployment, app)


def deployed(name: str) -> tuple[Any, RunningApp] | None:
    with _LOCK:
        return _STATE.deployed.get(name)


def pop_deployed(name: str) -> tuple[Any, RunningApp] | None:
    with _LOCK:
        return _STATE.deployed.pop(name, None)


def deployed_all() -> dict[str, tuple[Any, RunningApp]]:
    with _LOCK:
        return dict(_STATE.deployed)


# -- the process-wide server -----------------------------------------------------------------
def start_server(http: dict[str, Any]) -> Server | None:
    """Start the server now (``serve.start``); it stays up until :func:`stop_everything`.

    ``http``: ``host``, ``port``, ``request_timeout_s``. Returns None when it started, else
    the server already running (now kept up too), whose address may differ from ``http``'s.
    """
    with _LOCK:
        server = _STATE.server
        if server is None:
            _new_server(http, explicit=True)
            return None
        _STATE.explicit = True
        return server


def _env_port() -> int:
    from graphserve.runtime import http_defaults

    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return http_defaults.PORT
    try:
        port = int(text)
    except ValueError:
        raise GraphError(f"{PORT_ENV}={text!r} is not a port number") from None
    if not 0 <= port < 65536:
        raise GraphError(f"{PORT_ENV}={text!r} is not a port number")
    return port


def _new_server(http: dict[str, Any], explicit: bool) -> Server:
    """Start the process-wide server (under ``_LOCK``)."""
    from graphserve.runtime import http_defaults
    from graphserve.runtime.http_server import Server
    from graphserve.runtime.ingress import Ingress

    host = str(http.get("host") or os.environ.get(HOST_ENV) or http_defaults.HOST)
    port = int(http["port"]) if "port" in http else _env_port()
    ingress = Ingress(
        [],
        allow_empty=True,
        token=os.environ.get(TOKEN_ENV) or None,
        default_timeout_s=http.get("request_timeout_s"),
        render=default_render,
    )
    server = Server(ingress, host, port)  # binds now: a busy port is a GraphError here
    server.start(timeout=SERVER_TIMEOUT_S)
    _STATE.server, _STATE.explicit = server, explicit
    logger.info("graphserve: HTTP server at %s (live graph page at %s)", server.url, server.page_url)
    return server


def default_render(plan: Plan, fmt: str, *, figures: bool = False) -> bytes | str:
    """Draw ``plan`` with ``graphserve.compiler.render`` (graphviz), imported when first asked for;
    ``figures``: with room for the live page's figures in each deployment node.

    What every server of this package draws ``/-/graphs/<name>.svg`` with.
    """
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


def serve_plan(
    plan: Plan, route_prefix: str | None, backend: str, backend_options: dict[str, Any], attach: Attach[App]
) -> App:
    """Start ``plan`` on the process-wide server at ``route_prefix`` (else its own, else ``/``).

    The server starts if none runs. An app served under the same name is replaced (as Ray
    Serve replaces it); another app at the same route is a :class:`RouteConflictError`, as
    Ray Serve refuses it. ``attach`` makes the app's handle from its runtime, the server's
    loop, a stop function and the app's URL.
    """
    if route_prefix is not None and not (isinstance(route_prefix, str) and route_prefix.startswith("/")):
        raise RoutePrefixError(f"Invalid route_prefix {route_prefix!r}, must start with a forward slash ('/')")
    from graphserve.runtime.background_loop import running_loop

    path = route_prefix or plan.route_prefix or "/"
    name = plan.name
    # The lock is never held while waiting on the server's loop: constructors running there
    # may call back in here (a 1.x deployment's __init__ calling other.get_handle()).
    with _LOCK:
        server = _STATE.server
        if server is not None and server.ingress.loop is running_loop():
            raise GraphError(f"cannot deploy {name!r} from inside a deployment (the server's own event loop)")
        replaced = [app for app in [_STATE.served.pop(name, None)] if app is not None]
        if server is None:
            server = _new_server({}, explicit=False)
        _STATE.starting += 1
    try:
        for old in replaced:  # Ray Serve redeploys an app run again under its name or route
            old.shutdown()
        app = _add_app(server, plan, path, backend, backend_options, attach)
    finally:
        with _LOCK:
            _STATE.starting -= 1
            _stop_if_idle(server)
    return app


def _add_app(
    server: Server, plan: Plan, path: str, backend: str, backend_options: dict[str, Any], attach: Attach[App]
) -> App:
    from graphserve.runtime import http_defaults
    from graphserve.runtime.running_graph import GraphRuntime

    name = plan.name
    ingress, loop = server.ingress, server.ingress.loop
    if loop is None:  # pragma: no cover - the lifespan startup always sets it
        raise GraphError("the HTTP server has no event loop")
    runtime = GraphRuntime(plan, backend=backend, metrics=ingress.metrics, **backend_options)
    try:
        asyncio.run_coroutine_threadsafe(ingress.add_graph(runtime, path), loop).result(http_defaults.STARTUP_TIMEOUT_S)
    except TimeoutError:
        raise GraphError(f"app {name!r} did not start within {http_defaults.STARTUP_TIMEOUT_S:g}s") from None
    except RouteConflictError as exc:
        hint = "give this app another route_prefix=..., or run it under the same name= to replace the other"
        raise RouteConflictError(f"{exc}; {hint}", exc.path) from None

    def stop() -> None:
        with _LOCK:
            if _STATE.served.get(name) is app:
                del _STATE.served[name]
            current = _STATE.server is server
        if current and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(ingress.remove_graph(name), loop).result(SERVER_TIMEOUT_S)
        with _LOCK:
            _stop_if_idle(server)

    app = attach(runtime, loop, stop, _app_url(server, path))
    with _LOCK:
        _STATE.served[name] = app
    return app


def _app_url(server: Server, path: str) -> str:
    path = path.rstrip("/") or "/"
    return server.url + ("" if path == "/" else path)


def _stop_if_idle(server: Server) -> None:
    """Stop a server that a run started (not serve.start()) once no app runs on it (under _LOCK)."""
    if _STATE.server is not server or _STATE.explicit or _STATE.starting:
        return
    if any(app.url is not None for app in _STATE.served.values()):
        return
    if any(app.url is not None for _, app in _STATE.deployed.values()):
        return
    _STATE.server = None
    server.shutdown(timeout=SERVER_TIMEOUT_S)


def stop_everything() -> None:
    """Stop every running app and the process-wide server (``gs.shutdown``, ``serve.shutdown``)."""
    with _LOCK:
        apps = list(
            dict.fromkeys([*_STATE.running, *_STATE.served.values(), *(a for _, a in _STATE.deployed.values())])
        )
        _STATE.deployed.clear()
        _STATE.explicit = True  # no implicit stop while the apps go
    try:
        for app in apps:
            app.shutdown()
    finally:
        with _LOCK:
            server, _STATE.server, _STATE.explicit = _STATE.server, None, False
    if server is not None:
        server.shutdown(timeout=SERVER_TIMEOUT_S)
