"""The graphserve runtime: executes Plans. It reads only Plans (``graphserve.plan``)
and ``graphserve.errors``, never the DSL's builder objects.

- ``executor``: walks a Plan per request (branches, concurrency, deadlines, errors).
- ``local`` / ``ray_backend``: backends behind one small interface (``backend``).
- ``batcher``: request batching; ``handle``: deployment handles; ``metrics``.
- ``running_graph``: a running graph (backend + executor); ``background_loop``: a loop in a thread.
"""

from __future__ import annotations

from .backend import Backend
from .background_loop import BackgroundLoop
from .executor import GraphExecutor
from .handle import DeploymentHandle, DeploymentResponse
from .metrics import Metrics
from .running_graph import GraphRuntime

__all__ = [
    "Backend",
    "BackgroundLoop",
    "DeploymentHandle",
    "DeploymentResponse",
    "GraphExecutor",
    "GraphRuntime",
    "Metrics",
]
