"""The direct lane: a graph route's request read and answered without ASGI's messages.

graphserve's HTTP protocol (``connections.py``) offers each request it parses a
:class:`CycleLane` among the ASGI scope's extensions (:data:`EXTENSION`). A graph route that
finds it (:func:`direct_lane`) takes the body the parser already holds instead of a
``receive`` message, and writes its whole answer (status line, headers, body) in one
transport write instead of two ``send`` messages, each of which uvicorn would check header
by header. The route builds its headers itself; a deployment's own ``Response`` headers are
checked when the output is encoded (``graph_route.encode_result``).

The lane serves only the common case and says so; the route then takes the ASGI path,
which stays complete:

* :meth:`DirectLane.take_body` gives None while the body is still arriving, the client
  waits for ``100 Continue``, or the client is gone (``receive`` handles each);
* a stream goes through ``send`` (chunk by chunk, with flow control);
* no lane is offered when the server's access log is on (``send`` writes it), nor by any
  other server: the same ingress under another ASGI server answers through ``send`` alone.

What the lane writes is what uvicorn's ``send`` would: the server's default headers (the
``date``), ``connection: close`` when the connection will not be kept, no body for ``HEAD``;
then the request counts as complete (keep-alive, the next pipelined request) as after
uvicorn's last body message. An answer is one write, as uvicorn's body message is; flow
control matters for streams, which keep the ASGI path.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Protocol

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, RequestResponseCycle

#: The lane's extension in ``scope["extensions"]`` (ASGI's place for what a server offers beyond
#: the spec): ``{"lane": <a DirectLane>}``.
EXTENSION = "graphserve.direct"

Headers = list[tuple[bytes, bytes]]


class DirectLane(Protocol):
    """What a graph route asks of the lane."""

    def take_body(self) -> bytes | None:
        """The whole request body, when it is here and nothing else is owed; else None."""

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Write the whole answer (``headers`` lower case, valid, with the content-length);
        nothing when the client is gone (as uvicorn's ``send``)."""


class InvalidHeaderError(ValueError):
    """A header HTTP cannot carry (in a deployment's own Response)."""


def check_headers(headers: Headers, source: str) -> None:
    """Raise InvalidHeaderError for a header name or value HTTP cannot carry, by uvicorn's own
    rules (its ``send`` checks every header; the lane writes what it is given)."""
    for name, value in headers:
        if not name or HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise InvalidHeaderError(f"the {source}'s header {name!r}: {value!r} is not valid HTTP")


def direct_lane(scope: Scope) -> DirectLane | None:
    """The lane the server offers for this request, if any."""
    extensions = scope.get("extensions")
    offered = extensions.get(EXTENSION) if extensions is not None else None
    if offered is None:
        return None
    lane: DirectLane = offered["lane"]
    return lane


class CycleLane:
    """The lane over one uvicorn request-response cycle (one request) and its connection's transport.

    It holds its cycle weakly: the cycle's scope holds the lane, and a strong reference back
    would make every request a reference cycle, left for the garbage collector to find."""

    __slots__ = ("_cycle", "_transport")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport) -> None:
        self._cycle = weakref.ref(cycle)
        self._transport = transport

    def take_body(self) -> bytes | None:
        cycle = self._cycle()
        if cycle is None or cycle.more_body or cycle.waiting_for_100_continue:
            return None
        if cycle.disconnected or cycle.response_complete:
            return None
        body = bytes(cycle.body)
        cycle.body = bytearray()
        cycle.message_event.clear()  # as receive() leaves it: the next wait is for the disconnect
        cycle.flow.resume_reading()  # a large body paused reading: a disconnect must still be seen
        return body

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        cycle = self._cycle()
        transport = self._transport
        if cycle is None or cycle.disconnected or cycle.response_started or transport.is_closing():
            return
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        parts: list[Any] = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            parts += (name, b": ", value, b"\r\n")
        says_close = False
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                cycle.keep_alive = False
                says_close = True
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive and not says_close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if cycle.scope["method"] != "HEAD":
            parts.append(body)
        transport.write(b"".join(parts))
        cycle.response_complete = True
        cycle.message_event.set()  # a receive() still waiting (the disconnect watch) returns
        if not cycle.keep_alive:
            transport.close()
        cycle.on_response()
