"""A running graph: a Plan, its backend, its executor and its metrics, on one event loop.

runtime = GraphRuntime(plan)           # backend="local" (default) or "ray"
await runtime.start()                  # constructs every replica
result = await runtime.execute({"x": 1})
await runtime.stop()
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

from graphserve.errors import GraphError, NodeExecutionError, RequestError
from graphserve.plan import Plan

from .backend import Backend
from .executor import GraphExecutor
from .handle import DeploymentHandle
from .metrics import BATCH_BUCKETS, Metrics


class GraphRuntime:
    """Owns one graph's backend and executor; see the module docstring."""

    def __init__(
        self, plan: Plan, backend: str | Backend = "local", metrics: Metrics | None = None, **backend_options: Any
    ) -> None:
        self.plan = plan
        self.metrics = metrics if metrics is not None else Metrics()
        self._backend_spec = backend
        self._backend_options = backend_options
        self.backend: Backend | None = None
        self.executor: GraphExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self.stopping = False  # stop() was called: not ready again
        self._references: _BackendReferences | None = None

    def _make_backend(self) -> Backend:
        spec = self._backend_spec
        if not isinstance(spec, str):
            return spec
        if spec == "local":
            from .local import LocalBackend

            return LocalBackend(self.plan, handle_factory=self.handle, on_batch=self._on_batch)
        if spec == "ray":
            from .ray_backend import RayBackend  # optional extra: imported only when asked for

            return RayBackend(self.plan, on_batch=self._on_batch, **self._backend_options)  # type: ignore[no-any-return]
        raise GraphError(f"unknown backend {spec!r}: expected 'local' or 'ray'")

    def _on_batch(self, deployment: str, method: str, size: int) -> None:
        self.metrics.observe(
            "graphserve_batch_size",
            size,
            (("graph", self.plan.name), ("deployment", deployment), ("method", method)),
            buckets=BATCH_BUCKETS,
        )

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.backend = self._make_backend()
        await self.backend.start()
        self.executor = GraphExecutor(self.plan, self.backend, self.metrics)
        self.ready = True

    async def execute(self, request: Any, timeout_s: float | None = None) -> Any:
        if self.executor is None:
            raise GraphError(f"graph {self.plan.name!r} is not started")
        return await self.executor.execute(request, timeout_s)

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        if self.backend is not None:
            await self.backend.stop()

    # -- handles -----------------------------------------------------------------------
    def handle(self, deployment: str, method: str = "__call__") -> DeploymentHandle:
        """A handle to one of the graph's deployments (also what constructors receive).

        On a backend that submits calls by reference (Ray), a response passed to another
        call travels as its reference: the driver never fetches it.
        """
        loop = self.loop or asyncio.get_event_loop()
        references = None
        if isinstance(self.backend, _SubmittingBackend):
            if self._references is None:
                self._references = _BackendReferences(self.backend)
            references = self._references
        return DeploymentHandle(deployment, self._handle_call, loop, method, references)

    async def _handle_call(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.backend is None:
            raise GraphError(f"graph {self.plan.name!r} is not started")
        try:
            return await self.backend.call(deployment, method, args, kwargs)
        except (RequestError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise NodeExecutionError.wrapping(f"{deployment}.{method}", deployment, exc) from exc


@runtime_checkable
class _SubmittingBackend(Protocol):
    """A backend that starts a call and returns its reference at once (Ray)."""

    async def submit(
        self, node: str, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    async def resolve(self, value: Any) -> Any: ...

    def cancel(self, values: list[Any]) -> None: ...


class _BackendReferences:
    """Handle calls by reference on a submitting backend (see ``handle.References``)."""

    def __init__(self, backend: _SubmittingBackend) -> None:
        self.backend = backend

    async def submit(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self.backend.submit(f"{deployment}.{method}", deployment, method, args, kwargs)

    async def fetch(self, reference: Any) -> Any:
        try:
            return await self.backend.resolve(reference)
        except asyncio.CancelledError:
            self.backend.cancel([reference])
            raise

    def forget(self, reference: Any) -> None:
        """Nothing to do: the backend releases the replica when the call finishes."""
