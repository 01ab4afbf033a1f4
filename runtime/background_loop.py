"""Event loops: one in a background thread for blocking callers (``gs.run(app).call(x)``),
and :func:`running_loop`, the loop running in this thread if any."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (where ``asyncio.get_running_loop`` raises).

    asyncio's own ``_get_running_loop`` (exported by ``asyncio.events``, in C): no exception
    to catch, which matters on the hot path of handle calls."""
    return asyncio.events._get_running_loop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed, else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        return asyncio.new_event_loop()


class BackgroundLoop:
    """Runs an event loop in a daemon thread until :meth:`close`."""

    def __init__(self, name: str = "graphserve-loop") -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
