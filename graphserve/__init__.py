"""graphserve: a dataflow graph compiler and executor for inference DAGs.

import graphserve as gs

@gs.deployment
class Model:
    async def __call__(self, x: float) -> float:
        return 2 * x

with gs.InputNode() as inp:
    app = gs.graph(Model.bind().__call__.bind(inp["x"]))
handle = gs.run(app)
handle.call({"x": 1.5})  # 3.0

Every public name is imported when first used (PEP 562 ``__getattr__``), so
``import graphserve`` costs nothing and a Ray actor that imports ``graphserve.runtime``
never loads the DSL, the compiler or the HTTP entry points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphserve.lazy_exports import lazy_dir, lazy_getattr

if TYPE_CHECKING:
    from graphserve.api import GraphHandle, build, run, shutdown
    from graphserve.batching import batch
    from graphserve.compat import (
        Deployment,
        delete,
        deployment,
        get_app_handle,
        get_deployment,
        get_deployment_handle,
        ingress,
        list_deployments,
        start,
        status,
    )
    from graphserve.dsl import SLO, App, InputNode, cond, glue, graph, switch
    from graphserve.errors import (
        DeadlineExceededError,
        DeploymentStartError,
        GraphError,
        GraphValidationError,
        GraphWarning,
        NodeExecutionError,
        OverloadedError,
        PlanError,
        ProfileError,
        RequestError,
        RequestValidationError,
        RouteConflictError,
    )
    from graphserve.profiling import profile, simulate
    from graphserve.serving import serve

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("GraphHandle", "build", "run", "shutdown"), "graphserve.api"),
    "batch": "graphserve.batching",
    **dict.fromkeys(
        (
            "Deployment",
            "delete",
            "deployment",
            "get_app_handle",
            "get_deployment",
            "get_deployment_handle",
            "ingress",
            "list_deployments",
            "start",
            "status",
        ),
        "graphserve.compat",
    ),
    **dict.fromkeys(("App", "InputNode", "SLO", "cond", "glue", "graph", "switch"), "graphserve.dsl"),
    **dict.fromkeys(
        (
            "DeadlineExceededError",
            "DeploymentStartError",
            "GraphError",
            "GraphValidationError",
            "GraphWarning",
            "NodeExecutionError",
            "OverloadedError",
            "PlanError",
            "ProfileError",
            "RequestError",
            "RequestValidationError",
            "RouteConflictError",
        ),
        "graphserve.errors",
    ),
    **dict.fromkeys(("profile", "simulate"), "graphserve.profiling"),
    "serve": "graphserve.serving",
}

# Ray Serve's submodules, reached as attributes (``serve.handle``, ``serve.exceptions``, ...)
_SUBMODULES = {"dag", "deployment_graph", "drivers", "exceptions", "handle", "http_adapters", "schema"}

__all__ = [
    "SLO",
    "App",
    "DeadlineExceededError",
    "Deployment",
    "DeploymentStartError",
    "GraphError",
    "GraphHandle",
    "GraphValidationError",
    "GraphWarning",
    "InputNode",
    "NodeExecutionError",
    "OverloadedError",
    "PlanError",
    "ProfileError",
    "RequestError",
    "RequestValidationError",
    "RouteConflictError",
    "batch",
    "build",
    "cond",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment",
    "get_deployment_handle",
    "glue",
    "graph",
    "ingress",
    "list_deployments",
    "profile",
    "run",
    "serve",
    "shutdown",
    "simulate",
    "start",
    "status",
    "switch",
]

if not TYPE_CHECKING:  # mypy sees the imports above; a typo stays an error
    __getattr__ = lazy_getattr(__name__, _EXPORTS, globals(), _SUBMODULES)

__dir__ = lazy_dir(globals(), __all__)
