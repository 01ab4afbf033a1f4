"""A running graph: a Plan, its backend, its executor and its metrics, on one event loop.

runtime = GraphRuntime(plan)           # backend="local" (default) or "ray"
await runtime.start()                  # constructs every replica
result = await runtime.execute({"x": 1})
await runtime.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from graphserve.errors import GraphError
from graphserve.plan import Plan

from .backend import Backend
from .executor import GraphExecutor
from .handle import DeploymentHandle
from .metrics import BATCH_BUCKETS, Histogram, Metrics
from .tracing import CURRENT, NodeSpan, Trace


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
        self._by_reference: _BackendReferences | None = None
        self._node_latency: dict[str, Histogram] = {}

    @property
    def backend_name(self) -> str:
        """``local``, ``ray``, or the class name of a backend passed in."""
        spec = self._backend_spec
        return spec if isinstance(spec, str) else type(spec).__name__

    def _make_backend(self) -> Backend:
        spec = self._backend_spec
        if not isinstance(spec, str):
            return spec
        if spec == "local":
            from .local import LocalBackend

            return LocalBackend(
                self.plan, handle_factory=self.handle, on_batch=self._on_batch, node_latency=self._node_latency_observer
            )
        if spec == "ray":
            from .ray_backend import RayBackend  # optional extra: imported only when asked for

            return RayBackend(self.plan, on_batch=self._on_batch, on_latency=self._on_latency, **self._backend_options)
        raise GraphError(f"unknown backend {spec!r}: expected 'local' or 'ray'")

    def _on_batch(self, deployment: str, method: str, size: int) -> None:
        self.metrics.observe(
            "graphserve_batch_size",
            size,
            (("graph", self.plan.name), ("deployment", deployment), ("method", method)),
            buckets=BATCH_BUCKETS,
        )

    def _on_latency(self, node: str, seconds: float) -> None:
        """A call's latency, measured by the backend where it ran (Ray actors report theirs
        every metrics interval; the local backend observes each call through
        :meth:`_node_latency_observer`)."""
        self._node_latency_observer(node)(seconds)

    def _node_latency_observer(self, node: str) -> Callable[[float], None]:
        """``node``'s latency histogram's ``observe`` (the local backend asks once per node)."""
        series = self._node_latency.get(node)
        if series is None:
            labels = (("graph", self.plan.name), ("node", node))
            series = self._node_latency[node] = self.metrics.series("graphserve_node_latency_seconds", labels)
        return series.observe

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._node_latency.clear()  # the metrics registry may have been replaced (one per server)
        self.backend = self._make_backend()
        await self.backend.start()
        self.executor = GraphExecutor(self.plan, self.backend)
        self.ready = True

    def execute(
        self, request: Any, timeout_s: float | None = None, trace: Trace | None = None
    ) -> Coroutine[Any, Any, Any]:
        """The executor's run of ``request`` (await it); no coroutine of its own on the hot path."""
        if self.executor is None:
            raise GraphError(f"graph {self.plan.name!r} is not started")
        return self.executor.execute(request, timeout_s, trace)

    async def health(self) -> str | None:
        """None when the graph can serve; else why not (not started, stopping, its backend's answer)."""
        if not self.ready or self.backend is None:
            return f"graph {self.plan.name!r} is {'stopping' if self.stopping else 'starting'}"
        return await self.backend.health()

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        if self.backend is not None:
            await self.backend.stop()

    # -- handles -----------------------------------------------------------------------
    def handle(self, deployment: str, method: str = "__call__") -> DeploymentHandle:
        """A handle to one of the graph's deployments (also what constructors receive).

        On a remote backend (Ray) a response passed to another call travels as its
        reference: the driver does not fetch it.
        """
        loop = self.loop or asyncio.get_event_loop()
        return DeploymentHandle(deployment, self._handle_call, loop, method, self._references())

    def _references(self) -> _BackendReferences | None:
        from .local import LocalBackend  # in process: results are values already, nothing to pass by reference

        if self.backend is None or isinstance(self.backend, LocalBackend):
            return None
        if self._by_reference is None:
            self._by_reference = _BackendReferences(self.backend)
        return self._by_reference

    def _handle_call(
        self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """The backend's call for a handle (no coroutine of its own: one frame less per handle call)."""
        if self.backend is None:
            raise GraphError(f"graph {self.plan.name!r} is not started")
        parent = CURRENT.get()
        if isinstance(parent, NodeSpan):  # made while a traced request's node runs: a child span
            return self._traced_handle_call(parent, deployment, method, args, kwargs)
        return self.backend.call(deployment, method, args, kwargs)

    async def _traced_handle_call(
        self, parent: NodeSpan, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self.backend is None:
            raise GraphError(f"graph {self.plan.name!r} is not started")
        span = parent.child(f"{deployment}.{method}", deployment)
        token = CURRENT.set(span)
        try:
            with span.trace.current(span):
                result = await self.backend.call(deployment, method, args, kwargs, span)
        except BaseException as exc:
            span.finish(exc)
            raise
        finally:
            CURRENT.reset(token)
        span.finish()
        return result


class _BackendReferences:
    """Handle calls by reference on a remote backend (see ``handle.References``)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def submit(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self.backend.submit(f"{deployment}.{method}", deployment, method, args, kwargs)

    async def fetch(self, reference: Any) -> Any:
        try:
            (value,) = await self.backend.fetch([reference])
        except asyncio.CancelledError:
            self.backend.cancel([reference])
            raise
        return value

    def forget(self, reference: Any) -> None:
        """Nothing to do: the backend releases the replica when the call finishes."""
