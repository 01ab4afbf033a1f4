"""The interface every backend implements: :class:`Backend` (httpx's transport idea).

The executor (``executor.py``) owns scheduling, branches, deadlines and error naming;
a backend starts a Plan's deployments and runs calls on their replicas. The executor
and the ingress use a backend through these methods only, the same way for every
backend: there is one path through the executor, and nothing is probed.

A call's result is a *value*: on the local backend the result itself, on a remote
backend (Ray) a reference to a result that is still being computed. The executor
passes values on to later calls as they are (a remote backend hands references from
replica to replica, so intermediate results never travel through the driver), and
asks :meth:`Backend.fetch` for the values it must look at itself: a switch's selector,
the input of a field selection or of glue, and the graph's output.

Two implementations: ``local.LocalBackend`` (replicas in this process) and
``ray_backend.RayBackend`` (replicas as Ray actors). A test can pass any object that
implements the protocol to ``GraphRuntime(plan, backend=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .routing import DeploymentLoad
    from .tracing import NodeSpan

BatchLimits = dict[str, float | int | bool | None]  # one batcher's current limits (Batcher.limits())


class Backend(Protocol):
    """Start a Plan's deployments, call them, stop them; see the module docstring."""

    #: Whether :meth:`cancel` has calls to cancel. False where a call stops with the
    #: executor's task that awaits it (the local backend): the executor then keeps no list
    #: of a request's calls (one step less per call) and cancels with an empty one.
    cancels_calls: bool

    async def start(self) -> None:
        """Construct every replica; raise DeploymentStartError naming a failing deployment."""
        ...

    async def submit(
        self,
        node: str,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """Run ``method`` of ``deployment`` for graph node ``node`` on one of its replicas.

        Returns the call's value (see the module docstring): the result, or a reference
        a remote backend returns once the call has started. ``args``/``kwargs`` may hold
        values of earlier calls. Raises OverloadedError when the deployment's queue is
        full; a failure of the call itself raises here or, on a remote backend, as a
        NodeExecutionError naming ``node`` when its value is fetched. ``span`` (a traced
        request only) learns the replica that ran the call (and on Ray gets the actor's
        own record of it)."""
        ...

    async def fetch(self, values: list[Any]) -> list[Any]:
        """The results behind ``values`` (the local backend returns them as they are)."""
        ...

    async def call(
        self,
        deployment: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: NodeSpan | None = None,
    ) -> Any:
        """One call and its result: what deployment handles use (submit, then fetch).

        A failure of the call is a NodeExecutionError naming ``deployment.method``
        (RequestErrors such as OverloadedError pass as they are). ``span``: as for
        :meth:`submit`."""
        ...

    def cancel(self, values: list[Any]) -> None:
        """Cancel the unfinished calls behind ``values`` (a failed or late request).

        In-process calls stop when the executor cancels its own tasks, so the local
        backend has nothing more to do here."""
        ...

    def load(self) -> dict[str, DeploymentLoad]:
        """Deployment name -> how busy its replicas are now (queue, calls running; the
        metrics' gauges and the live page read it). Empty once stopped."""
        ...

    def batch_limits(self) -> dict[tuple[str, int], dict[str, BatchLimits]]:
        """The current limits of every batcher, by (deployment, replica index), then the
        batched function's name (``/-/metrics``' batch limit gauges).

        Adaptive batchers move their size limit and wait under load (``adaptive.py``); a
        remote backend reports the values it read last from its replicas."""
        ...

    async def health(self) -> str | None:
        """None when every deployment can take calls; else why not (for ``/-/ready``: Ray's
        cluster gone, a deployment without any live replica, stopped)."""
        ...

    async def stop(self) -> None:
        """Stop every replica. Safe to call twice."""
        ...
