"""Ray Serve's status shapes (``ray.serve.schema``): what ``serve.status()`` returns.

    status = serve.status()
    status.applications["default"].status            # ApplicationStatus.RUNNING
    status.applications["default"].route_prefix      # "/"
    status.applications["default"].deployments["Model"].status   # DeploymentStatus.HEALTHY

The enums are ``StrEnum``s, so ``status == "RUNNING"`` holds, as in Ray Serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ApplicationStatus",
    "ApplicationStatusOverview",
    "DeploymentStatus",
    "DeploymentStatusOverview",
    "ServeStatus",
]


class ApplicationStatus(StrEnum):
    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


class DeploymentStatus(StrEnum):
    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"


@dataclass(eq=True)
class DeploymentStatusOverview:
    """One deployment of an application: its status and how many replicas are in each state."""

    status: DeploymentStatus
    status_trigger: str
    replica_states: dict[str, int]
    message: str = ""


@dataclass(eq=True)
class ApplicationStatusOverview:
    """One application: its status, route, when it was deployed, and its deployments by name."""

    status: ApplicationStatus
    message: str
    last_deployed_time_s: float
    deployments: dict[str, DeploymentStatusOverview]
    route_prefix: str | None = None


@dataclass(eq=True)
class ServeStatus:
    """Every application running in this process, by name (``proxies``: none; one server serves all)."""

    proxies: dict[str, str] = field(default_factory=dict)
    applications: dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    target_capacity: float | None = None
