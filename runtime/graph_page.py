"""The live graph page: ``GET /-/`` and the routes it reads.

- ``/-/``: the page (``runtime/page/index.html``): every graph drawn from its plan, live
  figures on every node, node details, a "Try it" form and the path the request took;
- ``/-/static/<file>``: its stylesheet and script (package data: no CDN, no build step);
- ``/-/stats``: the figures as JSON (:class:`~graphserve.runtime.live_stats.LiveStats`);
- ``/-/events``: the same figures pushed as server-sent events (``event: stats``) every
  ``interval_s``.

The drawings come from ``/-/graphs/<name>.svg?figures=1`` (the ingress): graphviz SVG
with stable node ids and room in each deployment node for the figures. The routes
here are open like ``/-/metrics``; the page sends the bearer token (asked for on a 401)
only with the graph requests it makes.

Event streams end when the server begins to shut down (:meth:`GraphPage.close`), so an
open page never holds up a graceful shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .encoding import dumps
from .http_errors import error_body
from .live_stats import GraphView, LiveStats

_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}
_NO_CACHE = {"Cache-Control": "no-cache"}


def asset(name: str) -> bytes:
    """One of the page's files, read from the package."""
    return resources.files("graphserve.runtime").joinpath("page", name).read_bytes()


class GraphPage:
    """The page's routes over ``stats`` and the graphs ``views()`` describes."""

    def __init__(self, stats: LiveStats, views: Callable[[], list[GraphView]], interval_s: float = 0.5) -> None:
        self.stats = stats
        self.views = views
        self.interval_s = interval_s
        self._assets: dict[str, bytes] = {}
        self._closing: asyncio.Event | None = None
        self._closed = False

    def routes(self) -> list[Route]:
        return [
            Route("/-/", self._index, methods=["GET"]),
            Route("/-/static/{file}", self._static, methods=["GET"]),
            Route("/-/stats", self._stats, methods=["GET"]),
            Route("/-/events", self._events, methods=["GET"]),
        ]

    def close(self) -> None:
        """End every event stream (the server is shutting down)."""
        self._closed = True
        if self._closing is not None:
            self._closing.set()

    def _file(self, name: str) -> bytes:
        data = self._assets.get(name)
        if data is None:
            data = self._assets[name] = asset(name)
        return data

    async def _index(self, request: Request) -> Response:
        return Response(self._file("index.html"), media_type=_ASSETS["index.html"], headers=_NO_CACHE)

    async def _static(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in _ASSETS or name == "index.html":
            return Response(error_body(404, f"no page file {name!r}"), status_code=404, media_type="application/json")
        return Response(self._file(name), media_type=_ASSETS[name], headers=_NO_CACHE)

    def snapshot(self) -> bytes:
        return dumps(self.stats.payload(self.views()))

    async def _stats(self, request: Request) -> Response:
        return Response(self.snapshot(), media_type="application/json", headers=_NO_CACHE)

    async def _events(self, request: Request) -> Response:
        if self._closing is None:
            self._closing = asyncio.Event()
            if self._closed:
                self._closing.set()
        return StreamingResponse(
            self._stream(self._closing),
            media_type="text/event-stream",
            headers={**_NO_CACHE, "X-Accel-Buffering": "no"},
        )

    async def _stream(self, closing: asyncio.Event) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        while not closing.is_set():
            yield b"event: stats\ndata: " + self.snapshot() + b"\n\n"
            try:
                await asyncio.wait_for(closing.wait(), self.interval_s)
            except TimeoutError:
                pass
