"""Live figures for the graph page (``/-/stats``, ``/-/events``), read from the metrics registry.

The numbers are the ones ``/-/metrics`` exposes (same :class:`Metrics` registry): per
node, calls (``graphserve_node_latency_seconds`` count), requests per second and p50/p99
latency over the last ``window_s`` seconds (p50/p99 over all calls while the window holds
none), errors (``graphserve_node_errors_total``), mean batch size
(``graphserve_batch_size``); per deployment, replicas busy/total and queue depth (the
backend's :class:`DeploymentLoad`); per graph, requests by status and the recent errors
with their request ids (:meth:`LiveStats.record_error`, which the ingress calls on a 5xx).

Rates and windowed quantiles come from the difference between the registry now and a
sample taken up to ``window_s`` ago; samples are kept only while someone reads the
figures (no background work). A node with a ``latency_budget_s`` in its plan (set by a
planner) gets ``budget_ms`` and ``budget_ratio`` = p99 / budget, which the page colours.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphserve.plan import Plan

from .metrics import Histogram, Labels, Metrics, quantile
from .routing import DeploymentLoad

if TYPE_CHECKING:
    from .backend import BatchLimits

NODE_LATENCY = "graphserve_node_latency_seconds"
NODE_ERRORS = "graphserve_node_errors_total"
BATCH_SIZE = "graphserve_batch_size"
REQUESTS = "graphserve_requests_total"
REQUEST_DURATION = "graphserve_request_duration_seconds"

_SAMPLE_EVERY_S = 0.5
_RECENT_ERRORS = 50


@dataclass
class GraphView:
    """What the ingress knows of one served graph at this moment."""

    name: str
    path: str
    plan: Plan
    ready: bool
    in_flight: int
    load: dict[str, DeploymentLoad] = field(default_factory=dict)
    # deployment -> method -> current batching limits (a batcher may adapt them)
    batching: dict[str, dict[str, BatchLimits]] = field(default_factory=dict)


@dataclass
class _Reading:
    """A histogram's state at one moment."""

    count: int
    total: float
    counts: list[int]
    buckets: tuple[float, ...]


def _read(hist: Histogram) -> _Reading:
    return _Reading(hist.count, hist.sum, list(hist.counts), hist.buckets)


class LiveStats:
    """Computes the page's figures from ``metrics``; see the module docstring."""

    def __init__(self, metrics: Metrics, window_s: float = 10.0) -> None:
        self.metrics = metrics
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[tuple[str, Labels], _Reading]]] = deque()
        self._samples.append((time.monotonic(), {}))
        self._errors: dict[str, deque[dict[str, Any]]] = {}

    # -- errors ---------------------------------------------------------------------------
    def record_error(
        self,
        plan: Plan,
        request_id: str,
        status: int,
        message: str,
        node: str | None = None,
        deployment: str | None = None,
    ) -> str | None:
        """Remember a failed request; count it on the plan node it belongs to (returned).

        ``node`` may be a node of the plan, or a handle call (``Deployment.method``) made
        inside one: it then counts on the first node calling ``deployment``."""
        plan_node = _plan_node(plan, node, deployment)
        if plan_node is not None:
            self.metrics.inc(NODE_ERRORS, (("graph", plan.name), ("node", plan_node)))
        log = self._errors.get(plan.name)
        if log is None:
            log = self._errors[plan.name] = deque(maxlen=_RECENT_ERRORS)
        log.appendleft(
            {
                "time": time.time(),
                "request_id": request_id,
                "status": status,
                "node": plan_node,
                "raised_in": node,
                "deployment": deployment,
                "message": message[:500],
            }
        )
        return plan_node

    def forget(self, graph: str) -> None:
        self._errors.pop(graph, None)

    # -- figures --------------------------------------------------------------------------
    def payload(self, graphs: list[GraphView]) -> dict[str, Any]:
        """The figures of every graph (JSON-ready)."""
        now = time.monotonic()
        current = self._readings()
        base_time, base = self._base(now, current)
        span = max(now - base_time, 1e-9)
        errors = self.metrics.counters(NODE_ERRORS)
        requests = self.metrics.counters(REQUESTS)
        out: dict[str, Any] = {}
        for graph in graphs:
            out[graph.name] = self._graph(graph, current, base, span, errors, requests)
        return {"time": time.time(), "window_s": round(min(span, self.window_s), 3), "graphs": out}

    def _readings(self) -> dict[tuple[str, Labels], _Reading]:
        readings: dict[tuple[str, Labels], _Reading] = {}
        for name in (NODE_LATENCY, BATCH_SIZE, REQUEST_DURATION):
            for labels, hist in self.metrics.histograms(name).items():
                readings[(name, labels)] = _read(hist)
        return readings

    def _base(
        self, now: float, current: dict[tuple[str, Labels], _Reading]
    ) -> tuple[float, dict[tuple[str, Labels], _Reading]]:
        """The oldest earlier sample inside the window, or else the newest one before it (this
        reading is kept as a sample too, at most every 0.5 s)."""
        samples = self._samples
        if now - samples[-1][0] >= _SAMPLE_EVERY_S:
            samples.append((now, current))
        while len(samples) > 1 and now - samples[1][0] > self.window_s:
            samples.popleft()
        if len(samples) > 1 and now - samples[0][0] > self.window_s and samples[1][0] < now:
            samples.popleft()
        return samples[0]

    def _graph(
        self,
        graph: GraphView,
        current: dict[tuple[str, Labels], _Reading],
        base: dict[tuple[str, Labels], _Reading],
        span: float,
        errors: dict[Labels, float],
        requests: dict[Labels, float],
    ) -> dict[str, Any]:
        plan = graph.plan
        name = plan.name
        batch_by_call: dict[tuple[str, str], dict[str, Any]] = {}
        for (metric, labels), reading in current.items():
            if metric == BATCH_SIZE and labels[0] == ("graph", name):
                key = (labels[1][1], labels[2][1].rpartition(".")[2])  # (deployment, method)
                batch_by_call[key] = _mean(reading, base.get((metric, labels)))
        nodes: dict[str, Any] = {}
        for node in plan.nodes:
            if node.kind != "call" or not node.deployment:
                continue
            labels = (("graph", name), ("node", node.id))
            figures = _latency(current.get((NODE_LATENCY, labels)), base.get((NODE_LATENCY, labels)), span)
            figures["errors"] = int(errors.get(labels, 0))
            batch = batch_by_call.get((node.deployment, node.method or "__call__"))
            figures["batch_mean"] = batch["mean"] if batch else None
            budget = node.latency_budget_s
            figures["budget_ms"] = _ms(budget)
            p99 = figures["p99_ms"]
            figures["budget_ratio"] = round(p99 / (budget * 1000), 3) if budget and p99 is not None else None
            nodes[node.id] = figures
        by_status: dict[str, int] = {}
        for labels, value in requests.items():
            if labels[0] == ("graph", name):
                by_status[labels[1][1]] = int(value)
        duration_labels = (("graph", name),)
        overall = _latency(
            current.get((REQUEST_DURATION, duration_labels)), base.get((REQUEST_DURATION, duration_labels)), span
        )
        deployments: dict[str, Any] = {}
        for dep in plan.deployments:
            load = graph.load.get(dep.name)
            deployments[dep.name] = {
                "replicas": load.replicas if load else dep.num_replicas,
                "busy": load.busy if load else 0,
                "ongoing": load.ongoing if load else 0,
                "queued": load.queued if load else 0,
                "batching": graph.batching.get(dep.name, {}),
            }
        return {
            "route": graph.path,
            "ready": graph.ready,
            "in_flight": graph.in_flight,
            "requests": {
                "total": sum(by_status.values()),
                "by_status": by_status,
                "errors": sum(v for k, v in by_status.items() if k.isdigit() and int(k) >= 500),
                "rate": overall["rate"],
                "p50_ms": overall["p50_ms"],
                "p99_ms": overall["p99_ms"],
            },
            "nodes": nodes,
            "deployments": deployments,
            "errors": list(self._errors.get(name, ()))[:20],
        }


def _plan_node(plan: Plan, node: str | None, deployment: str | None) -> str | None:
    ids = {n.id for n in plan.nodes}
    if node is not None and node in ids:
        return node
    if deployment is not None:
        for candidate in plan.nodes:
            if candidate.kind == "call" and candidate.deployment == deployment:
                return candidate.id
    return None


def _latency(reading: _Reading | None, base: _Reading | None, span: float) -> dict[str, Any]:
    if reading is None:
        return {"calls": 0, "rate": 0.0, "p50_ms": None, "p99_ms": None}
    recent = [now - (base.counts[i] if base else 0) for i, now in enumerate(reading.counts)]
    calls_in_window = reading.count - (base.count if base else 0)
    counts = recent if calls_in_window > 0 else reading.counts
    return {
        "calls": reading.count,
        "rate": round(calls_in_window / span, 2),
        "p50_ms": _ms(quantile(0.5, reading.buckets, counts)),
        "p99_ms": _ms(quantile(0.99, reading.buckets, counts)),
    }


def _mean(reading: _Reading, base: _Reading | None) -> dict[str, Any]:
    count = reading.count - (base.count if base else 0)
    total = reading.total - (base.total if base else 0.0)
    if count <= 0:  # nothing in the window: the mean over all time
        count, total = reading.count, reading.total
    return {"mean": round(total / count, 2) if count else None}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
