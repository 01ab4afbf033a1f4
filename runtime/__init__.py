"""The graphserve runtime: executes Plans. It reads only Plans (``graphserve.plan``),
``graphserve.errors`` and the resource rule (``graphserve.resources``), never the DSL's
builder objects or the compiler.

- ``executor``: walks a Plan per request (branches, concurrency, deadlines, errors).
- ``local`` / ``ray_backend``: backends behind one protocol (``backend``), sharing one replica core (``replica``).
- ``batcher``: request batching; ``handle``: deployment handles; ``metrics``.
- ``running_graph``: a running graph (backend + executor); ``background_loop``: a loop in a thread.

Names are imported when first used (PEP 562 ``__getattr__``), so a Ray actor importing
``graphserve.runtime.ray_actor`` loads only what the actor runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphserve.lazy_exports import lazy_dir, lazy_getattr

if TYPE_CHECKING:
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

# public name -> the module that defines it
_EXPORTS = {
    "Backend": "graphserve.runtime.backend",
    "BackgroundLoop": "graphserve.runtime.background_loop",
    "GraphExecutor": "graphserve.runtime.executor",
    "DeploymentHandle": "graphserve.runtime.handle",
    "DeploymentResponse": "graphserve.runtime.handle",
    "Metrics": "graphserve.runtime.metrics",
    "GraphRuntime": "graphserve.runtime.running_graph",
}

if not TYPE_CHECKING:  # mypy sees the imports above; a typo stays an error
    __getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

__dir__ = lazy_dir(globals(), __all__)
