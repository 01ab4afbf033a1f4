"""The live page's figures (runtime/live_stats.py): windows, quantiles, errors, budgets."""

from __future__ import annotations

import pytest

import graphserve as gs
from graphserve.runtime.live_stats import NODE_LATENCY, GraphView, LiveStats
from graphserve.runtime.metrics import LATENCY_BUCKETS, Metrics, quantile
from graphserve.runtime.routing import DeploymentLoad
from tests.graphs import page_graphs


@pytest.fixture
def plan() -> gs.Plan:
    return gs.build(page_graphs.make_app(), cluster=None)


def view(plan: gs.Plan, **kwargs) -> GraphView:
    return GraphView(name=plan.name, path="/" + plan.name, plan=plan, ready=True, in_flight=0, **kwargs)


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    buckets = (1.0, 2.0, 4.0)
    assert quantile(0.5, buckets, [0, 0, 0, 0]) is None
    assert quantile(0.5, buckets, [0, 10, 0, 0]) == pytest.approx(1.5)
    assert quantile(0.99, buckets, [10, 0, 0, 0]) == pytest.approx(0.99)
    assert quantile(0.5, buckets, [0, 0, 0, 3]) == 4.0  # the open top bucket reads as the highest bound


def test_node_figures_come_from_the_registry(plan: gs.Plan) -> None:
    metrics = Metrics()
    stats = LiveStats(metrics)
    labels = (("graph", plan.name), ("node", "Classifier.__call__"))
    for _ in range(8):
        metrics.observe(NODE_LATENCY, 0.002, labels)
    metrics.observe("graphserve_batch_size", 3, (("graph", plan.name), ("deployment", "Embed"), ("method", "__call__")))
    metrics.observe("graphserve_batch_size", 1, (("graph", plan.name), ("deployment", "Embed"), ("method", "__call__")))
    load = {"long_path": DeploymentLoad(replicas=2, busy=1, ongoing=3, queued=4)}
    payload = stats.payload([view(plan, load=load)])["graphs"][plan.name]
    node = payload["nodes"]["Classifier.__call__"]
    assert node["calls"] == 8 and node["errors"] == 0 and node["rate"] > 0
    assert 1.0 < node["p50_ms"] <= 2.5 and node["p99_ms"] <= 2.5
    assert payload["nodes"]["Embed.__call__"]["batch_mean"] == 2.0
    assert payload["nodes"]["short_path"] == {
        "calls": 0,
        "rate": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "errors": 0,
        "batch_mean": None,
        "budget_ms": None,
        "budget_ratio": None,
    }
    assert set(payload["nodes"]) == {"Classifier.__call__", "Embed.__call__", "long_path", "short_path"}
    assert payload["deployments"]["long_path"] == {"replicas": 2, "busy": 1, "ongoing": 3, "queued": 4, "batching": {}}
    assert payload["deployments"]["short_path"]["replicas"] == 1


def test_rates_and_quantiles_cover_the_window_and_fall_back_to_all_calls(
    plan: gs.Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("graphserve.runtime.live_stats.time.monotonic", lambda: clock[0])
    metrics = Metrics()
    stats = LiveStats(metrics, window_s=10.0)
    labels = (("graph", plan.name), ("node", "long_path"))
    for _ in range(20):
        metrics.observe(NODE_LATENCY, 0.2, labels)  # slow calls, long ago
    clock[0] = 110.0
    first = stats.payload([view(plan)])["graphs"][plan.name]["nodes"]["long_path"]
    assert first["rate"] == 2.0 and first["p50_ms"] > 100
    clock[0] = 125.0  # the slow calls left the window: no calls in it, figures over all time
    idle = stats.payload([view(plan)])["graphs"][plan.name]["nodes"]["long_path"]
    assert idle["rate"] == 0.0 and idle["calls"] == 20 and idle["p50_ms"] > 100
    for _ in range(30):
        metrics.observe(NODE_LATENCY, 0.0001, labels)  # fast calls now
    clock[0] = 130.0
    recent = stats.payload([view(plan)])["graphs"][plan.name]["nodes"]["long_path"]
    assert recent["calls"] == 50 and recent["rate"] == pytest.approx(30 / 5) and recent["p99_ms"] < 1


def test_errors_count_on_the_node_that_failed_and_keep_their_request_ids(plan: gs.Plan) -> None:
    metrics = Metrics()
    stats = LiveStats(metrics)
    assert stats.record_error(plan, "rid-1", 500, "boom", node="long_path", deployment="long_path") == "long_path"
    # raised in a handle call inside a node: counted on the node calling that deployment
    assert stats.record_error(plan, "rid-2", 500, "inner", node="Embed.helper", deployment="Embed") == "Embed.__call__"
    assert stats.record_error(plan, "rid-3", 504, "late") is None
    payload = stats.payload([view(plan)])["graphs"][plan.name]
    assert payload["nodes"]["long_path"]["errors"] == 1
    assert payload["nodes"]["Embed.__call__"]["errors"] == 1
    assert [e["request_id"] for e in payload["errors"]] == ["rid-3", "rid-2", "rid-1"]
    assert payload["errors"][1]["raised_in"] == "Embed.helper"
    assert 'graphserve_node_errors_total{graph="page_demo",node="long_path"} 1' in metrics.render()
    stats.forget(plan.name)
    assert stats.payload([view(plan)])["graphs"][plan.name]["errors"] == []


def test_a_planned_latency_budget_gives_the_ratio_the_page_colours(plan: gs.Plan) -> None:
    plan.node("long_path").latency_budget_s = 0.006
    metrics = Metrics()
    for _ in range(10):
        metrics.observe(NODE_LATENCY, 0.003, (("graph", plan.name), ("node", "long_path")))
    node = LiveStats(metrics).payload([view(plan)])["graphs"][plan.name]["nodes"]["long_path"]
    assert node["budget_ms"] == 6.0
    assert node["budget_ratio"] == pytest.approx(node["p99_ms"] / 6.0, abs=1e-3)
    assert 0.6 < node["budget_ratio"] <= 1.0


def test_latency_buckets_resolve_microsecond_hops() -> None:
    assert LATENCY_BUCKETS[0] <= 0.00001 and list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
