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
"""

from __future__ import annotations

from graphserve.api import GraphHandle, build, run, shutdown
from graphserve.batching import batch
from graphserve.compat import (
    delete,
    get_app_handle,
    get_deployment,
    get_deployment_handle,
    ingress,
    list_deployments,
    start,
)
from graphserve.dsl import App, Deployment, InputNode, cond, deployment, glue, graph, switch
from graphserve.errors import (
    DeadlineExceededError,
    DeploymentStartError,
    GraphError,
    GraphValidationError,
    GraphWarning,
    NodeExecutionError,
    OverloadedError,
    PlanError,
    RequestError,
    RequestValidationError,
)
from graphserve.serving import serve

__version__ = "0.1.0"

__all__ = [
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
    "RequestError",
    "RequestValidationError",
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
    "run",
    "serve",
    "shutdown",
    "start",
    "switch",
]
