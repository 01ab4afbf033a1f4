"""One graph served at one path: the request path of a graph route, step by step.

:meth:`GraphRoute.serve` answers one HTTP request with plain ASGI (no Starlette
objects, no middleware) in these steps, each a method or function below::

    read_head      the headers it needs, in one pass (request id, auth, length, timeout, trace)
    admit          method, bearer token, graph ready, declared length
    deadline       the graph's timeout_s, shortened by X-Request-Timeout-S
    read_body      the body, at most max_body_bytes (a client that leaves raises ClientLeft;
                   one whose body did not arrive within the server's body_timeout_s got 408)
    admit_run      the in-flight bound (max_in_flight): checked once the body is here
    request_value  the body as JSON, or a Starlette Request for a graph that takes it
    execute        await runtime.execute(request, deadline)
    encode         the output as JSON (or as it is: a Response, bytes, text), or a Stream
    stream         (a StreamingResponse, generator or async generator) chunks as they come
    (finish_trace  the trace beside the output, when X-Graphserve-Trace asked for it)

A step that cannot go on raises :class:`Refused` carrying the :class:`Answer` to send
(the statuses are listed in ``http_errors``); :class:`ClientLeft` means there is nobody
to answer (counted as status 499 in the metrics, as nginx logs it). Every request is
counted in ``graphserve_requests_total`` with the status it got, a bug's 500 included.

Admission comes after the body: a client that sends its body slowly holds a connection
(bounded by the server's connection cap and its ``body_timeout_s``), never one of the
graph's ``max_in_flight`` places, so slow uploads cannot starve the requests that have
arrived. Bodies being read are shown as ``graphserve_reading_requests``.

to answer (counted as status 499 in the metrics, as nginx logs it). A failure on the
server's side (500, 504) is kept for the live page with its request id (``observers``).

A request with ``X-Graphserve-Trace: 1`` runs with a :class:`~graphserve.runtime.tracing.Trace`
and gets it back: ``{"output": ..., "trace": ...}`` for a JSON output, ``{"error": ...,
"trace": ...}`` for an error, else (an output sent as it is) in the ``X-Graphserve-Trace``
response header. With OpenTelemetry configured every request is traced and exported.
Untraced requests take none of these branches beyond one ``is None`` check.

A client that disconnects cancels its request's work: while the graph runs past
``DISCONNECT_CHECK_S`` a watcher waits for the disconnect and cancels the request, and a
stream stops (its generator closed) as soon as its client is gone. Streams go out with
chunked transfer encoding, each chunk as it is produced: ``str`` as UTF-8 text, ``bytes``
as they are, anything else as a JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import itertools
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from graphserve.errors import NodeExecutionError, RequestError

from .direct_lane import DirectLane, InvalidHeaderError, check_headers, direct_lane
from .drift import DriftMonitor
from .encoding import JSONDecodeError, JSONLimitError, dumps, loads
from .http_defaults import BODY_TIMED_OUT
from .http_errors import Answer, Headers, error_answer, error_message, request_error, retry_after
from .live_stats import LiveStats
from .metrics import Labels, Metrics
from .otel import OtelExporter
from .running_graph import GraphRuntime
from .tracing import Trace

logger = logging.getLogger("graphserve.ingress")

#: Status counted for a request whose client disconnected before it could be answered.
CLIENT_LEFT = 499
METHODS = ("POST", "GET")  # GET with a body too, as Ray Serve's proxy and its docs do
_REQUEST_ID = re.compile(rb"[!-~]{1,200}")
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_CLOSE = (b"connection", b"close")
_TRACE_HEADER = b"x-graphserve-trace"
#: How long a request runs before a watcher starts waiting for its client to disconnect (then
#: cancelling its work): short requests cost nothing extra.
DISCONNECT_CHECK_S = 0.05


class Refused(Exception):
    """A step of the request path answered instead of going on."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class ClientLeft(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


class RouteLimits:
    """What every graph route of one server enforces (the ingress's options)."""

    __slots__ = ("default_timeout_s", "max_body_bytes", "max_in_flight", "token")

    def __init__(
        self, token: bytes | None, max_body_bytes: int, max_in_flight: int | None, default_timeout_s: float | None
    ) -> None:
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.default_timeout_s = default_timeout_s


class RouteObservers:
    """What watches every graph route of one server: the live page's figures and error log,
    and the OpenTelemetry exporter (set at startup when a tracer provider is configured)."""

    __slots__ = ("live", "otel")

    def __init__(self, live: LiveStats) -> None:
        self.live = live
        self.otel: OtelExporter | None = None


class RequestHead:
    """The headers a graph route reads, taken from the ASGI scope in one pass."""

    __slots__ = ("auth", "length", "request_id", "timeout", "trace")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        request_id = auth = length = timeout = trace = None
        for name, value in headers:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                auth = value
            elif name == b"x-request-timeout-s":
                timeout = value
            elif name == _TRACE_HEADER:
                trace = value
        self.request_id = valid_request_id(request_id)
        self.auth: bytes | None = auth
        self.length: bytes | None = length
        self.timeout: bytes | None = timeout
        self.trace: bytes | None = trace if trace is not None and trace.strip() not in (b"", b"0") else None


def valid_request_id(sent: bytes | None) -> bytes:
    """The caller's X-Request-Id when it is valid (1-200 printable ASCII characters), else a new one."""
    if sent is not None and _REQUEST_ID.fullmatch(sent) is not None:
        return sent
    return b"%s%012x" % (_ID_PREFIX[0], next(_ID_COUNTER) & 0xFFFFFFFFFFFF)


def _new_id_prefix() -> None:
    """New request ids: 12 random hex digits for this process, then a counter (unique without
    a system call per request, which ``os.urandom`` was: a tenth of a no-op request's time)."""
    _ID_PREFIX[0] = os.urandom(6).hex().encode()


_ID_PREFIX = [b""]
_ID_COUNTER = itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker must not repeat its parent's ids


class GraphRoute:
    """One graph at one path: its admission counter, metric labels and request path."""

    __slots__ = (
        "_watchlist",
        "drift",
        "duration",
        "in_flight",
        "labels",
        "limits",
        "metrics",
        "name",
        "observers",
        "path",
        "plan",
        "reading",
        "runtime",
        "status_labels",
        "timeout_s",
    )

    def __init__(
        self, runtime: GraphRuntime, path: str, limits: RouteLimits, metrics: Metrics, observers: RouteObservers
    ) -> None:
        self.runtime = runtime
        self.observers = observers
        self.plan = runtime.plan
        self.name = runtime.plan.name
        self.path = path
        self.limits = limits
        self.metrics = metrics
        self.timeout_s = runtime.plan.timeout_s if runtime.plan.timeout_s is not None else limits.default_timeout_s
        self.in_flight = 0
        self.reading = 0  # requests whose body is still arriving
        self.labels: Labels = (("graph", self.name),)
        self.duration = metrics.series("graphserve_request_duration_seconds", self.labels)  # observed per request
        self.status_labels: dict[int, Labels] = {}
        self._watchlist: _Watchlist | None = None  # made on the serving loop by the first request
        self.drift: DriftMonitor | None = None  # set by the ingress for a graph planned for an SLO

    # -- the request path ----------------------------------------------------------------
    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (see the module docstring) and count it."""
        start = time.perf_counter()
        head = RequestHead(scope["headers"])
        lane = direct_lane(scope)
        if head.trace is None and self.observers.otel is None:
            try:
                answer = await self.answer(scope, receive, head, lane)
            except ClientLeft:
                status = CLIENT_LEFT
            else:
                if isinstance(answer, Stream):
                    status = await self.stream(answer, receive, send, head.request_id)
                elif lane is not None:
                    status = respond(lane, answer, head.request_id)
                else:
                    status = await self._send(send, answer, head.request_id)
        else:
            status = await self.serve_traced(scope, receive, send, head, lane)
        self.metrics.inc("graphserve_requests_total", self.status(status))
        now = time.perf_counter()
        self.duration.observe(now - start)
        if self.drift is not None:
            self.drift.request(now, now - start)

    async def _send(self, send: Send, answer: Answer, request_id: bytes) -> int:
        """Send ``answer``; its status, or 499 when the client is gone by then."""
        try:
            await send_answer(send, answer, request_id)
        except OSError:  # the connection closed under us
            return CLIENT_LEFT
        return answer.status

    async def answer(
        self,
        scope: Scope,
        receive: Receive,
        head: RequestHead,
        lane: DirectLane | None,
        trace: Trace | None = None,
    ) -> Answer | Stream:
        """What to send for one request; raises ClientLeft when nobody is left to answer."""
        try:
            self.admit(scope["method"], head)
            deadline = self.deadline(head.timeout)
            max_bytes = self.limits.max_body_bytes
            body = lane.take_body() if lane is not None else None  # usually here already
            if body is None:
                self.reading += 1
                try:
                    body = await read_body(scope, receive, max_bytes)
                finally:
                    self.reading -= 1
            elif len(body) > max_bytes:
                raise Refused(too_large(max_bytes))
            self.admit_run()
            self.in_flight += 1
            try:
                watch = _DisconnectWatch(receive, self.watchlist())
                try:
                    request = self.request_value(scope, body)
                    result = await self.execute(request, deadline, head.request_id, trace, watch)
                finally:
                    watch.stop()
                return self.encode(result, head.request_id)
            finally:
                self.in_flight -= 1
        except Refused as refused:
            return refused.answer
        except ClientLeft:
            raise
        except Exception as exc:  # a bug of ours: still a JSON 500, logged, and counted
            self.log_failure(head.request_id, exc)
            return error_answer(500, f"graph {self.name!r} failed: {type(exc).__name__}", [_CLOSE], node=None)

    async def stream(self, stream: Stream, receive: Receive, send: Send, request_id: bytes) -> int:
        """Send ``stream`` chunk by chunk as they come; stop (and close it) when the client leaves."""
        headers = [*stream.headers, (b"x-request-id", request_id)]
        await send({"type": "http.response.start", "status": stream.status, "headers": headers})
        left = asyncio.ensure_future(_disconnected(receive))
        chunks = stream.chunks.__aiter__()
        try:
            while True:
                following = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait((following, left), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():  # the client is gone: stop the work that feeds it
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    return CLIENT_LEFT
                try:
                    chunk = following.result()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the status is sent: end the response unfinished, so the client sees it
                    self.failed(request_id, 500, exc)
                    return 500
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return stream.status
        finally:
            left.cancel()
            await stream.close()

    def admit(self, method: str, head: RequestHead) -> None:
        """Refuse what this route must not run: a wrong method, a missing token, a graph
        not ready, a body declared too large."""
        limits = self.limits
        if method not in METHODS and not self.plan.http_request:
            text = f"graph {self.name!r} answers POST (or GET) with a JSON body"
            raise Refused(error_answer(405, text, [(b"allow", b"GET, POST")]))
        if limits.token is not None and not _authorized(head.auth, limits.token):
            raise Refused(error_answer(401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]))
        if not self.runtime.ready:
            state = "stopping" if self.runtime.stopping else "starting"
            raise Refused(error_answer(503, f"graph {self.name!r} is {state}", retry_after(1)))
        if head.length is not None:
            try:
                declared = int(head.length)
            except ValueError:
                raise Refused(error_answer(400, "bad Content-Length header", [_CLOSE])) from None
            if declared > limits.max_body_bytes:
                raise Refused(too_large(limits.max_body_bytes))

    def admit_run(self) -> None:
        """The in-flight bound, once the body is here (a slow upload never holds a place)."""
        limit = self.limits.max_in_flight
        if limit is not None and self.in_flight >= limit:
            text = f"graph {self.name!r} is overloaded: {self.in_flight} requests in flight"
            raise Refused(error_answer(503, text, retry_after(1)))

    def deadline(self, header: bytes | None) -> float | None:
        """The request's deadline in seconds: the graph's, shortened by X-Request-Timeout-S."""
        deadline = self.timeout_s
        if header is None:
            return deadline
        try:
            requested = float(header)
        except ValueError:
            requested = math.nan
        if not (requested > 0 and math.isfinite(requested)):
            raise Refused(error_answer(400, "X-Request-Timeout-S must be a number of seconds > 0"))
        return requested if deadline is None else min(deadline, requested)

    def request_value(self, scope: Scope, body: bytes) -> Any:
        """What the graph is called with: the parsed JSON body (None when empty), or for a
        graph whose ingress takes the request itself (Ray Serve style), a Starlette Request."""
        if self.plan.http_request:
            return starlette_request(scope, body)
        if not body:
            return None
        try:
            return loads(body)
        except JSONLimitError as exc:
            raise Refused(error_answer(422, f"the body is not accepted: {exc}")) from None
        except JSONDecodeError as exc:
            raise Refused(error_answer(400, f"malformed JSON: {exc}")) from None

    async def execute(
        self,
        request: Any,
        deadline: float | None,
        request_id: bytes,
        trace: Trace | None = None,
        watch: _DisconnectWatch | None = None,
    ) -> Any:
        """The graph's output; a failure becomes its answer (logged when it is the server's fault)."""
        try:
            if trace is None:
                return await self.runtime.execute(request, deadline)
            return await self.execute_traced(request, deadline, trace)
        except RequestError as exc:
            answer = request_error(exc)
            if answer.status >= 500 and answer.status != 503:
                self.failed(request_id, answer.status, exc)
            raise Refused(answer) from None
        except Exception as exc:  # a bug, not the request's fault: logged with its traceback, answered 500
            self.failed(request_id, 500, exc)
            raise Refused(error_answer(500, f"graph {self.name!r} failed: {type(exc).__name__}", node=None)) from None
        except asyncio.CancelledError:
            if watch is not None and watch.left:  # the client disconnected: its work was cancelled
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                raise ClientLeft from None
            # else only the server cancels a request task: its graceful-shutdown bound ran out
            logger.warning("request %s to graph %r cancelled: the server is shutting down", request_id, self.name)
            text = f"graph {self.name!r}: the server is shutting down and cancelled this request"
            raise Refused(error_answer(503, text, [*retry_after(1), _CLOSE])) from None

    def encode(self, result: Any, request_id: bytes) -> Answer | Stream:
        """The answer for the graph's output; an output JSON cannot hold is a 500 naming the output node."""
        stream = as_stream(result)
        if stream is not None:
            return stream
        try:
            return encode_result(result, text_as_text=self.plan.raw_ingress)
        except TypeError as exc:
            self.failed(request_id, 500, exc)
            text = f"the output of graph {self.name!r} cannot be sent as JSON: {exc}"
            return error_answer(500, text, node=self.plan.output)
        except InvalidHeaderError as exc:
            self.failed(request_id, 500, exc)
            return error_answer(500, f"the output of graph {self.name!r} cannot be sent: {exc}", node=self.plan.output)

    # -- traced requests (X-Graphserve-Trace, OpenTelemetry) ----------------------------------
    async def serve_traced(
        self, scope: Scope, receive: Receive, send: Send, head: RequestHead, lane: DirectLane | None
    ) -> int:
        """:meth:`serve`'s steps with a Trace (and the request's OpenTelemetry span); the status."""
        otel = self.observers.otel
        trace = Trace(self.plan, head.request_id.decode(), otel, self.runtime.backend_name)
        request_span = None
        if otel is not None:
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            request_span = otel.start_request(trace, headers, self.path)
        status = CLIENT_LEFT
        try:
            answer = await self.answer(scope, receive, head, lane, trace)
            if isinstance(answer, Stream):
                status = await self.stream(answer, receive, send, head.request_id)
            else:
                if head.trace is not None and trace.started:
                    answer = with_trace(answer, trace)
                if lane is not None:
                    respond(lane, answer, head.request_id)
                else:
                    await send_answer(send, answer, head.request_id)
                status = answer.status
        except ClientLeft:
            pass
        finally:
            if request_span is not None and otel is not None:
                otel.end_request(*request_span, status)
        return status

    async def execute_traced(self, request: Any, deadline: float | None, trace: Trace) -> Any:
        """Execute with ``trace`` recording; the actors' records are fetched before answering."""
        trace.started = True
        try:
            return await self.runtime.execute(request, deadline, trace)
        except NodeExecutionError as exc:
            trace.failed(exc.node, exc)
            raise
        except BaseException as exc:
            trace.status = "error"
            trace.error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            await trace.settle()

    # -- helpers -------------------------------------------------------------------------
    def watchlist(self) -> _Watchlist:
        """The disconnect watchlist of the loop serving this route: the loop its graph runs on
        (``asyncio.get_running_loop()`` costs a ``getpid`` system call on Python 3.11, per call)."""
        found = self._watchlist
        loop = self.runtime.loop or asyncio.get_running_loop()
        if found is None or found.loop is not loop:
            found = self._watchlist = _Watchlist(loop)
        return found

    def status(self, status: int) -> Labels:
        """The metric labels for ``status`` (made once per status)."""
        labels = self.status_labels.get(status)
        if labels is None:
            labels = self.status_labels[status] = (("graph", self.name), ("status", str(status)))
        return labels

    def failed(self, request_id: bytes, status: int, exc: BaseException) -> None:
        """A request failed on the server's side: log it (past deadlines are expected) and keep
        it, with its request id, for the live page."""
        if status != 504:
            self.log_failure(request_id, exc)
        node = exc.node if isinstance(exc, NodeExecutionError) else None
        deployment = exc.deployment if isinstance(exc, NodeExecutionError) else None
        message = error_message(exc)  # what the answer said: a 500's text stays in the log
        self.observers.live.record_error(self.plan, request_id.decode(), status, message, node, deployment)

    def log_failure(self, request_id: bytes, exc: BaseException) -> None:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        logger.error(
            "request %s to graph %r failed: %s",
            request_id.decode(),
            self.name,
            exc,
            exc_info=(type(cause), cause, cause.__traceback__),
        )


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body: Refused with 413 above ``max_bytes``; ClientLeft on a
    disconnect, or Refused with 408 when the server cut a body that did not arrive in time
    (``connections.py`` answered it; the 408 is what the metrics count)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise Refused(too_large(max_bytes))
            chunks.append(chunk)
        body = b"".join(chunks)
    if message["type"] == "http.disconnect":
        timed_out = scope.get("state", {}).get(BODY_TIMED_OUT)
        if timed_out is not None:
            raise Refused(error_answer(408, f"the request body did not arrive within {timed_out:g}s", [_CLOSE]))
        raise ClientLeft
    if len(body) > max_bytes:
        raise Refused(too_large(max_bytes))
    return body


async def send_answer(send: Send, answer: Answer, request_id: bytes) -> None:
    """Send ``answer`` through ASGI's messages."""
    headers = answer_headers(answer, request_id)
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def respond(lane: DirectLane, answer: Answer, request_id: bytes) -> int:
    """Write ``answer`` through the direct lane (nothing, when the client is gone); its status."""
    lane.respond(answer.status, answer_headers(answer, request_id), answer.body)
    return answer.status


def answer_headers(answer: Answer, request_id: bytes) -> Headers:
    """``answer``'s headers with Content-Length, X-Request-Id and (unless it has one) a JSON Content-Type."""
    extra = answer.headers
    headers = [(b"content-length", str(len(answer.body)).encode()), (b"x-request-id", request_id)]
    if extra:
        headers += extra
        if not any(name == b"content-type" for name, _ in extra):
            headers.append((b"content-type", _JSON))
    else:
        headers.append((b"content-type", _JSON))
    return headers


def encode_result(result: Any, text_as_text: bool) -> Answer:
    """The answer for a graph's output: a Starlette Response as it is, bytes as they are, a
    str as text when ``text_as_text`` (apps without an InputNode: Ray Serve's rule),
    everything else as JSON. Raises TypeError for what cannot be sent as JSON, InvalidHeaderError
    for a Response header HTTP cannot carry."""
    if isinstance(result, Response):
        body = getattr(result, "body", None)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"{type(result).__name__} (a streaming response) is not supported as a graph output")
        headers = [(name, value) for name, value in result.raw_headers if name != b"content-length"]
        check_headers(headers, type(result).__name__)
        return Answer(result.status_code, bytes(body), headers)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Answer(200, bytes(result), [(b"content-type", b"application/octet-stream")])
    if text_as_text and isinstance(result, str):
        return Answer(200, result.encode(), [(b"content-type", _TEXT)])
    return Answer(200, dumps(result))


def with_trace(answer: Answer, trace: Trace) -> Answer:
    """``answer`` with ``trace``: beside a JSON output (``{"output": ..., "trace": ...}``) or
    error (``{"error": ..., "trace": ...}``); for an output sent as it is, in the
    ``X-Graphserve-Trace`` header."""
    status, body, headers = answer
    data = dumps(trace.to_json())
    if headers is not None and any(name == b"content-type" for name, _ in headers):
        return Answer(status, body, [*headers, (_TRACE_HEADER, data)])
    if status == 200:
        return Answer(status, b'{"output":' + body + b',"trace":' + data + b"}", headers)
    if body.endswith(b"}"):
        return Answer(status, body[:-1] + b',"trace":' + data + b"}", headers)
    return Answer(status, body, [*(headers or []), (_TRACE_HEADER, data)])


class Stream(NamedTuple):
    """A streamed answer: status and headers, then chunks as they come; ``close()`` ends the source."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


_PLAIN = frozenset({dict, list, tuple, str, bytes, int, float, bool, type(None)})  # never streamed


def as_stream(result: Any) -> Stream | None:
    """A Stream for a StreamingResponse, a generator or an async generator; None for anything else."""
    if type(result) in _PLAIN:  # the usual JSON output, at once
        return None
    if isinstance(result, StreamingResponse):
        charset = result.charset or "utf-8"
        headers = [(name, value) for name, value in result.raw_headers if name != b"content-length"]
        source: Any = result.body_iterator
        return Stream(result.status_code, headers, _encoded(source, charset), _closer(source))
    if inspect.isasyncgen(result) or inspect.isgenerator(result):
        chunks = _async_chunks(result)
        return Stream(200, [(b"content-type", _TEXT)], _encoded(chunks, "utf-8"), _closer(chunks))
    return None


async def _encoded(chunks: AsyncIterable[Any], charset: str) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            yield bytes(chunk)
        elif isinstance(chunk, str):
            yield chunk.encode(charset)
        else:
            yield dumps(chunk) + b"\n"


async def _async_chunks(source: Any) -> AsyncIterator[Any]:
    """An async generator's items, or a generator's, each ``next()`` run in a worker thread."""
    if inspect.isasyncgen(source):
        try:
            async for item in source:
                yield item
        finally:
            await source.aclose()
        return
    loop = asyncio.get_running_loop()
    running: asyncio.Future[Any] | None = None
    try:
        while True:
            running = loop.run_in_executor(None, next, source, _DONE)
            item = await running
            if item is _DONE:
                return
            yield item
    finally:
        if running is not None and not running.done():  # close it once its next() returns
            running.add_done_callback(lambda _: source.close())
        else:
            source.close()


_DONE = object()


def _closer(source: Any) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

    return close


class _DisconnectWatch:
    """Cancels the request task when its client disconnects, if the graph runs past DISCONNECT_CHECK_S.

    A request joins its loop's :class:`_Watchlist`, which starts the watcher of those still
    running DISCONNECT_CHECK_S after they began: a request answered sooner (the common
    case) costs no timer and no task of its own."""

    __slots__ = ("_receive", "_task", "_watcher", "done", "left")

    def __init__(self, receive: Receive, watchlist: _Watchlist) -> None:
        self.left = False
        self.done = False
        self._receive: Receive | None = receive
        self._task: asyncio.Task[Any] | None = asyncio.current_task(watchlist.loop)
        self._watcher: asyncio.Task[None] | None = None
        watchlist.add(self)

    def start(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        if self._receive is None:
            return
        await _disconnected(self._receive)
        self.left = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        """The request is answered: stop watching, and let go of its task and ``receive`` now
        (the watchlist keeps this object until its check is due; holding the request's task,
        and so all its frames, that long would make every request's objects survive into
        the garbage collector's older generations)."""
        self.done = True
        self._task = None
        self._receive = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


class _Watchlist:
    """The requests of one event loop in the order they began; one timer, due when the
    oldest one still running reaches DISCONNECT_CHECK_S, starts the watchers of all those due."""

    __slots__ = ("_timer", "_waiting", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: deque[tuple[float, _DisconnectWatch]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: _DisconnectWatch) -> None:
        due = self.loop.time() + DISCONNECT_CHECK_S
        self._waiting.append((due, watch))
        if self._timer is None:
            self._timer = self.loop.call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        waiting = self._waiting
        while waiting:
            due, watch = waiting[0]
            if not watch.done and due > now:
                self._timer = self.loop.call_at(due, self._check)
                return
            waiting.popleft()
            if not watch.done:
                watch.start()


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has disconnected (the request body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def too_large(max_bytes: int) -> Answer:
    return error_answer(413, f"request body is larger than {max_bytes} bytes", [_CLOSE])


def starlette_request(scope: Scope, body: bytes) -> Request:
    """A Starlette Request over the body already read (for ingresses that take the request)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _authorized(auth: bytes | None, token: bytes) -> bool:
    if auth is None:
        return False
    scheme, _, credentials = auth.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)
