"""Ray Serve's API on graphserve: ``import graphserve as serve`` instead of ``from ray import serve``.

Built on :mod:`graphserve.api` (``serve.run`` is ``gs.run``) and the process registry
(:mod:`graphserve.registry`, which owns the running apps and the HTTP server). This
module holds what only Ray Serve code needs:

- ``serve.start(http_options={"host": ..., "port": ...})``: start the process-wide HTTP
  server now; it stays up until ``serve.shutdown()``.
- Ray Serve 2.x lookups: ``serve.delete(name)``, ``serve.get_app_handle(name)``,
  ``serve.get_deployment_handle(deployment, app_name)``.
- **the 1.x API**: ``@serve.deployment`` makes a :class:`Deployment`, the DSL's deployment
  plus ``Model.deploy(*args)`` (each deployment its own app, routed at its
  ``route_prefix``, by default ``/<name>``; ``route_prefix=None`` deploys it without a
  route), ``Model.get_handle()``, ``Model.delete()``, ``Model.url``;
  ``serve.get_deployment(name)``, ``serve.list_deployments()``. The DSL itself
  (:mod:`graphserve.dsl`) builds graphs and runs nothing.
- **warnings** for what graphserve accepts but does not do (``serve.start`` options and
  ``http_options`` keys it ignores): each distinct one is shown once per process as a
  :class:`GraphWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, overload

from graphserve import dsl, registry
from graphserve.api import GraphHandle, run
from graphserve.errors import GraphError, GraphWarning
from graphserve.schema import (
    ApplicationStatus,
    ApplicationStatusOverview,
    DeploymentStatus,
    DeploymentStatusOverview,
    ServeStatus,
)

logger = logging.getLogger("graphserve.compat")

T = TypeVar("T")

_HTTP_OPTIONS_USED = {"host", "port", "request_timeout_s"}


def _warn_ignored(what: str, why: str) -> None:
    if registry.first_time(("GS117", None, what)):
        warnings.warn(f"GS117: {what} is accepted but ignored: {why}", GraphWarning, stacklevel=3)


# -- the process-wide server -----------------------------------------------------------------
def start(http_options: Any = None, detached: bool = False, **options: Any) -> None:
    """Ray Serve's ``serve.start``: start the HTTP server now (``http_options``: host, port,
    request_timeout_s); it stays up until ``serve.shutdown()``. Other options are ignored, with a warning."""
    for key in sorted(options):
        _warn_ignored(f"serve.start({key}=...)", "graphserve serves from this process")
    http = _http_options(http_options)
    server = registry.start_server(http)
    if server is not None:
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


# -- Ray Serve 2.x lookups -------------------------------------------------------------------
def delete(name: str, _blocking: bool = True) -> None:
    """Stop the app ``name`` and remove its route (nothing happens if no app has that name)."""
    app = registry.served_app(name)
    entry = registry.pop_deployed(name)
    if app is not None:
        app.shutdown()
    if entry is not None:
        entry[1].shutdown()


def get_app_handle(name: str) -> GraphHandle:
    """The handle of the running app ``name``; Ray Serve's error when there is none."""
    app = registry.served_app(name)
    if not isinstance(app, GraphHandle):
        raise GraphError(f"Application '{name}' does not exist. Running applications: {registry.served_names()}")
    return app


def get_deployment_handle(deployment_name: str, app_name: str | None = None) -> Any:
    """A handle to deployment ``deployment_name`` of a running app (the only one that has it, or ``app_name``)."""
    apps = registry.apps_by_name(app_name)
    if app_name is not None and not apps:
        raise GraphError(f"Application '{app_name}' does not exist. Running applications: {registry.served_names()}")
    owners = {h for h in apps.values() if any(d.name == deployment_name for d in h.plan.deployments)}
    if len(owners) != 1:
        what = "no running app has" if not owners else "several running apps have"
        raise GraphError(f"{what} a deployment named {deployment_name!r}; pass app_name=... ({sorted(apps)})")
    return owners.pop().deployment(deployment_name)


def status() -> ServeStatus:
    """Ray Serve's ``serve.status()``: every served application with its deployments' statuses."""
    applications: dict[str, ApplicationStatusOverview] = {}
    for name, app in registry.apps_by_name().items():
        if not isinstance(app, GraphHandle):
            continue
        ready = bool(app.runtime.ready)
        deployments = {
            dep.name: DeploymentStatusOverview(
                status=DeploymentStatus.HEALTHY if ready else DeploymentStatus.UPDATING,
                status_trigger="CONFIG_UPDATE_COMPLETED" if ready else "CONFIG_UPDATE_STARTED",
                replica_states={"RUNNING" if ready else "STARTING": dep.num_replicas},
            )
            for dep in app.plan.deployments
        }
        route = app.url[len(registry.server_url() or "") :] or "/" if app.url is not None else None
        applications[name] = ApplicationStatusOverview(
            status=ApplicationStatus.RUNNING if ready else ApplicationStatus.DEPLOYING,
            message="",
            last_deployed_time_s=app.deployed_at,
            deployments=deployments,
            route_prefix=route,
        )
    return ServeStatus(applications=applications)


# -- Ray Serve 1.x -----------------------------------------------------------------------------
class Deployment(dsl.Deployment[T]):
    """What ``@serve.deployment`` (``@gs.deployment``) makes: the DSL's deployment, which
    builds graph nodes, plus Ray Serve 1.x's ``deploy``, ``get_handle``, ``delete`` and ``url``."""

    def deploy(self, *args: Any, **kwargs: Any) -> None:
        """Deploy this deployment alone on this process's HTTP server, at ``route_prefix`` (default ``/<name>``)."""
        options = self.deployment_options
        route = options["route_prefix"] if "route_prefix" in options else "/" + self.name
        entry = registry.pop_deployed(self.name)
        if entry is not None:
            entry[1].shutdown()
        handle = run(self.bind(*args, **kwargs), name=self.name, route_prefix=route, http=route is not None)
        registry.record_deployed(self.name, self, handle)

    def get_handle(self, sync: bool | None = None) -> Any:
        """A handle to this deployment, once deployed (``.deploy()`` or ``serve.run``)."""
        entry = registry.deployed(self.name)
        if entry is not None:
            return entry[1].options()
        return get_deployment_handle(self.name)

    def delete(self) -> None:
        """Stop this deployment, deployed with ``.deploy()``."""
        delete(self.name)

    @property
    def url(self) -> str | None:
        """The HTTP URL of this deployment, deployed with ``.deploy()``; None without a route."""
        entry = registry.deployed(self.name)
        return entry[1].url if entry is not None else None


@overload
def deployment(_target: T) -> Deployment[T]: ...


@overload
def deployment(_target: None = None, **options: Any) -> Callable[[T], Deployment[T]]: ...


def deployment(_target: Any = None, **options: Any) -> Any:
    """Declare a deployment, bare (``@gs.deployment``) or with options
    (``@gs.deployment(num_replicas=2, num_gpus=1)``, or 1.x's positional name
    ``@serve.deployment("name", ...)``); see :func:`graphserve.dsl.deployment`."""
    location = dsl.caller_location()
    if isinstance(_target, str):  # Ray Serve 1.x: @serve.deployment("name")
        if "name" in options and options["name"] != _target:
            raise GraphError(f"@serve.deployment({_target!r}, name={options['name']!r}): give the name once")
        options, _target = {**options, "name": _target}, None
    dsl.check_options(options)
    if _target is not None:
        return Deployment(_target, options, location)

    def wrap(target: Any) -> Deployment[Any]:
        return Deployment(target, options, location)

    return wrap


def get_deployment(name: str) -> dsl.Deployment[Any]:
    """Ray Serve 1.x ``serve.get_deployment(name)``: the deployment deployed under ``name``."""
    entry = registry.deployed(name)
    if entry is None:
        raise GraphError(f"no deployment named {name!r} is deployed; deployed: {sorted(registry.deployed_all())}")
    deployment: dsl.Deployment[Any] = entry[0]
    return deployment


def list_deployments() -> dict[str, dsl.Deployment[Any]]:
    """Ray Serve 1.x ``serve.list_deployments()``: the deployments deployed with ``.deploy()``, by name."""
    return {name: dep for name, (dep, _) in registry.deployed_all().items()}


def ingress(app: Any) -> Any:
    """Ray Serve's ``@serve.ingress(fastapi_app)`` is not supported."""
    raise GraphError(
        "@serve.ingress (a FastAPI app as the ingress) is not supported by graphserve; "
        "take a starlette Request in __call__ instead (async def __call__(self, request: Request))"
    )
