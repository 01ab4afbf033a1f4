"""Re-planning from what a running server measured: ``graphserve build --from-metrics URL``.

A server that serves a graph planned for an SLO measures the graph's request rate and p99
over its drift window (``runtime/drift.py``) and shows them in ``/-/metrics``
(``graphserve_observed_rate_rps``, ``graphserve_observed_p99_seconds``), beside the plan it
runs (``/-/graphs``), and each node's call latency (``graphserve_node_latency_seconds``).
:func:`read_server` fetches them; the CLI then corrects the profile given
(``--profile``/``--requests``) by the latencies the server saw (``compiler/observed.py``)
and plans again for the observed rate (unless ``--rate`` overrides it) and the served
plan's SLO p99 (unless ``--slo-p99-ms`` does).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from graphserve.errors import GraphError
from graphserve.plan import Plan, SLOPlan

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerMeasurements:
    """One served graph's plan and what the server observed over its last drift window."""

    plan: Plan
    slo: SLOPlan  # the SLO the served plan was made for
    rate_rps: float
    p99_s: float
    node_latency: dict[str, tuple[int, float]] = field(default_factory=dict)  # node -> (calls, mean seconds)


def read_server(url: str, graph: str | None = None) -> ServerMeasurements:
    """The plan and the observed rate and p99 of ``graph`` (or the only graph) served at ``url``."""
    base = url.rstrip("/")
    graphs = json.loads(_get(f"{base}/-/graphs"))["graphs"]
    if graph is None:
        if len(graphs) != 1:
            raise GraphError(f"{base} serves {len(graphs)} graphs {sorted(graphs)}: name one with --graph")
        graph = next(iter(graphs))
    if graph not in graphs:
        raise GraphError(f"{base} serves no graph {graph!r}; it serves {sorted(graphs)}")
    plan = Plan.model_validate(graphs[graph]["plan"])
    if plan.slo is None:
        raise GraphError(f"graph {graph!r} at {base} was not planned for an SLO: it measures no rate to re-plan from")
    text = _get(f"{base}/-/metrics")
    rate = metric_value(text, "graphserve_observed_rate_rps", graph)
    p99 = metric_value(text, "graphserve_observed_p99_seconds", graph)
    if rate is None or p99 is None:
        raise GraphError(f"{base}/-/metrics shows no observed rate for graph {graph!r}")
    if rate <= 0:
        raise GraphError(
            f"graph {graph!r} at {base} has measured no traffic yet (its drift window is not full or saw no "
            "requests): give --rate, or re-plan later"
        )
    return ServerMeasurements(plan, plan.slo, rate, p99, node_latencies(text, graph))


def node_latencies(text: str, graph: str) -> dict[str, tuple[int, float]]:
    """node -> (calls, mean latency in seconds) from ``graphserve_node_latency_seconds`` of ``graph``."""
    pattern = re.compile(
        rf'^graphserve_node_latency_seconds_(sum|count)\{{graph="{re.escape(graph)}",node="([^"]+)"\}} (\S+)$',
        re.MULTILINE,
    )
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for kind, node, value in pattern.findall(text):
        if kind == "sum":
            sums[node] = float(value)
        else:
            counts[node] = int(float(value))
    return {n: (c, sums[n] / c) for n, c in sorted(counts.items()) if c > 0 and n in sums}


def metric_value(text: str, name: str, graph: str) -> float | None:
    """The sample ``name{graph="<graph>"}`` in Prometheus text, or None."""
    pattern = re.compile(rf'^{re.escape(name)}\{{graph="{re.escape(graph)}"\}} (\S+)$', re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else None


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read().decode("utf-8")  # type: ignore[no-any-return]
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise GraphError(f"cannot read {url}: {exc}") from None
