"""Ray Serve's exception names (``ray.serve.exceptions``) on graphserve's exception tree.

``from graphserve.exceptions import RayServeException`` catches what
``from ray.serve.exceptions import RayServeException`` caught: every error graphserve
raises on purpose is a :class:`~graphserve.errors.GraphError`.

==============================  ============================================================
Ray Serve                       graphserve
==============================  ============================================================
``RayServeException``           :class:`~graphserve.errors.GraphError` (the base of all)
``BackPressureError``           :class:`~graphserve.errors.OverloadedError` (HTTP 503)
``DeploymentUnavailableError``  :class:`~graphserve.errors.DeploymentStartError`
``ReplicaUnavailableError``     :class:`~graphserve.errors.NodeExecutionError` (a replica died)
``RequestCancelledError``       :class:`asyncio.CancelledError` (a cancelled call raises it)
``gRPCStatusError``             not provided: graphserve serves HTTP only
==============================  ============================================================
"""

from __future__ import annotations

from asyncio import CancelledError as RequestCancelledError

from graphserve.errors import DeploymentStartError as DeploymentUnavailableError
from graphserve.errors import GraphError as RayServeException
from graphserve.errors import NodeExecutionError as ReplicaUnavailableError
from graphserve.errors import OverloadedError as BackPressureError

__all__ = [
    "BackPressureError",
    "DeploymentUnavailableError",
    "RayServeException",
    "ReplicaUnavailableError",
    "RequestCancelledError",
]
