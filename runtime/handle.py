"""Deployment handles, as in Ray Serve: ``await self.model.remote(x)``,
``await self.model.predict.remote(x)``, ``handle.options(method_name="predict")``.

``remote()`` starts the call at once and returns a :class:`DeploymentResponse`, an
awaitable that ``asyncio.gather``/``asyncio.wait`` accept. From a synchronous method
(running in a worker thread) ``.result()`` blocks until the call finishes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Generator
from typing import Any

CallFn = Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class DeploymentResponse:
    """The result of ``handle.remote(...)``: await it, or ``.result()`` from sync code."""

    __slots__ = ("_future", "_loop")

    def __init__(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop):
        self._future = future
        self._loop = loop

    def __await__(self) -> Generator[Any, None, Any]:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return asyncio.wrap_future(future).__await__()
        return future.__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the call is done (only from a thread other than the event loop's)."""
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future.result(timeout_s)
        if future.done():
            return future.result()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("DeploymentResponse.result() would block the event loop; use `await response`")
        waiter: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def copy(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                waiter.cancel()
            elif done.exception() is not None:
                waiter.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(done.result())

        self._loop.call_soon_threadsafe(future.add_done_callback, copy)
        return waiter.result(timeout_s)

    # Future protocol, so asyncio.wait() accepts responses as Ray Serve users expect.
    def add_done_callback(self, fn: Callable[[Any], object], *, context: Any = None) -> None:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            try:
                waiting = asyncio.get_running_loop()
            except RuntimeError:
                waiting = None
            if waiting is not None:  # asyncio.wait() from another loop: call back on that loop's thread
                future.add_done_callback(lambda _: waiting.call_soon_threadsafe(fn, self))
                return
        future.add_done_callback(fn)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        future = self._future
        if isinstance(future, concurrent.futures.Future):  # pragma: no cover - sync callers only
            return 0
        return future.remove_done_callback(fn)

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def exception(self) -> BaseException | None:
        return self._future.exception()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def cancel(self) -> bool:
        if isinstance(self._future, concurrent.futures.Future):
            return self._future.cancel()
        return self._loop.call_soon_threadsafe(self._future.cancel) is not None

    def done(self) -> bool:
        return self._future.done()


class DeploymentHandle:
    """A handle to a deployment; attribute access picks a method."""

    def __init__(self, deployment: str, call: CallFn, loop: asyncio.AbstractEventLoop, method: str = "__call__"):
        self.deployment_name = deployment
        self._call = call
        self._loop = loop
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        coro = self._call(self.deployment_name, self._method, args, kwargs)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return DeploymentResponse(self._loop.create_task(coro), self._loop)  # type: ignore[arg-type]
        return DeploymentResponse(asyncio.run_coroutine_threadsafe(coro, self._loop), self._loop)  # type: ignore[arg-type]

    def options(self, method_name: str | None = None, **_ignored: Any) -> DeploymentHandle:
        return DeploymentHandle(self.deployment_name, self._call, self._loop, method_name or self._method)

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self._call, self._loop, name)

    def __repr__(self) -> str:
        return f"DeploymentHandle({self.deployment_name!r}, method={self._method!r})"
