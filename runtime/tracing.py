"""Per-request traces: which nodes ran, when, for how long, on which replica, in which batch.

A request asks for its trace with ``X-Graphserve-Trace: 1`` (or the ingress traces every
request because OpenTelemetry is configured, see ``otel.py``). The executor then runs the
request with a :class:`Trace`: each node that runs gets a :class:`NodeSpan` opened after
its inputs are ready and closed when its value is; the backend notes the replica, the
batcher the size of the batch the call went in (through :data:`CURRENT`, the span of the
call running now), and a handle call made inside a node is a child span. Nodes of the
plan with no span did not run: :meth:`Trace.to_json` lists them as ``skipped`` (an arm
not taken, or not reached after a failure).

Untraced requests pay nothing: the executor picks its traced code path per request, and
the only shared check is ``span is not None`` where a span can be passed.

On Ray the calls run in actors: a traced call asks the actor for a second result, the
call's own record (wall-clock start and end in the actor, batch size, the handle calls
it made), fetched when the request is done (:meth:`Trace.settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from graphserve.plan import Plan

if TYPE_CHECKING:
    from .otel import OtelExporter

#: What records the call running in this context while its request is traced: a
#: :class:`NodeSpan` (driver, local backend) or an :class:`ActorRecord` (inside a Ray actor).
CURRENT: ContextVar[NodeSpan | ActorRecord | None] = ContextVar("graphserve_span", default=None)

_KINDS = {"input": "input", "attr": "field", "switch": "switch", "output": "output"}
_SETTLE_TIMEOUT_S = 5.0


class NodeSpan:
    """One node's run (or one handle call's) within a traced request."""

    __slots__ = (
        "batch_size",
        "deployment",
        "end",
        "error",
        "kind",
        "node",
        "otel",
        "parent",
        "record",
        "replica",
        "start",
        "status",
        "trace",
    )

    def __init__(self, trace: Trace, node: str, kind: str, deployment: str | None, parent: NodeSpan | None) -> None:
        self.trace = trace
        self.node = node
        self.kind = kind
        self.deployment = deployment
        self.parent = parent
        self.start = time.perf_counter()
        self.end: float | None = None
        self.replica: int | None = None
        self.batch_size: int | None = None
        self.status = "ok"
        self.error: str | None = None
        self.record: Any = None  # a Ray reference to the actor's own record of the call
        self.otel: Any = None  # the OpenTelemetry span, when one is being exported

    def child(self, node: str, deployment: str | None) -> NodeSpan:
        """A handle call made while this span runs."""
        return self.trace.begin(node, "handle", deployment, self)

    def finish(self, error: BaseException | None = None) -> None:
        if self.end is not None:
            return
        if error is None and self.record is not None:
            return  # a call running in a Ray actor: its times come with the actor's record (Trace.settle)
        self.end = time.perf_counter()
        if error is not None:
            self.status = "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
            self.error = f"{type(error).__name__}: {error}"[:300]
        exporter = self.trace.exporter
        if exporter is not None and self.otel is not None and self.record is None:
            exporter.end(self)

    def apply_record(self, record: dict[str, Any]) -> None:
        """Times and batch size measured inside a Ray actor (wall clock), and its handle calls."""
        trace = self.trace
        self.start = trace.start + (record["start"] - trace.wall_start)
        self.end = trace.start + (record["end"] - trace.wall_start)
        self.batch_size = record.get("batch_size")
        if record.get("error"):
            self.status = "error"
            self.error = record["error"]
        for call in record.get("calls", ()):
            child = NodeSpan(trace, call["node"], "handle", call.get("deployment"), self)
            child.replica = call.get("replica")
            trace.spans.append(child)
            child.apply_record(call)
            if trace.exporter is not None:
                trace.exporter.add_child(self, child)
                trace.exporter.end(child)

    def to_json(self) -> dict[str, Any]:
        trace = self.trace
        end = self.end if self.end is not None else time.perf_counter()
        return {
            "node": self.node,
            "kind": self.kind,
            "deployment": self.deployment,
            "parent": self.parent.node if self.parent is not None else None,
            "start_ms": round((self.start - trace.start) * 1000, 3),
            "duration_ms": round((end - self.start) * 1000, 3),
            "replica": self.replica,
            "batch_size": self.batch_size,
            "status": self.status,
            "error": self.error,
        }


class Trace:
    """The spans of one request; ``exporter`` also sends them to OpenTelemetry."""

    def __init__(
        self, plan: Plan, request_id: str = "", exporter: OtelExporter | None = None, backend: str = "local"
    ) -> None:
        self.plan = plan
        self.request_id = request_id
        self.exporter = exporter
        self.backend = backend
        self.start = time.perf_counter()
        self.wall_start = time.time()
        self.end: float | None = None
        self.spans: list[NodeSpan] = []
        self.status = "ok"
        self.error: str | None = None
        self.started = False  # the graph began to run (not refused before)
        self.request_span: tuple[Any, Any] | None = None  # OpenTelemetry (span, context token)

    def begin(self, node: str, kind: str, deployment: str | None, parent: NodeSpan | None = None) -> NodeSpan:
        span = NodeSpan(self, node, kind, deployment, parent)
        self.spans.append(span)
        if self.exporter is not None:
            self.exporter.begin(span)
        return span

    def begin_node(self, node_id: str) -> NodeSpan:
        node = self.plan.node(node_id)
        if node.kind == "call":
            kind = "deployment" if node.deployment else "glue"
        else:
            kind = _KINDS.get(node.kind, node.kind)
        return self.begin(node_id, kind, node.deployment)

    def current(self, span: NodeSpan) -> contextlib.AbstractContextManager[Any]:
        """Makes ``span`` the current OpenTelemetry span for the code it runs (when exporting)."""
        return self.exporter.current_for(span) if self.exporter is not None else contextlib.nullcontext()

    def carrier(self, span: NodeSpan) -> dict[str, str] | None:
        """``span``'s OpenTelemetry context as W3C headers for another process (None when not exporting)."""
        return self.exporter.carrier(span) if self.exporter is not None else None

    def mark(self, node_id: str) -> None:
        """A fused node (field read, switch, output) produced its value now."""
        span = self.begin_node(node_id)
        span.start = time.perf_counter()
        span.finish()

    def failed(self, node: str | None, error: BaseException) -> None:
        """The request failed in ``node`` (as its NodeExecutionError says)."""
        self.status = "error"
        self.error = f"{type(error).__name__}: {error}"[:300]
        for span in self.spans:
            if span.node == node and span.status == "ok":
                span.status = "error"
                span.error = f"{type(error).__name__}: {error}"[:300]

    async def settle(self) -> None:
        """Fetch the actors' records of traced Ray calls (nothing to fetch on the local backend)."""
        for span in list(self.spans):
            if span.record is None:
                continue
            record = await _fetch(span.record)
            if record is not None:
                span.apply_record(record)
            elif span.end is None:
                span.end = time.perf_counter()
                span.status = "error"
            if self.exporter is not None:
                self.exporter.end(span)
        self.end = time.perf_counter()

    def to_json(self) -> dict[str, Any]:
        end = self.end if self.end is not None else time.perf_counter()
        ran = {span.node for span in self.spans}
        return {
            "graph": self.plan.name,
            "request_id": self.request_id,
            "backend": self.backend,
            "start": self.wall_start,
            "duration_ms": round((end - self.start) * 1000, 3),
            "status": self.status,
            "error": self.error,
            "nodes": [span.to_json() for span in sorted(self.spans, key=lambda s: s.start)],
            "skipped": [node.id for node in self.plan.nodes if node.id not in ran],
        }


class ActorRecord:
    """A traced call's own record inside a Ray actor: sent back as the call's second result."""

    __slots__ = ("batch_size", "calls", "deployment", "node", "replica", "start")

    def __init__(self, node: str, deployment: str, replica: int) -> None:
        self.node = node
        self.deployment = deployment
        self.replica = replica
        self.start = time.time()
        self.batch_size: int | None = None
        self.calls: list[dict[str, Any]] = []  # the records of the handle calls it made

    def to_json(self, error: BaseException | None = None) -> dict[str, Any]:
        return {
            "node": self.node,
            "deployment": self.deployment,
            "replica": self.replica,
            "start": self.start,
            "end": time.time(),
            "batch_size": self.batch_size,
            "calls": self.calls,
            "error": f"{type(error).__name__}: {error}"[:300] if error is not None else None,
        }


async def _fetch(ref: Awaitable[Any]) -> dict[str, Any] | None:
    """The actor's record of a call (a Ray reference), or None when there is none to have."""
    from ray.exceptions import RayError  # only a Ray call has a record to fetch

    try:
        async with asyncio.timeout(_SETTLE_TIMEOUT_S):
            record = await ref
    except (RayError, TimeoutError):  # the call failed, its actor died, or it never ended: its node says so
        return None
    return record if isinstance(record, dict) else None
