"""Helpers for tests that talk to a real graphserve HTTP server.

    with running_server(app) as url:             # uvicorn on 127.0.0.1, a free port
        httpx.post(url + "/my_graph", json={...})

``apps`` is anything ``gs.serve`` takes (an App, a Plan, "module:app", or a list);
keyword arguments go to ``gs.serve`` (``token=``, ``max_body_bytes=``, ...). The
server is shut down (in-flight requests finish, graphs stop) when the block ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from graphserve.serving import serve


@contextmanager
def running_server(apps: Any, **serve_kwargs: Any) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``) of a running server for ``apps``."""
    serve_kwargs.setdefault("host", "127.0.0.1")
    serve_kwargs.setdefault("port", 0)
    serve_kwargs.setdefault("startup_timeout_s", 120.0)
    server = serve(apps, blocking=False, **serve_kwargs)
    try:
        yield server.url
    finally:
        server.shutdown(timeout=60.0)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    """Until ``condition()`` holds (state of an in-process server, read without a connection), bounded."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
