"""The one small interface every backend implements (httpx's transport idea).

The executor (``executor.py``) owns scheduling, branches, deadlines and error naming;
a backend only starts deployments and runs one call on one of their replicas. The
local backend runs replicas in this process; the Ray backend runs them as actors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .routing import DeploymentLoad

if TYPE_CHECKING:
    from .tracing import NodeSpan


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

    async def call(
        self,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """Run ``method`` on one replica of ``deployment`` and return its result.

        ``span`` (a traced request only) learns the replica that ran the call."""

    async def resolve(self, value: Any) -> Any:
        """A value the executor must look at itself (a switch selector, glue input).

        Local values are returned as they are; remote backends fetch references here.
        """

    async def stop(self) -> None:
        """Stop every replica. Safe to call twice."""

    def load(self) -> dict[str, DeploymentLoad]:
        """Deployment name -> how busy its replicas are now (the live page reads it)."""
