"""Deployment handles, as in Ray Serve: ``await self.model.remote(x)``,
``await self.model.predict.remote(x)``, ``handle.options(method_name="predict")``.

``remote()`` starts the call at once and returns a :class:`DeploymentResponse`, an
awaitable that ``asyncio.gather``/``asyncio.wait`` accept. From a synchronous method
(running in a worker thread) ``.result()`` blocks until the call finishes.

Code written for Ray Serve before 2.7 awaits twice (``ref = await h.remote(x)``, then
``await ref``): the first await gave an ``ObjectRef``. The response recognises such an
await site (by the bytecode that follows it, once per site) and gives itself back, with a
``DeprecationWarning``, so the second await gets the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dis
import itertools
import sys
import warnings
from collections.abc import Awaitable, Callable, Generator
from types import CodeType
from typing import Any

CallFn = Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class DeploymentResponse:
    """The result of ``handle.remote(...)``: await it, or ``.result()`` from sync code."""

    __slots__ = ("_future", "_loop")

    def __init__(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop):
        self._future = future
        self._loop = loop

    def __await__(self) -> Generator[Any, None, Any]:
        caller = sys._getframe(1)
        if _awaited_twice(caller.f_code, caller.f_lasti):
            warnings.warn(
                "`await (await handle.remote(...))` is Ray Serve's handle API before 2.7: the first await gave an "
                "ObjectRef. Await a DeploymentResponse once: `result = await handle.remote(...)`",
                DeprecationWarning,
                stacklevel=2,
            )
            return _at_once(self)  # the first await of the old API: the response itself, awaited next
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


def _at_once(value: Any) -> Generator[Any, None, Any]:
    return value
    yield  # pragma: no cover - makes this a generator


_OLD_STYLE_AWAITS: dict[tuple[CodeType, int], bool] = {}
_STORES = ("STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL")


def _awaited_twice(code: CodeType, lasti: int) -> bool:
    """Whether the ``await`` at ``lasti`` of ``code`` awaits its result again (Ray Serve's pre-2.7 API):
    ``await (await h.remote())``, or ``ref = await h.remote()`` followed by ``await ref``. Cached per site."""
    key = (code, lasti)
    found = _OLD_STYLE_AWAITS.get(key)
    if found is None:
        found = _OLD_STYLE_AWAITS[key] = _scan_await(code, lasti)
    return found


def _scan_await(code: CodeType, lasti: int) -> bool:
    instructions = list(dis.get_instructions(code))
    index = {ins.offset: n for n, ins in enumerate(instructions)}
    n = index.get(lasti)
    if n is None or instructions[n].opname != "GET_AWAITABLE":
        return False  # awaited by asyncio machinery (gather, ensure_future), not by an await expression
    send = next((ins for ins in instructions[n + 1 : n + 6] if ins.opname == "SEND"), None)
    after = index.get(send.argval) if send is not None and isinstance(send.argval, int) else None
    if after is None:
        return False
    if instructions[after].opname == "END_SEND":  # Python 3.12+
        after += 1
    following = instructions[after]
    if following.opname == "GET_AWAITABLE":
        return True
    if following.opname in _STORES:
        rest = instructions[after + 1 :]
        return any(
            load.opname.startswith("LOAD_") and load.argval == following.argval and nxt.opname == "GET_AWAITABLE"
            for load, nxt in itertools.pairwise(rest)
        )
    return False


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
