"""The user-facing entry points that tie the DSL, the compiler and the runtime together:
``gs.build(app)`` -> Plan, ``gs.run(app)`` -> a running graph with a handle."""

from __future__ import annotations

import asyncio
from typing import Any

from graphserve.dsl import App, as_app

_RUNNING: list[GraphHandle] = []


def build(app: Any, cluster: Any = None) -> Any:
    """Validate and plan ``app``; returns a :class:`graphserve.compiler.Plan`.

    ``cluster`` ({"cpus": 8, "gpus": 2}, "cpus=8,gpus=2" or "detect") makes infeasible
    placements errors; None checks no resources.
    """
    from graphserve.compiler import compile_app

    return compile_app(app, cluster=cluster)


class GraphHandle:
    """A graph running on a background event loop.

    ``await handle.remote(request)`` from any event loop, ``handle.call(request)`` from
    blocking code, ``handle.shutdown()`` to stop it.
    """

    def __init__(self, plan: Any, backend: str = "local", **backend_options: Any) -> None:
        from graphserve.runtime import BackgroundLoop, GraphRuntime

        self.plan = plan
        self._loop = BackgroundLoop(name=f"graphserve-{plan.name}")
        self.runtime = GraphRuntime(plan, backend=backend, **backend_options)
        try:
            self._loop.run(self.runtime.start())
        except BaseException:
            self._loop.close()
            raise
        _RUNNING.append(self)

    async def remote(self, request: Any = None, timeout_s: float | None = None) -> Any:
        future = self._loop.submit(self.runtime.execute(request, timeout_s))
        return await asyncio.wrap_future(future)

    def call(self, request: Any = None, timeout_s: float | None = None) -> Any:
        return self._loop.run(self.runtime.execute(request, timeout_s))

    def deployment(self, name: str, method: str = "__call__") -> Any:
        """A handle to one deployment of the running graph."""
        return self.runtime.handle(name, method)

    def shutdown(self) -> None:
        if self in _RUNNING:
            _RUNNING.remove(self)
        if not self._loop.loop.is_closed():
            try:
                self._loop.run(self.runtime.stop(), timeout=30)
            finally:
                self._loop.close()

    def __enter__(self) -> GraphHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def run(app: App | Any, backend: str = "local", cluster: Any = "detect", **backend_options: Any) -> GraphHandle:
    """Compile ``app`` and start it (local runtime by default); returns a :class:`GraphHandle`.

    On ``backend="ray"`` the default ``cluster="detect"`` checks nothing at planning time
    (this machine is not the Ray cluster): the Ray backend checks the Ray cluster's own
    resources before any actor starts.
    """
    if backend == "ray" and cluster == "detect":
        cluster = None
    plan = build(as_app(app), cluster=cluster)
    return GraphHandle(plan, backend=backend, **backend_options)


def shutdown() -> None:
    """Stop every graph started with :func:`run`."""
    for handle in list(_RUNNING):
        handle.shutdown()
