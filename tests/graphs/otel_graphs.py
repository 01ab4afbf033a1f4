"""Deployments that report the OpenTelemetry context they run in (for tests/test_tracing.py).

Module-level so Ray actors import them by path."""

from __future__ import annotations

from typing import Any

import graphserve as gs


def current_context() -> dict[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


@gs.deployment
class SeesContext:
    async def __call__(self, x: Any) -> dict[str, str]:
        return current_context()


@gs.deployment
class Outer:
    """Calls SeesContext through a handle: the context must travel with the call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, x: Any) -> dict[str, Any]:
        return {"outer": current_context(), "inner": await self.inner.remote(x)}


def make_app() -> gs.App:
    with gs.InputNode() as inp:
        direct = SeesContext.options(name="Direct").bind().__call__.bind(inp)
        nested = Outer.bind(SeesContext.bind()).__call__.bind(inp)
    return gs.graph({"direct": direct, "nested": nested}, name="otel_demo")
