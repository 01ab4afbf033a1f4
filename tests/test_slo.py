"""The SLO planner (compiler/slo.py) on synthetic profiles: monotone in load and in the SLO,
user values kept, infeasible SLOs diagnosed at the right node, placement within every
node, byte-identical plans; the adaptive batch limits under a step change of load."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from graphserve.compiler import compile_app
from graphserve.compiler.codes import Code
from graphserve.compiler.planner import parse_cluster
from graphserve.compiler.profile import Profile, batch_service
from graphserve.compiler.slo import plan_for_slo
from graphserve.errors import GraphValidationError
from graphserve.plan import Plan, SLOPlan
from graphserve.runtime.adaptive import AdaptiveLimits
from tests.graphs import slo_graphs as g

SIZES = (1, 2, 4, 8, 16, 32)


def _profile(plan: Plan) -> Profile:
    switch = next(n.id for n in plan.nodes if n.kind == "switch")
    costs: dict[str, object] = {}
    for n in plan.nodes:
        if n.kind != "call" or not n.deployment:
            continue
        if "Detector" in n.id:
            costs[n.id] = {b: g.DETECT_FIXED_S + g.DETECT_PER_ITEM_S * b for b in SIZES}
        elif "Classifier" in n.id:
            costs[n.id] = {b: g.CLASSIFY_FIXED_S + g.CLASSIFY_PER_ITEM_S * b for b in SIZES}
        else:
            costs[n.id] = g.PREPROCESS_CPU_S if "Preprocess" in n.id else 0.0001
    return Profile.assumed(plan, costs, paths=[({switch: 0}, 0.3), ({switch: 1}, 0.7)])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pipeline() -> tuple[Plan, Profile]:
    plan = compile_app(g.pipeline)
    return plan, _profile(plan)


def _slo(p99_ms: float, rate: float) -> SLOPlan:
    return SLOPlan(p99_s=p99_ms / 1000, rate_rps=rate)


def test_more_load_never_gives_fewer_replicas(pipeline):
    plan, profile = pipeline
    totals = []
    for rate in (50, 300, 900, 1500):
        planned = plan_for_slo(plan, profile, _slo(50, rate), sim_requests=2000)
        totals.append(sum(d.num_replicas for d in planned.deployments))
        assert planned.prediction is not None and planned.prediction.p99_s <= 0.05 * 0.8
    assert totals == sorted(totals) and totals[-1] > totals[0], totals


def test_no_batcher_is_planned_near_its_full_batch_capacity(pipeline):
    """A batcher the simulator sees keep up at 95% of what its full batches serve collapses a
    few percent slower in real life: the plan leaves each one at most 80% loaded."""
    plan, profile = pipeline
    costs = {
        "Detector": (g.DETECT_FIXED_S, g.DETECT_PER_ITEM_S, 1.0),
        "Classifier": (g.CLASSIFY_FIXED_S, g.CLASSIFY_PER_ITEM_S, 0.3),
    }
    for rate in (300, 900, 1500):
        planned = plan_for_slo(plan, profile, _slo(60, rate), sim_requests=2000)
        for name, (fixed, per_item, visits) in costs.items():
            dep = planned.deployment(name)
            size = dep.batching[0].max_batch_size
            served = dep.num_replicas * size / (fixed + per_item * size)
            assert rate * visits <= 0.8 * served + 1e-6, (rate, name, dep.num_replicas, size)


def test_a_tighter_slo_never_gives_larger_waits(pipeline):
    plan, profile = pipeline
    previous: dict[str, float] | None = None
    for p99_ms in (120, 80, 50, 35):
        planned = plan_for_slo(plan, profile, _slo(p99_ms, 200), sim_requests=2000)
        waits = {d.name: b.batch_wait_timeout_s for d in planned.deployments for b in d.batching}
        if previous is not None:
            assert all(waits[k] <= previous[k] for k in waits), (previous, waits)
        previous = waits


def test_user_values_are_kept_and_every_value_says_where_it_came_from():
    plan = compile_app(g.fixed)
    planned = plan_for_slo(plan, _profile(plan), _slo(80, 300), sim_requests=2000)
    det = planned.deployment("FixedDetector")
    assert det.num_replicas == 2
    assert (det.batching[0].max_batch_size, det.batching[0].batch_wait_timeout_s) == (4, 0.001)
    assert det.batching[0].adaptive is False  # the user chose the batch size: not adapted
    sources = {c.field: c.source for c in det.choices}
    assert sources["num_replicas"] == sources["__call__.max_batch_size"] == "user"
    assert sources["__call__.batch_wait_timeout_s"] == "user"
    cls = planned.deployment("Classifier")
    assert {c.field: c.source for c in cls.choices}["__call__.max_batch_size"] == "planned"
    assert cls.batching[0].adaptive is True and cls.batching[0].latency_budget_s
    assert cls.reason is not None and "req/s" in cls.reason and "budget" in cls.reason
    assert all(n.latency_budget_s is not None for n in planned.nodes if n.kind == "call" and n.deployment)


def test_an_infeasible_slo_names_the_bottleneck_and_what_is_achievable(pipeline):
    plan, profile = pipeline
    with pytest.raises(GraphValidationError) as caught:  # the classifier alone takes 10 ms
        plan_for_slo(plan, profile, _slo(8, 100), cluster=parse_cluster("cpus=4"), sim_requests=1000)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == Code.SLO_INFEASIBLE
    assert diagnostic.node == "Classifier.__call__"
    assert "one call alone takes 10.2 ms" in diagnostic.message and "best p99 found" in diagnostic.message
    assert "no rate meets p99 8.0 ms" in diagnostic.message
    assert "headroom 0.8 = 6.4 ms" in diagnostic.message  # it says the headroom was tried, then the full p99


def test_an_slo_infeasible_at_its_rate_names_the_bottleneck_and_the_highest_rate():
    """The user fixed the detector (2 replicas, batch 4, wait 1 ms: ~1200 req/s at most); at
    2000 req/s it is the bottleneck, and the highest rate a plan meets the p99 at is below that."""
    plan = compile_app(g.fixed)
    with pytest.raises(GraphValidationError) as caught:
        plan_for_slo(plan, _profile(plan), _slo(80, 2000), sim_requests=1000)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == Code.SLO_INFEASIBLE and diagnostic.node == "FixedDetector.__call__"
    found = re.search(r"the highest rate a plan meets p99 80.0 ms at is (\d+) req/s", diagnostic.message)
    assert found is not None, diagnostic.message
    highest = float(found.group(1))
    assert 600 <= highest < 1300, highest
    at_highest = plan_for_slo(plan, _profile(plan), _slo(80, highest), sim_requests=1000)  # it really is met there
    assert at_highest.prediction is not None and at_highest.prediction.p99_s <= 0.080


def test_headroom_first_then_the_full_p99_with_a_warning(pipeline):
    """The planner aims for p99 x headroom; when nothing reaches that but a plan meets the p99
    itself, it plans for the p99 and says so (GS204) instead of refusing a feasible SLO."""
    plan, profile = pipeline
    comfortable = plan_for_slo(plan, profile, _slo(50, 100), sim_requests=1000)
    assert comfortable.warnings == [] and comfortable.prediction is not None
    assert comfortable.prediction.within_headroom and comfortable.prediction.p99_s <= 0.8 * 0.050
    # the fastest this pipeline answers is ~16 ms at p99: 18 ms is feasible, 0.8 x 18 = 14.4 ms is not
    tight = plan_for_slo(plan, profile, _slo(18, 100), sim_requests=1000)
    assert tight.prediction is not None and not tight.prediction.within_headroom
    assert 0.8 * 0.018 < tight.prediction.p99_s <= 0.018
    (warning,) = tight.warnings
    assert warning.code == Code.SLO_NO_HEADROOM and warning.severity == "warning"
    assert "met only without the planner's headroom" in warning.message and "14.4 ms" in warning.message
    with pytest.raises(GraphValidationError) as caught:  # under the fastest: GS203, saying headroom was dropped too
        plan_for_slo(plan, profile, _slo(13, 100), sim_requests=1000)
    assert "no plan meets even the full 13.0 ms" in caught.value.diagnostics[0].message


def test_each_budget_is_the_slo_split_by_predicted_latency_and_the_batcher_keeps_to_it(pipeline):
    """Along the critical path the written budgets add up to the SLO's p99 and stand in the
    same ratio to each node's predicted p99 (its latency contribution under the chosen values,
    batch wait and queueing included); each adaptive batcher gets its node's budget."""
    plan, profile = pipeline
    planned = plan_for_slo(plan, profile, _slo(60, 400), sim_requests=2000)
    assert planned.prediction is not None
    path = ["Preprocess.__call__", "Detector.__call__", "Classifier.__call__", "Join.__call__"]
    nodes = {n.id: n for n in planned.nodes}
    budgets = {n: nodes[n].latency_budget_s or 0.0 for n in path}
    assert sum(budgets.values()) == pytest.approx(0.060, abs=1e-5)
    ratios = [budgets[n] / planned.prediction.nodes[n].p99_s for n in path if planned.prediction.nodes[n].p99_s > 1e-4]
    assert len(ratios) == 3 and max(ratios) == pytest.approx(min(ratios), rel=1e-3)
    for dep in ("Detector", "Classifier"):
        (batching,) = planned.deployment(dep).batching
        assert batching.latency_budget_s == nodes[f"{dep}.__call__"].latency_budget_s


def test_placement_never_over_commits_spreads_replicas_and_keeps_the_chain_together(pipeline, tmp_path):
    plan, profile = pipeline
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"nodes": [{"name": "a", "cpus": 0.5}, {"name": "b", "cpus": 4}]}))
    cluster = parse_cluster(f"nodes={nodes}")
    planned = plan_for_slo(plan, profile, _slo(50, 1800), cluster=cluster, sim_requests=2000)
    assert cluster is not None
    for node in cluster.nodes:
        used = sum(r.num_cpus for r in planned.replicas if r.node == node.name)
        assert used <= node.cpus + 1e-9, (node.name, used)
    by_deployment: dict[str, list[str]] = {}
    for r in planned.replicas:
        by_deployment.setdefault(r.deployment, []).append(r.node)
    # a deployment's replicas spread over the nodes (losing one node never takes them all) ...
    spread = [nodes for nodes in by_deployment.values() if len(nodes) > 1]
    assert spread and all(set(nodes) == {"a", "b"} for nodes in spread), by_deployment
    # ... and the chain's first replicas stay together on the node with room (no transfers between them)
    assert {nodes[0] for nodes in by_deployment.values()} == {"b"}, by_deployment


def test_placement_spreads_when_one_node_is_too_small(pipeline, tmp_path):
    plan, profile = pipeline
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps([{"name": "a", "cpus": 0.2}, {"name": "b", "cpus": 0.2}, {"name": "c", "cpus": 0.2}]))
    cluster = parse_cluster(f"nodes={nodes}")
    planned = plan_for_slo(plan, profile, _slo(80, 100), cluster=cluster, sim_requests=1000)
    assert cluster is not None
    for node in cluster.nodes:
        assert sum(r.num_cpus for r in planned.replicas if r.node == node.name) <= node.cpus + 1e-9
    assert len({r.node for r in planned.replicas}) > 1


def test_identical_input_gives_a_byte_identical_plan(pipeline):
    plan, profile = pipeline
    first = plan_for_slo(plan, profile, _slo(50, 300), sim_requests=1500).to_json()
    second = plan_for_slo(plan, profile, _slo(50, 300), sim_requests=1500).to_json()
    assert first == second
    assert Plan.from_json(first).to_json() == first


def test_the_adaptive_limits_follow_a_step_change_of_load():
    """A fake device (t = 4 ms + 0.6 ms x n) and a fake clock: batches of whatever queued at the
    offered rate. The load steps up (the device slows 1.5x, as if shared): the limit comes down
    until batches fit the budget again; the load steps back: the limit returns to the plan's."""
    limits = AdaptiveLimits(max_batch_size=16, max_wait_s=0.004, budget_s=0.020)
    now, previous_run, history = 0.0, 0.0, []

    def run(rate: float, slowdown: float, batches: int) -> None:
        nonlocal now, previous_run
        for _ in range(batches):  # what arrived while the previous batch ran, plus the wait
            size = max(1, min(limits.limit, round(rate * (previous_run + limits.wait_s))))
            run_s = slowdown * (0.004 + 0.0006 * size)
            waited = previous_run + min(limits.wait_s, size / rate)
            now += waited
            limits.observe(size, waited + run_s, run_s, now)
            now += run_s
            history.append((limits.limit, waited + run_s))
            previous_run = run_s

    run(rate=400, slowdown=1.0, batches=50)
    assert limits.limit == 16 and limits.decreases == 0  # light load: the planned maximum, inside the budget
    run(rate=400, slowdown=4.0, batches=200)  # the step: a batch of 8 now takes 35 ms, over the budget
    assert limits.decreases > 0
    recent = history[-50:]
    assert max(limit for limit, _ in recent) < 16
    assert limits.limit >= limits.keeping_up() > 1  # never below what keeps up with the calls arriving
    assert limits.wait_s == min(0.004, max(0.0, 0.020 - 2 * limits.estimate(limits.limit)))  # BentoML's rule
    run(rate=400, slowdown=1.0, batches=80)
    assert limits.limit == 16  # recovered, and never above the planned maximum
    assert max(limit for limit, _ in history) == 16


def test_a_slower_device_never_cuts_the_limit_below_keeping_up():
    """At 1000 calls/s a device costing 4 ms + 0.6 ms x n keeps up only in batches of 16 (1176/s);
    their run time breaks a 10 ms budget, but smaller batches would fall behind for good."""
    limits = AdaptiveLimits(max_batch_size=16, max_wait_s=0.004, budget_s=0.010)
    start = 0.0
    for _ in range(100):
        run_s = 0.004 + 0.0006 * 16
        limits.observe(16, 0.030, run_s, start)
        start += 16 / 1000
    assert limits.keeping_up() == 16 and limits.limit == 16 and limits.decreases == 0


def test_a_backlog_does_not_cut_the_adaptive_limit():
    """Calls late only because they queued behind a backlog (the batch itself runs well inside
    the budget) do not shrink the batches: smaller batches would serve fewer calls a second and
    the backlog would grow without end. A batch too slow for the budget on its own still does."""
    limits = AdaptiveLimits(max_batch_size=16, max_wait_s=0.004, budget_s=0.040)
    for backlog in range(200):  # full batches of 16 (13.6 ms each), their oldest call queued ever longer
        limits.observe(16, 0.041 + backlog * 0.001, 0.0136)
    assert limits.limit == 16 and limits.decreases == 0
    limits.observe(16, 0.050, 0.041)  # a batch that alone takes over the budget
    assert limits.limit < 16 and limits.decreases == 1


def test_the_current_adaptive_limits_are_in_the_metrics(pipeline):
    """A planned graph served over HTTP: /-/metrics shows each replica's batch limits, and an
    adaptive batcher whose budget every batch breaks shows its size limit cut below the plan's."""
    import asyncio

    import httpx

    from tests.serving_utils import running_server
    from tests.test_ingress import metric

    plan, profile = pipeline
    planned = plan_for_slo(plan, profile, _slo(80, 200), sim_requests=1000)
    data = json.loads(planned.to_json())
    for dep in data["deployments"]:
        for batching in dep["batching"]:
            if dep["name"] == "Detector":
                batching.update(max_batch_size=8, adaptive=True, latency_budget_s=0.001)  # no batch can meet 1 ms
    squeezed = Plan.model_validate(data)
    with running_server(squeezed) as url:

        async def load() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for _ in range(4):  # rounds of concurrent requests: batches, each over budget
                    answers = await asyncio.gather(*(client.post("/", json={"x": i / 16}) for i in range(16)))
                    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]

        asyncio.run(load())
        text = httpx.get(url + "/-/metrics", timeout=30).text
    labels = {"graph": "pipeline", "deployment": "Detector", "replica": "0", "method": "Detector.__call__"}
    assert "# TYPE graphserve_batch_size_limit gauge" in text
    limit = metric(text, "graphserve_batch_size_limit", **labels)
    assert limit is not None and 1 <= limit < 8
    assert metric(text, "graphserve_batch_latency_budget_seconds", **labels) == 0.001
    wait = metric(text, "graphserve_batch_wait_seconds", **labels)
    assert wait is not None and 0 <= wait <= squeezed.deployment("Detector").batching[0].batch_wait_timeout_s
    cls = {**labels, "deployment": "Classifier", "method": "Classifier.__call__"}
    assert metric(text, "graphserve_batch_size_limit", **cls) is not None  # every batched replica is shown


@pytest.mark.slow
def test_end_to_end_profile_plan_deploy_and_load_at_the_target_rate(tmp_path):
    """The real chain: gs.profile measures the pipeline, the planner plans it for a generous SLO,
    a server on 127.0.0.1 runs the plan, and an open-loop Poisson load at the SLO's rate over HTTP
    answers inside the SLO's p99."""
    import graphserve as gs
    from bench.load import open_loop
    from graphserve.compiler.arrivals import poisson
    from graphserve.planning import plan_for_slo as plan_with_profile
    from tests.serving_utils import running_server

    rate, p99_ms, seconds = 60.0, 150.0, 4.0
    plan = compile_app(g.pipeline)
    samples = [{"x": i / 20} for i in range(20)]
    profile = gs.profile(plan, samples, duration_s=2.0, batch_sizes=[1, 2, 4, 8, 16])
    planned = plan_with_profile(plan, SLOPlan(p99_s=p99_ms / 1000, rate_rps=rate), profile=profile)
    assert planned.prediction is not None and planned.prediction.p99_s <= p99_ms / 1000
    bodies = [json.dumps(s).encode() for s in samples]
    with running_server(planned) as url:
        result = open_loop(url + "/", bodies, rate, seconds, schedule=poisson(rate, seconds, seed=7))
    assert result["error_count"] == 0 and result["statuses"] == {"200": result["requests"]}, result
    assert result["latency_ms"]["p99"] <= p99_ms, (result["latency_ms"], planned.prediction)


def test_observed_latencies_scale_the_profile_costs(pipeline):
    """``--from-metrics``: a node the server saw run twice as slow as profiled gets its whole
    cost curve doubled; nodes as profiled (within 10%) or with too few calls stay; the re-plan
    from the corrected profile gives the slower node more capacity."""
    from graphserve.compiler.observed import corrected_profile
    from graphserve.compiler.simulate import Simulator
    from graphserve.replan import node_latencies

    plan, profile = pipeline
    served = plan_for_slo(plan, profile, _slo(80, 300), sim_requests=2000)
    result = Simulator(served, profile).run(rate=300, duration_s=8, seed=3)
    nodes = {n.node: n for n in result.nodes}
    det = nodes["Detector.__call__"]
    # what a server measuring the detector at twice its profiled service time reports
    det_seen = det.queue_wait.mean_s + 2 * (det.latency.mean_s - det.queue_wait.mean_s)
    pre_seen = nodes["Preprocess.__call__"].latency.mean_s
    text = "\n".join(
        [
            f'graphserve_node_latency_seconds_sum{{graph="pipeline",node="Detector.__call__"}} {det_seen * 1000}',
            'graphserve_node_latency_seconds_count{graph="pipeline",node="Detector.__call__"} 1000',
            f'graphserve_node_latency_seconds_sum{{graph="pipeline",node="Preprocess.__call__"}} {pre_seen * 1000}',
            'graphserve_node_latency_seconds_count{graph="pipeline",node="Preprocess.__call__"} 1000',
            'graphserve_node_latency_seconds_sum{graph="pipeline",node="Classifier.__call__"} 5.0',
            'graphserve_node_latency_seconds_count{graph="pipeline",node="Classifier.__call__"} 5',
            'graphserve_node_latency_seconds_count{graph="other",node="Detector.__call__"} 7',
        ]
    )
    observed = node_latencies(text, "pipeline")
    assert set(observed) == {"Detector.__call__", "Preprocess.__call__", "Classifier.__call__"}
    assert observed["Detector.__call__"][0] == 1000 and observed["Detector.__call__"][1] == pytest.approx(det_seen)
    corrected, factors = corrected_profile(served, profile, 300, observed)
    assert set(factors) == {"Detector.__call__"}, factors  # the classifier: 5 calls, too few
    assert factors["Detector.__call__"] == pytest.approx(2.0, rel=0.15)
    before, after = profile.node("Detector.__call__"), corrected.node("Detector.__call__")
    for b0, b1 in zip(before.batches, after.batches, strict=True):
        assert b1.latency.p50_s == pytest.approx(b0.latency.p50_s * factors["Detector.__call__"], rel=1e-3)
    assert corrected.node("Classifier.__call__") == profile.node("Classifier.__call__")
    replanned = plan_for_slo(plan, corrected, _slo(80, 300), sim_requests=2000)
    det_plan, det_replanned = served.deployment("Detector"), replanned.deployment("Detector")

    def capacity(d: Any) -> float:
        size = d.batching[0].max_batch_size
        return d.num_replicas * size / batch_service(corrected.node("Detector.__call__").batches, size, 0.5)

    assert capacity(det_replanned) > capacity(det_plan)
