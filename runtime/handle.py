"""Deployment handles, as in Ray Serve: ``await self.model.remote(x)``,
``await self.model.predict.remote(x)``, ``handle.options(method_name="predict")``.

``remote()`` starts the call at once (see :class:`DeploymentResponse` for how) and
returns a :class:`DeploymentResponse`, an awaitable that ``asyncio.gather`` and
``asyncio.wait`` accept. From a synchronous method (running in a worker thread)
``.result()`` blocks until the call finishes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from .background_loop import running_loop

CallFn = Callable[[str, str, tuple[Any, ...], dict[str, Any]], Coroutine[Any, Any, Any]]


class DeploymentResponse:
    """The result of ``handle.remote(...)``: await it, or ``.result()`` from sync code.

    A call made from the loop it runs on (:meth:`start`) begins at the loop's next step,
    as a task would, unless it is awaited first: then it runs in the awaiting task
    itself, and no task is made (the common ``await handle.remote(x)`` costs no task,
    which is most of what a task-based call costs). A response asked for its future
    (``asyncio.wait``, ``add_done_callback``, ``done()``...) gets one.
    """

    __slots__ = ("_coro", "_future", "_inline", "_loop", "_outcome")

    def __init__(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop):
        self._future: asyncio.Future[Any] | concurrent.futures.Future[Any] | None = future
        self._loop = loop
        self._coro: Coroutine[Any, Any, Any] | None = None  # not started yet
        self._inline: asyncio.Task[Any] | None = None  # the task running it inline
        self._outcome: tuple[bool, Any] | None = None  # (succeeded, result or exception) of an inline run

    @classmethod
    def start(cls, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> DeploymentResponse:
        """Start ``coro`` on ``loop``: from another thread at once (``run_coroutine_threadsafe``);
        from the loop's own thread at its next step, or when awaited, whichever comes first."""
        if running_loop() is not loop:
            return cls(asyncio.run_coroutine_threadsafe(coro, loop), loop)
        response = cls.__new__(cls)
        response._future = None
        response._loop = loop
        response._coro = coro
        response._inline = None
        response._outcome = None
        unawaited = _UNAWAITED.get(loop)
        if unawaited is None:  # one callback per loop step for all the calls made in it
            unawaited = _UNAWAITED[loop] = []
            loop.call_soon(_start_unawaited, loop)
        unawaited.append(response)
        return response

    def _task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        self._coro = None
        task = self._future = self._loop.create_task(coro)
        return task

    def _asyncio_future(self) -> asyncio.Future[Any]:
        """The future of a call on this loop (made now if it runs, or ran, inline)."""
        future = self._future
        if future is None:
            if self._coro is not None:
                return self._task(self._coro)
            future = self._future = self._loop.create_future()
            if self._outcome is not None:
                _settle(future, self._outcome)
        elif isinstance(future, concurrent.futures.Future):
            future = self._future = asyncio.wrap_future(future, loop=self._loop)
        return future

    def __await__(self) -> Generator[Any, None, Any]:
        coro = self._coro
        if coro is None:
            future = self._future
            if isinstance(future, concurrent.futures.Future):
                return (yield from asyncio.wrap_future(future).__await__())
            return (yield from self._asyncio_future().__await__())
        self._coro = None  # run it here, in the awaiting task
        self._inline = asyncio.current_task(self._loop)
        try:
            result = yield from coro.__await__()
        except BaseException as exc:
            self._finish((False, exc))
            raise
        self._finish((True, result))
        return result

    def _finish(self, outcome: tuple[bool, Any]) -> None:
        self._outcome = outcome
        self._inline = None
        future = self._future
        if isinstance(future, asyncio.Future) and not future.done():  # someone asked for a future meanwhile
            _settle(future, outcome)

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the call is done (only from a thread other than the event loop's)."""
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future.result(timeout_s)
        if self._outcome is not None:
            return _unwrap(self._outcome)
        if future is not None and future.done():
            return future.result()
        if running_loop() is self._loop:
            raise RuntimeError("DeploymentResponse.result() would block the event loop; use `await response`")
        waiter: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def copy(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                waiter.cancel()
            elif done.exception() is not None:
                waiter.set_exception(done.exception())
            else:
                waiter.set_result(done.result())

        self._loop.call_soon_threadsafe(lambda: self._asyncio_future().add_done_callback(copy))
        return waiter.result(timeout_s)

    # Future protocol, so asyncio.wait() accepts responses as Ray Serve users expect.
    def add_done_callback(self, fn: Callable[[Any], object], *, context: Any = None) -> None:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            waiting = running_loop()
            if waiting is not None:  # asyncio.wait() from another loop: call back on that loop's thread
                future.add_done_callback(lambda _: waiting.call_soon_threadsafe(fn, self))
                return
            future.add_done_callback(fn)
            return
        self._asyncio_future().add_done_callback(fn)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        future = self._future
        if not isinstance(future, asyncio.Future):  # pragma: no cover - sync callers, or no callback yet
            return 0
        return future.remove_done_callback(fn)

    def cancelled(self) -> bool:
        if self._outcome is not None:
            return isinstance(self._outcome[1], asyncio.CancelledError)
        return self._future is not None and self._future.cancelled()

    def exception(self) -> BaseException | None:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future.exception()
        return self._asyncio_future().exception()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def cancel(self) -> bool:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future.cancel()
        if running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.cancel)
            return True
        if self._coro is not None:  # not started: it never will be
            coro, self._coro = self._coro, None
            coro.close()
            self._finish((False, asyncio.CancelledError()))
            return True
        if self._inline is not None:  # running in the task that awaits it: cancelling that task cancels it
            return self._inline.cancel()
        return future is not None and future.cancel()

    def done(self) -> bool:
        if self._outcome is not None:
            return True
        return self._future is not None and self._future.done()


#: Per loop, the responses made since its last step: started as tasks at its next step
#: unless awaited (and so started) by then.
_UNAWAITED: dict[asyncio.AbstractEventLoop, list[DeploymentResponse]] = {}


def _start_unawaited(loop: asyncio.AbstractEventLoop) -> None:
    for response in _UNAWAITED.pop(loop, ()):
        if response._coro is not None:
            response._task(response._coro)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    succeeded, value = outcome
    if succeeded:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(value)


def _unwrap(outcome: tuple[bool, Any]) -> Any:
    succeeded, value = outcome
    if succeeded:
        return value
    raise value


class DeploymentHandle:
    """A handle to a deployment; attribute access picks a method."""

    def __init__(self, deployment: str, call: CallFn, loop: asyncio.AbstractEventLoop, method: str = "__call__"):
        self.deployment_name = deployment
        self._call = call
        self._loop = loop
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        return DeploymentResponse.start(self._call(self.deployment_name, self._method, args, kwargs), self._loop)

    def options(self, method_name: str | None = None, **_ignored: Any) -> DeploymentHandle:
        return DeploymentHandle(self.deployment_name, self._call, self._loop, method_name or self._method)

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self._call, self._loop, name)

    def __repr__(self) -> str:
        return f"DeploymentHandle({self.deployment_name!r}, method={self._method!r})"
