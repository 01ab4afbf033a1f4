"""OpenTelemetry (optional extra ``graphserve[otel]``), imported only where it is already in use.

When this process has configured a tracer provider (``trace.set_tracer_provider(...)``,
or ``opentelemetry-instrument``) before the server starts, or the server was given one
(``gs.serve(..., tracer_provider=...)``), :func:`exporter_if_configured` returns an
:class:`OtelExporter` and the ingress traces every request with it:

- a span per request (``graphserve <graph>``, kind SERVER), child of the caller's span
  when the request carries a W3C ``traceparent`` header;
- a child span per node that ran and per handle call (``graphserve.node <id>``) with the
  attributes ``graphserve.graph``, ``graphserve.node``, ``graphserve.deployment``,
  ``graphserve.replica``, ``graphserve.batch_size`` and ``graphserve.status``.

A node's span is the current OpenTelemetry context while its deployment runs in this
process, so spans the deployment starts, and its handle calls, nest under it. On Ray the
node's context travels to the actor as W3C headers (:func:`inject` / :func:`attached`) and
is current there while the method runs; the node spans themselves are exported by the
driver, with the times the actor measured.

Nothing here imports ``opentelemetry`` unless the process already did, so a server without
it pays nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from .tracing import NodeSpan, Trace

_NS = 1_000_000_000


def exporter_if_configured(provider: Any = None) -> OtelExporter | None:
    """An exporter for ``provider`` or, without one, for the tracer provider this process set
    (``trace.set_tracer_provider``); None when there is none."""
    if provider is not None:
        return OtelExporter(provider.get_tracer("graphserve"))
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return OtelExporter(provider.get_tracer("graphserve"))


class OtelExporter:
    """Turns a :class:`Trace` into OpenTelemetry spans as the request runs."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, propagate, trace

        self.tracer = tracer
        self._context = context
        self._propagate = propagate
        self._trace = trace

    def start_request(self, trace: Trace, headers: Mapping[str, str], route: str) -> tuple[Any, Any]:
        """The request's span (child of ``traceparent``), made current; returns (span, token)."""
        parent = self._propagate.extract(headers)
        span = self.tracer.start_span(
            f"graphserve {trace.plan.name}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={
                "graphserve.graph": trace.plan.name,
                "graphserve.request_id": trace.request_id,
                "graphserve.backend": trace.backend,
                "http.route": route,
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def end_request(self, span: Any, token: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("graphserve.status", "ok" if status < 400 else "error")
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()
        self._context.detach(token)

    def begin(self, span: NodeSpan) -> None:
        """Start ``span``'s OpenTelemetry span under its parent's (or the request's)."""
        self._start(span, span.parent.otel if span.parent is not None else None)

    def _start(self, span: NodeSpan, parent: Any) -> None:
        """Start ``span``'s OpenTelemetry span under ``parent`` (an OpenTelemetry span), or
        under the current context when it is None."""
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        span.otel = self.tracer.start_span(
            f"graphserve.node {span.node}",
            context=context,
            start_time=_epoch_ns(span.trace, span.start),
            attributes={
                "graphserve.graph": span.trace.plan.name,
                "graphserve.node": span.node,
                "graphserve.kind": span.kind,
                **({"graphserve.deployment": span.deployment} if span.deployment else {}),
            },
        )

    def end(self, span: NodeSpan) -> None:
        """End ``span``'s OpenTelemetry span with its replica, batch size, status (and times, on Ray)."""
        otel = span.otel
        if otel is None:
            return
        span.otel = None
        if span.replica is not None:
            otel.set_attribute("graphserve.replica", span.replica)
        if span.batch_size is not None:
            otel.set_attribute("graphserve.batch_size", span.batch_size)
        otel.set_attribute("graphserve.status", span.status)
        if span.status != "ok":
            otel.set_status(self._trace.Status(self._trace.StatusCode.ERROR, span.error or span.status))
        end = span.end if span.end is not None else span.trace.start
        otel.end(end_time=_epoch_ns(span.trace, end))

    def current_for(self, span: NodeSpan) -> Any:
        """A context manager making ``span``'s OpenTelemetry span current (for the code it runs)."""
        if span.otel is None:
            return contextlib.nullcontext()
        return self._trace.use_span(span.otel, end_on_exit=False)

    def carrier(self, span: NodeSpan) -> dict[str, str] | None:
        """``span``'s context as W3C headers, for a call that runs in another process."""
        if span.otel is None:
            return None
        with self._trace.use_span(span.otel, end_on_exit=False):
            return inject()

    def add_child(self, parent: NodeSpan, child: NodeSpan) -> None:
        """A span for a call that ran elsewhere (a handle call inside a Ray actor), after the fact."""
        if parent.otel is not None:
            self._start(child, parent.otel)


def _epoch_ns(trace: Trace, perf: float) -> int:
    return int((trace.wall_start + (perf - trace.start)) * _NS)


def inject() -> dict[str, str] | None:
    """The current OpenTelemetry context as W3C headers (None when OpenTelemetry is not in use)."""
    if "opentelemetry.propagate" not in sys.modules:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextlib.contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the context in ``carrier`` (W3C headers) current, where OpenTelemetry is installed."""
    if not carrier:
        yield
        return
    try:
        propagate = importlib.import_module("opentelemetry.propagate")
        context = importlib.import_module("opentelemetry.context")
    except ImportError:  # not installed in this worker: nothing to attach
        yield
        return
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
