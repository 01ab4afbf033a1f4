"""Ray Serve's handle names (``ray.serve.handle``): ``from graphserve.handle import DeploymentHandle``.

``DeploymentHandle`` is what constructors receive for other deployments; ``remote()``
returns a :class:`DeploymentResponse` (await it, or ``.result()`` from blocking code).
"""

from __future__ import annotations

from graphserve.runtime.handle import DeploymentHandle, DeploymentResponse

__all__ = ["DeploymentHandle", "DeploymentResponse"]
