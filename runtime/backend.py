"""The one small interface every backend implements (httpx's transport idea).

The executor (``executor.py``) owns scheduling, branches, deadlines and error naming;
a backend only starts deployments and runs one call on one of their replicas. The
local backend runs replicas in this process; the Ray backend runs them as actors.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

BatchLimits = dict[str, float | int | bool | None]  # one batcher's current limits (Batcher.limits())


@runtime_checkable
class Backend(Protocol):
    """Start the Plan's deployments, call them, stop them.

    A backend whose results are plain in-process values sets ``local_values = True``
    so the executor skips :meth:`resolve`.

    A remote backend (Ray) may also offer ``async submit(node, deployment, method, args,
    kwargs)``, which starts a call and returns a reference at once (the executor passes
    references on to later calls and resolves only what it must look at), and
    ``cancel(references)``, which the executor calls for a failed or late request.
    """

    async def start(self) -> None:
        """Construct every replica; raise DeploymentStartError naming a failing deployment."""

    async def call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``method`` on one replica of ``deployment`` and return its result."""

    async def resolve(self, value: Any) -> Any:
        """A value the executor must look at itself (a switch selector, glue input).

        Local values are returned as they are; remote backends fetch references here.
        """

    async def stop(self) -> None:
        """Stop every replica. Safe to call twice."""

    # -- introspection, read by ``/-/metrics`` ---------------------------------------------
    def queue_depth(self) -> dict[str, int]:
        """Calls waiting for a replica, by deployment."""

    def in_flight(self) -> dict[str, int]:
        """Calls running on replicas, by deployment."""

    def batch_limits(self) -> dict[tuple[str, int], dict[str, BatchLimits]]:
        """The current limits of every batcher, by (deployment, replica index), then method.

        Adaptive batchers move their size limit and wait under load (``runtime/adaptive.py``);
        a remote backend may report the values it read last.
        """
