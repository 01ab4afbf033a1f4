"""Ray Serve's handle names (``ray.serve.handle``): ``from graphserve.handle import DeploymentHandle``.

``DeploymentHandle`` is what constructors receive for other deployments, and
``serve.run`` returns one too (``isinstance(handle, DeploymentHandle)`` holds for the app
handle, a :class:`graphserve.api.GraphHandle`). ``remote()`` returns a
:class:`DeploymentResponse` (await it, or ``.result()`` from blocking code); with
``.options(stream=True)`` it returns a :class:`DeploymentResponseGenerator`. Ray Serve's
older names (``RayServeHandle``, ``RayServeSyncHandle``, ``RayServeDeploymentHandle``) are
the same class.
"""

from __future__ import annotations

from graphserve.api import GraphHandle
from graphserve.runtime.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

DeploymentHandle.register(GraphHandle)

RayServeHandle = RayServeSyncHandle = RayServeDeploymentHandle = DeploymentHandle

__all__ = [
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "RayServeDeploymentHandle",
    "RayServeHandle",
    "RayServeSyncHandle",
]
