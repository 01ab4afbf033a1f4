"""Deployment handles, as in Ray Serve: ``await self.model.remote(x)``,
``await self.model.predict.remote(x)``, ``handle.options(method_name="predict")``.

``remote()`` starts the call at once (see :class:`DeploymentResponse` for how) and
returns a :class:`DeploymentResponse`, an awaitable that ``asyncio.gather`` and
``asyncio.wait`` accept. From a synchronous method (running in a worker thread)
``.result()`` blocks until the call finishes.

Arguments may hold other calls' responses (Ray Serve's model composition): the callee gets
their values (see :class:`DeploymentHandle`). ``handle.options(stream=True)`` calls return
a :class:`DeploymentResponseGenerator`.

Code written for Ray Serve before 2.7 awaits twice (``ref = await h.remote(x)``, then
``await ref``): the first await gave an ``ObjectRef``. The response recognises such an
await site (by the bytecode that follows it, once per site) and gives itself back, with a
``DeprecationWarning``, so the second await gets the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dis
import inspect
import itertools
import sys
import types
import warnings
from abc import ABCMeta
from collections.abc import Callable, Coroutine, Generator
from types import CodeType
from typing import Any, Protocol

from graphserve.errors import GraphError, StreamRequiredError

from .background_loop import running_loop

CallFn = Callable[[str, str, tuple[Any, ...], dict[str, Any]], Coroutine[Any, Any, Any]]

_GENERATORS = (types.GeneratorType, types.AsyncGeneratorType)


def _not_a_generator(value: Any) -> Any:
    """``value``, unless it is a generator: a call without ``stream=True`` reached a generator method."""
    if type(value) in _GENERATORS:
        if isinstance(value, types.GeneratorType):
            value.close()
        raise StreamRequiredError(
            f"the deployment method is a generator (it returned a {type(value).__name__} object): call it with "
            "`handle.options(stream=True).remote(...)` and iterate the DeploymentResponseGenerator it returns"
        )
    return value


class DeploymentResponse:
    """The result of ``handle.remote(...)``: await it, or ``.result()`` from sync code.

    A call made from the loop it runs on (:meth:`start`) begins at the loop's next step,
    as a task would, unless it is awaited first: then it runs in the awaiting task
    itself, and no task is made (the common ``await handle.remote(x)`` costs no task,
    which is most of what a task-based call costs). A response asked for its future
    (``asyncio.wait``, ``add_done_callback``, ``done()``...) gets one.
    """

    __slots__ = ("_coro", "_future", "_inline", "_loop", "_outcome", "_reference")

    def __init__(self, future: asyncio.Future[Any] | concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop):
        self._future: asyncio.Future[Any] | concurrent.futures.Future[Any] | None = future
        self._loop = loop
        self._coro: Coroutine[Any, Any, Any] | None = None  # not started yet
        self._inline: asyncio.Task[Any] | None = None  # the task running it inline
        self._outcome: tuple[bool, Any] | None = None  # (succeeded, result or exception) of an inline run
        self._reference: _Reference | None = None  # a call started by reference (see References)

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
        response._reference = None
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
        caller = sys._getframe(1)
        if _awaited_twice(caller.f_code, caller.f_lasti):
            warnings.warn(
                "`await (await handle.remote(...))` is Ray Serve's handle API before 2.7: the first await gave an "
                "ObjectRef. Await a DeploymentResponse once: `result = await handle.remote(...)`",
                DeprecationWarning,
                stacklevel=2,
            )
            return _at_once(self)  # the first await of the old API: the response itself, awaited next
        if self._reference is not None:
            return self._await_by_reference().__await__()
        return self._await(checked=True)

    # -- calls by reference (see References): fetched only when someone wants the value ------------
    def _want(self) -> None:
        reference = self._reference
        if reference is None:
            return
        if running_loop() is self._loop:
            reference.want()
        else:
            self._loop.call_soon_threadsafe(reference.want)

    async def _fetch(self) -> Any:
        assert self._reference is not None
        return await self._reference.references.fetch(await self._reference.wait())

    async def _await_by_reference(self) -> Any:
        self._want()
        value = await _Awaiting(self)
        if value is not _HANDED_OFF:
            return _not_a_generator(value)
        if running_loop() is self._loop:
            return await self._fetch()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._fetch(), self._loop))

    def _await(self, checked: bool) -> Generator[Any, None, Any]:
        """The call's value; ``checked``: refuse a generator (a call made without ``stream=True``)."""
        coro = self._coro
        if coro is None:
            future = self._future
            if isinstance(future, concurrent.futures.Future):
                result = yield from asyncio.wrap_future(future).__await__()
            else:
                result = yield from self._asyncio_future().__await__()
            return _not_a_generator(result) if checked else result
        self._coro = None  # run it here, in the awaiting task
        self._inline = asyncio.current_task(self._loop)
        try:
            result = yield from coro.__await__()
        except BaseException as exc:
            self._finish((False, exc))
            raise
        self._finish((True, result))
        return _not_a_generator(result) if checked else result

    def _finish(self, outcome: tuple[bool, Any]) -> None:
        self._outcome = outcome
        self._inline = None
        future = self._future
        if isinstance(future, asyncio.Future) and not future.done():  # someone asked for a future meanwhile
            _settle(future, outcome)

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the call is done (only from a thread other than the event loop's)."""
        value = self._result(timeout_s)
        if value is _HANDED_OFF:  # passed on by reference before: fetch it now
            return asyncio.run_coroutine_threadsafe(self._fetch(), self._loop).result(timeout_s)
        return _not_a_generator(value)

    def _result(self, timeout_s: float | None) -> Any:
        self._want()
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future.result(timeout_s)
        if self._outcome is not None:
            return _unwrap(self._outcome)
        if future is not None and future.done():
            return future.result()
        if running_loop() is self._loop:
            raise RuntimeError(
                "DeploymentResponse.result() should not be called from within an `asyncio` event loop: "
                "it would block the event loop the call runs on; use `await response`"
            )
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
        self._want()
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
        self._want()
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


_HANDED_OFF: Any = object()  # a call's result when it was passed on by reference before anyone awaited it


def _at_once(value: Any) -> Generator[Any, None, Any]:
    return value
    yield  # pragma: no cover - makes this a generator


_OLD_STYLE_AWAITS: dict[CodeType, dict[int, bool]] = {}
_STORES = ("STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL")


def _awaited_twice(code: CodeType, lasti: int) -> bool:
    """Whether the ``await`` at ``lasti`` of ``code`` awaits its result again (Ray Serve's pre-2.7 API):
    ``await (await h.remote())``, or ``ref = await h.remote()`` followed by ``await ref``. Cached per site."""
    sites = _OLD_STYLE_AWAITS.get(code)
    if sites is None:
        sites = _OLD_STYLE_AWAITS[code] = {}
    found = sites.get(lasti)
    if found is None:
        found = sites[lasti] = _scan_await(code, lasti)
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


class References(Protocol):
    """How a backend passes a call's result on without fetching it (Ray: the ObjectRef).

    ``submit`` starts a call and returns its reference at once; ``fetch`` gets its value.
    A :class:`DeploymentResponse` passed to another call of the same backend travels as
    its reference, which the backend resolves where the callee runs.
    """

    async def submit(self, deployment: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    async def fetch(self, reference: Any) -> Any: ...

    def forget(self, reference: Any) -> None:
        """The caller passed the reference on and will not fetch it (unless asked to later)."""


class _Reference:
    """The reference of a call started through :class:`References`, once it is known, and whether
    its value is wanted here (awaited) or it was handed off to another call first (all on one loop)."""

    __slots__ = ("_decision", "_future", "references")

    def __init__(self, references: References) -> None:
        self.references = references
        self._future: asyncio.Future[Any] | None = None
        self._decision: asyncio.Future[bool] | None = None

    def _decided(self) -> asyncio.Future[bool]:
        if self._decision is None:
            self._decision = asyncio.get_running_loop().create_future()
        return self._decision

    def want(self) -> None:
        if not self._decided().done():
            self._decided().set_result(True)

    def hand_off(self) -> None:
        if not self._decided().done():
            self._decided().set_result(False)

    async def wanted(self) -> bool:
        """True once someone awaits the value; False when it was passed on to another call first."""
        return await self._decided()

    def _get(self) -> asyncio.Future[Any]:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def set(self, reference: Any) -> None:
        if not self._get().done():
            self._get().set_result(reference)

    def fail(self, error: BaseException) -> None:
        future = self._get()
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: a call nobody chained on must not log "never retrieved"

    async def wait(self) -> Any:
        return await self._get()


class _Awaiting:
    """Awaits a response's own outcome (the plain path of ``__await__``), for the reference path and
    for a ``stream=True`` call (whose outcome is the generator)."""

    __slots__ = ("_response",)

    def __init__(self, response: DeploymentResponse) -> None:
        self._response = response

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response._await(checked=False)


class DeploymentHandle(metaclass=ABCMeta):  # noqa: B024 - an ABC for register(), no abstract methods
    """A handle to a deployment; attribute access picks a method. (An ABC only so the app
    handle ``serve.run`` returns can be registered as one: ``graphserve.handle`` does.)

    Arguments may contain :class:`DeploymentResponse` objects, at any depth of lists,
    tuples and dicts (Ray Serve's model composition: ``self.b.remote(self.a.remote(x))``):
    the call waits for them without blocking the event loop and the callee gets their
    values. On a backend with :class:`References` (Ray) a response travels as its
    reference and is resolved where the callee runs, so the caller never fetches it.
    """

    def __init__(
        self,
        deployment: str,
        call: CallFn,
        loop: asyncio.AbstractEventLoop,
        method: str = "__call__",
        references: References | None = None,
        stream: bool = False,
    ):
        self.deployment_name = deployment
        self._call = call
        self._loop = loop
        self._method = method
        self._references = references
        self._stream = stream

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Start the call now: a :class:`DeploymentResponse`, or with ``options(stream=True)`` a
        :class:`DeploymentResponseGenerator` of the method's items."""
        if self._references is None and not self._stream and not _may_hold_response(args, kwargs):
            return DeploymentResponse.start(self._call(self.deployment_name, self._method, args, kwargs), self._loop)
        if self._stream and self._references is not None:
            raise GraphError(
                f"handle.options(stream=True) to {self.deployment_name}.{self._method}: streaming is not supported "
                "on the Ray backend; run the app on the local backend, or return a list"
            )
        reference = _Reference(self._references) if self._references is not None else None
        response = DeploymentResponse.start(self._invoke(args, kwargs, reference), self._loop)
        response._reference = reference
        if self._stream:
            return DeploymentResponseGenerator(response)
        return response

    async def _invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any], reference: _Reference | None) -> Any:
        if _holds_response((args, kwargs)):
            args, kwargs = await resolve_responses((args, kwargs), self._references)
        if reference is None:
            return await self._call(self.deployment_name, self._method, args, kwargs)
        try:
            ref = await reference.references.submit(self.deployment_name, self._method, args, kwargs)
        except BaseException as exc:
            reference.fail(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        reference.set(ref)
        if not await reference.wanted():  # passed on to another call: fetched there, not here
            reference.references.forget(ref)
            return _HANDED_OFF
        return await reference.references.fetch(ref)

    def options(self, method_name: str | None = None, stream: bool | None = None, **_ignored: Any) -> DeploymentHandle:
        """A copy calling ``method_name`` and/or streaming (``stream=True``); other Ray options are ignored."""
        return DeploymentHandle(
            self.deployment_name,
            self._call,
            self._loop,
            method_name or self._method,
            self._references,
            self._stream if stream is None else bool(stream),
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self._call, self._loop, name, self._references, self._stream)

    def __repr__(self) -> str:
        return f"DeploymentHandle({self.deployment_name!r}, method={self._method!r})"


class DeploymentResponseGenerator:
    """The result of ``handle.options(stream=True).remote(...)``: the method's items as they come.

    ``async for item in response`` on any event loop, or ``for item in response`` from
    blocking code (not on the loop the app runs on). The method may be an async generator,
    a generator (each ``next()`` runs in a worker thread) or return any iterable.
    ``cancel()`` stops it and closes the method's generator.
    """

    __slots__ = ("_response", "_source")

    def __init__(self, response: DeploymentResponse) -> None:
        self._response = response
        self._source: Any = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return self._response._loop

    async def _next_here(self) -> Any:
        """The next item, on the app's loop."""
        if self._source is None:
            result = await _Awaiting(self._response)
            if not (hasattr(result, "__anext__") or hasattr(result, "__iter__")):
                raise GraphError(f"a stream=True call returned {type(result).__name__}, not a generator or iterable")
            self._source = result if hasattr(result, "__anext__") else iter(result)
        source = self._source
        if hasattr(source, "__anext__"):
            return await source.__anext__()
        item = await asyncio.get_running_loop().run_in_executor(None, next, source, _STREAM_END)
        if item is _STREAM_END:
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> DeploymentResponseGenerator:
        return self

    async def __anext__(self) -> Any:
        if running_loop() is self._loop:
            return await self._next_here()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._next_here(), self._loop))

    def __iter__(self) -> DeploymentResponseGenerator:
        return self

    def __next__(self) -> Any:
        if running_loop() is self._loop:
            raise RuntimeError(
                "DeploymentResponseGenerator.__next__ should not be called from within an `asyncio` event loop: "
                "`for` would block the event loop the call runs on; use `async for`"
            )
        try:
            return asyncio.run_coroutine_threadsafe(self._next_here(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self) -> None:
        """Stop the stream: cancel the call, close the method's generator."""
        self._response.cancel()
        source = self._source
        if source is not None:
            asyncio.run_coroutine_threadsafe(_close(source), self._loop)


_STREAM_END: Any = object()


async def _close(source: Any) -> None:
    if inspect.isasyncgen(source):
        await source.aclose()
    elif inspect.isgenerator(source):
        source.close()


def _may_hold_response(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call's arguments hold a DeploymentResponse (cheap for the usual plain arguments)."""
    for arg in args:
        kind = type(arg)
        if kind is DeploymentResponse or (kind in _CONTAINERS and _holds_response(arg)):
            return True
    return bool(kwargs) and _holds_response(kwargs)


_CONTAINERS = {list, tuple, dict}


_NESTING = (list, tuple, dict)


def _holds_response(value: Any) -> bool:
    if isinstance(value, DeploymentResponse):
        return True
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return False
    for kind in set(map(type, items)):  # the distinct types, found in C: plain data costs one pass
        if issubclass(kind, DeploymentResponse):
            return True
        if issubclass(kind, _NESTING):
            break
    else:
        return False
    return any(_holds_response(item) for item in items if isinstance(item, _NESTING))


async def resolve_responses(value: Any, references: References | None = None) -> Any:
    """``value`` with every :class:`DeploymentResponse` in it (at any depth of lists, tuples
    and dicts) replaced by its result, or by its reference when it was started through
    ``references`` (the backend resolves those where the callee runs). Waits for them all
    at once, without blocking the event loop."""
    found: list[DeploymentResponse] = []
    _collect(value, found)
    if not found:
        return value
    results = await asyncio.gather(*(_substitute(r, references) for r in found))
    by_id = {id(r): result for r, result in zip(found, results, strict=True)}
    return _rebuild(value, by_id)


def _collect(value: Any, found: list[DeploymentResponse]) -> None:
    if isinstance(value, DeploymentResponse):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)


async def _substitute(response: DeploymentResponse, references: References | None) -> Any:
    reference = response._reference
    if references is not None and reference is not None and reference.references is references:
        reference.hand_off()
        return await reference.wait()
    if response._loop is not running_loop():
        return await asyncio.to_thread(response.result)  # a call of another event loop
    return await response


def _rebuild(value: Any, by_id: dict[int, Any]) -> Any:
    if isinstance(value, DeploymentResponse):
        return by_id[id(value)]
    if isinstance(value, list):
        return [_rebuild(v, by_id) for v in value]
    if isinstance(value, tuple):
        items = [_rebuild(v, by_id) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # named tuples too
    if isinstance(value, dict):
        return {k: _rebuild(v, by_id) for k, v in value.items()}
    return value
