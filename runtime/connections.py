"""Connection-level limits of the HTTP server: slow, idle or numerous clients cannot hold it.

uvicorn parses HTTP with httptools; :class:`LimitedHTTPProtocol` (one per connection)
adds what uvicorn lacks:

* **header timeout**: from the moment a connection opens, or finishes a response, the
  next request's line and headers must be complete within ``header_timeout_s``; else
  the connection gets a 408 and is closed (closed silently when it sent nothing);
* **body timeout**: once a request's headers are in, its whole body must arrive within
  ``body_timeout_s``; else 408 and closed (the graph route waiting for it counts the 408).
  A body that came with the headers, as most do, arms no timer at all;
* **header size**: at most ``max_header_bytes`` of request line and headers (431, closed);
* **keep-alive**: an idle connection is closed after ``keep_alive_s``;
* **a cap on open connections** (``max_connections``, by default half the process's
  file-descriptor limit): a connection past the cap evicts an open connection that has
  no request in progress: one that never completed a request (slow headers, a client
  that only connects) and has had :data:`NEW_GRACE_S` to send it (a client sends its
  request right after connecting: the bytes follow the handshake), longest idle first.
  When there is none, the new connection is let in on probation, up to a quarter above
  the cap: it must send a whole request within :data:`NEW_GRACE_S` or it is answered
  503 and closed. With the probation places full too, the connection waiting longest
  without having completed a request is evicted, however young, else a keep-alive
  connection idle for :data:`IDLE_GRACE_S` (clients that have completed requests are
  kept longest); else the new one is answered 503 and closed at once. So clients that
  only hold connections, or keep opening them, cannot shut out the clients that send
  requests;
* uvicorn's own 400 for a request it cannot parse has a JSON body with ``error``.

The header and keep-alive limits are checked by one timer per server (every tenth of the
shorter limit, :func:`sweep_interval`), not a timer per request: a request costs this
module two attribute updates. Only a body still arriving after its headers, and a connection
on probation, arm a timer of their own.

Each request is offered the direct lane (``direct_lane.py``): a graph route takes its body
and writes its answer without ASGI's messages.

Answers given here reach no graph: they are counted as
``graphserve_requests_total{graph="",status}``; closes as
``graphserve_connections_closed_total{reason}``; ``graphserve_open_connections`` is a gauge.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from graphserve.errors import GraphError

from . import http_defaults
from .direct_lane import EXTENSION, CycleLane
from .http_defaults import BODY_TIMED_OUT
from .http_errors import error_body
from .metrics import NO_GRAPH, Metrics


def default_max_connections(nofile: int | None = None) -> int:
    """Half the soft file-descriptor limit (``nofile``, by default this process's), so the rest
    stays for the process itself (Ray's sockets, files, pipes); at least 16, at most 10,000."""
    if nofile is None:
        nofile, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, nofile // 2))


NEW_GRACE_S = 0.25  # a connection that has not completed a request is safe from eviction this long
IDLE_GRACE_S = 1.0  # an idle keep-alive connection is safe from eviction this long


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits above; ``max_connections=None`` takes :func:`default_max_connections`."""

    header_timeout_s: float = http_defaults.HEADER_TIMEOUT_S
    body_timeout_s: float = http_defaults.BODY_TIMEOUT_S
    keep_alive_s: float = http_defaults.KEEP_ALIVE_S
    max_connections: int | None = None
    max_header_bytes: int = http_defaults.MAX_HEADER_BYTES

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if not value > 0:
                raise GraphError(f"{name} must be > 0 seconds, got {value!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise GraphError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.max_header_bytes < 1024:
            raise GraphError(f"max_header_bytes must be >= 1024, got {self.max_header_bytes}")

    @property
    def connection_cap(self) -> int:
        return self.max_connections if self.max_connections is not None else default_max_connections()


class ConnectionRegistry:
    """The open connections of one server (in the order they opened), and the one timer that
    checks them: every :attr:`sweep_s` it closes the connections past their header or
    keep-alive limit, so a request costs no timer of its own."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics) -> None:
        self.limit = limits.connection_cap
        self.metrics = metrics
        self.sweep_s = sweep_interval(limits)
        self._open: dict[LimitedHTTPProtocol, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        metrics.describe("graphserve_open_connections", "HTTP connections open now")
        metrics.describe("graphserve_connections_closed_total", "Connections the server closed, by reason")
        metrics.gauge("graphserve_open_connections", lambda: {(): float(len(self._open))})

    @property
    def count(self) -> int:
        return len(self._open)

    def admit(self, connection: LimitedHTTPProtocol, now: float) -> str:
        """Count a new connection: ``"admitted"`` (at the cap, after evicting another),
        ``"probation"`` (none could be evicted) or ``"refused"`` (see the module docstring)."""
        verdict = "admitted"
        if len(self._open) >= self.limit:
            victim = self._longest_idle(now, NEW_GRACE_S, used=False)
            if victim is None and len(self._open) < self.limit + max(1, self.limit // 4):
                verdict = "probation"
            elif victim is None:  # on probation too: the longest waiting of those without a request goes
                victim = self._longest_idle(now, 0.0, used=False) or self._longest_idle(now, IDLE_GRACE_S, used=True)
                if victim is None:
                    return "refused"
            if victim is not None:
                victim.evict()
        self._open[connection] = None
        if self._timer is None:
            self._timer = connection.loop.call_later(self.sweep_s, self._sweep, connection.loop)
        return verdict

    def remove(self, connection: LimitedHTTPProtocol) -> None:
        self._open.pop(connection, None)

    def closed(self, reason: str, status: int | None = None) -> None:
        self.metrics.inc("graphserve_connections_closed_total", (("reason", reason),))
        if status is not None:
            self.metrics.inc("graphserve_requests_total", (("graph", NO_GRAPH), ("status", str(status))))

    def _longest_idle(self, now: float, grace_s: float, used: bool) -> LimitedHTTPProtocol | None:
        """The connection without a request in progress idle longest, at least ``grace_s``:
        of those that completed a request (``used``) or of those that never did."""
        found: LimitedHTTPProtocol | None = None
        for connection in self._open:
            if connection.busy or (connection.answered > 0) != used:
                continue
            if now - connection.idle_since >= grace_s and (found is None or connection.idle_since < found.idle_since):
                found = connection
        return found

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections past their limits; again in :attr:`sweep_s` while any is open."""
        self._timer = None
        now = loop.time()
        for connection in list(self._open):
            connection.check(now)
        if self._open:
            self._timer = loop.call_later(self.sweep_s, self._sweep, loop)


def sweep_interval(limits: ConnectionLimits) -> float:
    """How often the open connections are checked: a tenth of the shortest limit, between
    10 ms and 1 s (so a limit is enforced at most 10% late, at 1 s past it for long ones)."""
    return min(1.0, max(0.01, min(limits.header_timeout_s, limits.keep_alive_s) / 10))


class CoalescingWriter(asyncio.Transport):
    """The connection's transport as uvicorn's response cycles see it: a response's status line
    and headers are held until its body comes, and both go out in one write (one system call
    instead of two: on these machines a ``write`` is a third of a small request's CPU time).

    Only a head that declares a ``content-length`` is held: its client cannot use it before
    the body anyway. It goes out with the first body write, or when the response completes
    (a ``HEAD`` request's, which has no body), or when the connection closes. A streamed
    response's head (chunked) and ``100 Continue`` are written at once. No callback is
    scheduled per response (an extra one costs the event loop an extra turn)."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif isinstance(data, bytes) and data.startswith(b"HTTP/") and b"\r\ncontent-length: " in data:
            self._held = data  # a head with a length: its body comes next
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a head still held (a response without a body write: a ``HEAD`` request's)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class LimitedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring.

    Subclassed per server by :func:`protocol_class`, which sets ``limits`` and ``registry``.
    A request costs two attribute updates here: the registry's sweep reads the rest.
    """

    limits: ClassVar[ConnectionLimits]
    registry: ClassVar[ConnectionRegistry]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn logs access when its logger has a handler anywhere (a test's log capture is
        # one); here only when the server's access_log option asks for it
        self.access_log = self.access_log and bool(self.config.access_log)
        self._timer: asyncio.TimerHandle | None = None  # the body timer, or a probation's
        self._header_bytes = 0
        self.answered = 0  # requests answered on this connection
        self.idle_since = self.loop.time()  # since it opened, or answered its last request

    @property
    def busy(self) -> bool:
        """A request is in progress (its headers arrived and its response is not complete)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = CoalescingWriter(transport)
        verdict = self.registry.admit(self, self.idle_since)
        if verdict == "refused":
            self._refuse()
        elif verdict == "probation":
            self._timer = self.loop.call_later(NEW_GRACE_S, self._probation_over)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # the next request's line and headers
            self._header_bytes += len(data)
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # its headers are still incomplete
            if self._header_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
                text = f"the request line and headers are larger than {self.limits.max_header_bytes} bytes"
                self._answer_and_close(431, text, "header_too_large")
        elif cycle.more_body and self._timer is None and not cycle.response_started:
            self._timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout, cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.registry.remove(self)
        super().connection_lost(exc)

    # -- uvicorn hooks ------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        existing = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not existing:  # a new request (not an upgrade)
            cycle.transport = self._writer  # its ASGI messages go out through the coalescing writer
            if not self.access_log:  # (uvicorn's send writes the access log)
                self.scope["extensions"] = {EXTENSION: {"lane": CycleLane(cycle, self.transport)}}

    def on_response_complete(self) -> None:
        """uvicorn's, without its keep-alive timer per request (the registry's sweep closes
        idle connections): count the request, resume reading, start a pipelined request."""
        self._writer.flush()
        self.server_state.total_requests += 1
        self.answered += 1
        self._header_bytes = 0
        self.idle_since = self.loop.time()
        if self._timer is not None:
            self._cancel_timer()
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(400, f"invalid HTTP request: {msg}", "bad_request")

    # -- limits -------------------------------------------------------------------------
    def check(self, now: float) -> None:
        """The sweep's check: an idle connection past the keep-alive limit is closed, one whose
        next request's headers are not complete after ``header_timeout_s`` gets a 408 (closed
        silently when it sent nothing)."""
        if self.busy or self.transport.is_closing():
            return
        idle_s = now - self.idle_since
        if self._header_bytes:
            if idle_s >= self.limits.header_timeout_s:
                text = f"the request headers did not arrive within {self.limits.header_timeout_s:g}s"
                self._answer_and_close(408, text, "header_timeout")
        elif idle_s >= (self.limits.keep_alive_s if self.answered else self.limits.header_timeout_s):
            self._close("keep_alive" if self.answered else "idle")

    def evict(self) -> None:
        """Closed to make room for a new connection (it had no request in progress)."""
        self._close("evicted")

    def _close(self, reason: str) -> None:
        self._cancel_timer()
        self.registry.remove(self)
        self.registry.closed(reason)
        self.transport.close()

    def _body_timeout(self, cycle: Any) -> None:
        """The body did not arrive in time: 408 and closed; the graph route that waits for it
        learns why from the scope's state (and counts the 408)."""
        self._timer = None
        if cycle is not self.cycle or not cycle.more_body or cycle.response_started or self.transport.is_closing():
            return
        cycle.scope["state"][BODY_TIMED_OUT] = self.limits.body_timeout_s
        text = f"the request body did not arrive within {self.limits.body_timeout_s:g}s"
        self._answer_and_close(408, text, "body_timeout", counted=False)

    def _probation_over(self) -> None:
        """A connection let in past the cap had :data:`NEW_GRACE_S` to send a request: if it
        did not and the server is still past the cap, 503 and closed; else it stays."""
        self._timer = None
        if self.busy or self.answered or self.transport.is_closing():
            return
        if self.registry.count > self.registry.limit:
            self._refuse()

    def _refuse(self) -> None:
        self._answer_and_close(503, "the server has too many open connections; retry later", "over_limit")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer_and_close(self, status: int, message: str, reason: str, counted: bool = True) -> None:
        """Write the answer and close; ``counted``: as a request no graph saw (else its route counts it)."""
        self._cancel_timer()
        self.registry.remove(self)
        self.registry.closed(reason, status if counted else None)
        body = error_body(status, message)
        headers = [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
        ]
        if status == 503:
            headers.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([STATUS_LINE[status], *headers, b"\r\n", body]))
        self.transport.close()


def protocol_class(limits: ConnectionLimits, metrics: Metrics) -> type[LimitedHTTPProtocol]:
    """A :class:`LimitedHTTPProtocol` for one server: its limits and its connection registry."""
    registry = ConnectionRegistry(limits, metrics)
    attributes = {"limits": limits, "registry": registry}
    return type("GraphserveHTTPProtocol", (LimitedHTTPProtocol,), attributes)
