"""The simulator (compiler/simulate.py) against closed forms and the runtime's rules, on
profiles of assumed costs (no runtime involved)."""

from __future__ import annotations

import pytest

import graphserve as gs
from graphserve.compiler import arrivals
from graphserve.compiler.profile import Distribution, Profile
from graphserve.compiler.simulate import Simulator, simulate
from graphserve.errors import ProfileError
from tests.graphs import sim_graphs

S = 0.010  # the service time of the one-model graph


@pytest.fixture(scope="module")
def single():
    plan = gs.build(sim_graphs.single)
    return plan, Profile.assumed(plan, {"Sleeper.__call__": S})


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_the_closed_form(single, rho):
    """One replica taking one call at a time, deterministic service, Poisson arrivals: M/D/1,
    mean wait rho * s / (2 (1 - rho))."""
    plan, profile = single
    result = simulate(plan, profile, rate=rho / S, duration_s=150_000 * S / rho, seed=3)
    expected = rho * S / (2 * (1 - rho))
    assert result.node("Sleeper.__call__").queue_wait.mean_s == pytest.approx(expected, rel=0.04)
    assert result.latency.mean_s == pytest.approx(S + expected, rel=0.04)
    assert result.replicas[0].utilization == pytest.approx(rho, rel=0.02)
    assert result.rejected == result.timed_out == 0


def test_a_fan_out_join_takes_the_slowest_branch():
    plan = gs.build(sim_graphs.fanout)
    costs = {"branch0.__call__": 0.004, "branch1.__call__": 0.009, "branch2.__call__": 0.006, "Join.__call__": 0.001}
    result = simulate(plan, Profile.assumed(plan, costs), rate=10, arrivals="uniform", duration_s=10)
    assert result.latency.p50_s == pytest.approx(0.009 + 0.001)
    assert result.latency.max_s == pytest.approx(0.010)
    assert [n.calls for n in result.nodes] == [100] * 4


def test_a_batch_node_under_saturation_forms_full_batches():
    plan = gs.build(sim_graphs.batched)
    profile = Profile.assumed(plan, {"Batched.predict": {1: 0.012, 8: 0.026}})
    result = simulate(plan, profile, rate=2000, duration_s=5)
    node = result.node("Batched.predict")
    assert node.mean_batch_size == pytest.approx(8, rel=0.01)
    assert result.throughput_rps == pytest.approx(8 / 0.026, rel=0.01)


def test_a_lone_request_waits_for_the_batch_timeout_then_runs_alone():
    plan = gs.build(sim_graphs.batched)
    profile = Profile.assumed(plan, {"Batched.predict": {1: 0.012, 8: 0.026}})
    result = simulate(plan, profile, rate=1, arrivals="uniform", duration_s=5)
    assert result.node("Batched.predict").mean_batch_size == 1
    assert result.latency.p50_s == pytest.approx(0.002 + 0.012)


@pytest.mark.parametrize(
    ("arrivals_ms", "latencies_ms", "batches"),
    [
        # A, B, C gather until A has waited 5 ms and leave as a batch of 3 (8 ms: done at 13).
        # D comes at 12 while that batch runs: the batch ending at 13 does not cut its wait,
        # it leaves when it has waited 5 ms (17) and runs alone (6 ms: done at 23).
        ([0, 1, 3, 12], [13, 12, 10, 11], 2),
        # D (at 6) is due at 11 while the first batch runs: when it ends (13), D leaves at once
        # and takes E (at 12), queued behind it, along: a batch of 2 (7 ms: done at 20).
        ([0, 1, 3, 6, 12], [13, 12, 10, 14, 8], 2),
    ],
)
def test_batches_form_as_the_runtime_batcher_forms_them(arrivals_ms, latencies_ms, batches):
    """runtime/batcher.py: a batch leaves when full or when its oldest item has waited
    ``batch_wait_timeout_s`` (from entering the batcher, whatever runs meanwhile), and only
    once a batch slot is free; it takes every item queued then, up to ``max_batch_size``.
    Hand-computed with t(b) = 5 ms + 1 ms x b, a 5 ms wait, one batch at a time."""
    plan = gs.build(sim_graphs.batched)
    profile = Profile.assumed(plan, {"Batched.predict": {1: 0.006, 8: 0.013}})
    sim = Simulator(plan, profile).with_deployment("Batched", batch_wait_timeout_s=0.005)
    result = sim.run(arrivals=[t / 1000 for t in arrivals_ms])
    expected = sorted(latencies_ms)
    assert result.completed == len(arrivals_ms)
    assert result.node("Batched.predict").batches == batches
    assert result.latency.mean_s == pytest.approx(sum(expected) / len(expected) / 1000)
    assert result.latency.p50_s == pytest.approx(expected[(len(expected) + 1) // 2 - 1] / 1000)
    assert result.latency.max_s == pytest.approx(expected[-1] / 1000)


def test_batch_sizes_between_measured_ones_are_interpolated():
    plan = gs.build(sim_graphs.batched)
    profile = Profile.assumed(plan, {"Batched.predict": {1: 0.012, 8: 0.026}})
    sim = Simulator(plan, profile).with_deployment("Batched", max_batch_size=4)
    result = sim.run(rate=2000, duration_s=2)
    assert result.node("Batched.predict").mean_batch_size == pytest.approx(4, rel=0.01)
    assert result.throughput_rps == pytest.approx(4 / (0.012 + 3 * 0.002), rel=0.01)


def test_branches_run_with_the_profiled_probability_and_wait_for_their_selector():
    plan = gs.build(sim_graphs.gated)
    costs = {"selector.__call__": 0.005, "then.__call__": 0.020, "otherwise.__call__": 0.001}
    profile = Profile.assumed(plan, costs, paths=[({"switch": 0}, 0.1), ({"switch": 1}, 0.9)])
    result = simulate(plan, profile, rate=5, arrivals="uniform", duration_s=400, seed=1)
    calls = {n.node: n.calls for n in result.nodes}
    assert calls["selector.__call__"] == result.requests
    assert calls["then.__call__"] / result.requests == pytest.approx(0.1, abs=0.01)
    assert calls["then.__call__"] + calls["otherwise.__call__"] == result.requests
    # the branch reads only the input, yet starts after the selector is known
    assert result.latency.p50_s == pytest.approx(0.005 + 0.001)
    assert result.latency.max_s == pytest.approx(0.005 + 0.020)


def test_replicas_take_the_least_loaded_first(single):
    plan, profile = single
    one = simulate(plan, profile, rate=150, arrivals="uniform", duration_s=10)
    assert one.throughput_rps == pytest.approx(100, rel=0.01)  # 150/s offered to a 100/s replica
    two = Simulator(plan, profile).with_deployment("Sleeper", num_replicas=2).run(150, "uniform", 10)
    assert two.throughput_rps == pytest.approx(150, rel=0.01)
    assert two.latency.max_s == pytest.approx(S)  # no call ever waits
    assert [r.utilization for r in two.replicas] == pytest.approx([0.75, 0.75], rel=0.02)


def test_a_full_queue_rejects_and_a_deadline_times_out(single):
    plan, profile = single
    sim = Simulator(plan, profile).with_deployment("Sleeper", max_queued_requests=5)
    result = sim.run(rate=200, arrivals="uniform", duration_s=5)
    assert result.rejected == pytest.approx(result.requests / 2, rel=0.05)
    assert result.completed + result.rejected == result.requests
    assert result.latency.max_s <= 7 * S
    late = Simulator(plan, profile).run(rate=200, arrivals="uniform", duration_s=5, timeout_s=0.05)
    assert late.timed_out > 0 and late.completed + late.timed_out == late.requests
    assert late.latency.max_s <= 0.05


def test_cpu_bound_replicas_share_one_core_and_waiting_ones_add_capacity():
    plan = gs.build(sim_graphs.cpu_bound)
    waiting = Profile.assumed(plan, {"busy": S}, cpu_share={"busy": 0.0}, runs_on={"busy": "thread_pool"})
    holding = Profile.assumed(plan, {"busy": S}, cpu_share={"busy": 1.0}, runs_on={"busy": "thread_pool"})
    for profile, capacity in ((waiting, 2 * 4 / S), (holding, 1 / S)):
        sim = Simulator(plan, profile).with_deployment("busy", num_replicas=2)
        result = sim.run(rate=2000, arrivals="uniform", duration_s=3)
        assert result.throughput_rps == pytest.approx(capacity, rel=0.02)


def test_cpu_work_in_threads_is_processor_shared():
    """M/D/1 with processor sharing (sync calls in the thread pool): mean response s / (1 - rho)."""
    plan = gs.build(sim_graphs.cpu_bound)
    profile = Profile.assumed(plan, {"busy": S}, cpu_share={"busy": 1.0}, runs_on={"busy": "thread_pool"})
    sim = Simulator(plan, profile).with_deployment("busy", max_ongoing_requests=1000)
    result = sim.run(rate=50, duration_s=3000, seed=2)
    assert result.latency.mean_s == pytest.approx(S / (1 - 0.5), rel=0.05)
    assert result.cpu_utilization == pytest.approx(0.5, rel=0.03)


def test_cpu_work_on_the_event_loop_runs_one_call_at_a_time():
    """Async CPU-bound calls block the loop: M/D/1 FIFO on the core, mean wait rho s / (2 (1 - rho))."""
    plan = gs.build(sim_graphs.cpu_bound)
    profile = Profile.assumed(plan, {"busy": S}, cpu_share={"busy": 1.0}, runs_on={"busy": "event_loop"})
    sim = Simulator(plan, profile).with_deployment("busy", max_ongoing_requests=1000)
    result = sim.run(rate=50, duration_s=3000, seed=2)
    assert result.latency.mean_s == pytest.approx(S + 0.5 * S / (2 * 0.5), rel=0.04)


def test_service_times_follow_the_profiled_distribution(single):
    plan, _ = single
    spread = Distribution.of([0.001] * 90 + [0.050] * 10)
    result = simulate(plan, Profile.assumed(plan, {"Sleeper.__call__": spread}), rate=1, duration_s=3000, seed=5)
    assert result.latency.p50_s == pytest.approx(0.001, rel=0.01)
    assert result.latency.p99_s == pytest.approx(0.050, rel=0.01)


def test_the_same_seed_gives_the_same_prediction(single):
    plan, profile = single
    assert simulate(plan, profile, rate=70, seed=4) == simulate(plan, profile, rate=70, seed=4)
    assert simulate(plan, profile, rate=70, seed=4) != simulate(plan, profile, rate=70, seed=5)


def test_a_trace_is_replayed_as_given(single, tmp_path):
    plan, profile = single
    trace = tmp_path / "arrivals.txt"
    trace.write_text("# seconds\n10.0\n10.0\n10.5\n\n")
    times = arrivals.read_trace(str(trace))
    assert times == [0.0, 0.0, 0.5]
    result = simulate(plan, profile, arrivals=times)
    assert result.requests == 3 and result.arrivals == "trace"
    assert sorted([result.latency.p50_s, result.latency.max_s]) == pytest.approx([S, 2 * S])


def test_bad_arrivals_and_settings_are_named(single, tmp_path):
    plan, profile = single
    trace = tmp_path / "bad.txt"
    trace.write_text("0.1\nsoon\n")
    with pytest.raises(ProfileError, match=r"bad.txt line 2: 'soon' is not a timestamp"):
        arrivals.read_trace(str(trace))
    with pytest.raises(ProfileError, match="no arrival times"):
        simulate(plan, profile, arrivals=[])
    with pytest.raises(ProfileError, match="a rate"):
        simulate(plan, profile)
    with pytest.raises(ProfileError, match="rate must be a positive"):
        simulate(plan, profile, rate=-1)
    with pytest.raises(ProfileError, match="no deployment 'Nope'"):
        Simulator(plan, profile).with_deployment("Nope", num_replicas=2)
    with pytest.raises(ProfileError, match=r"no @gs\.batch method"):
        Simulator(plan, profile).with_deployment("Sleeper", max_batch_size=2)
    with pytest.raises(ProfileError, match="num_replicas must be at least 1"):
        Simulator(plan, profile).with_deployment("Sleeper", num_replicas=0)


def test_a_profile_of_another_graph_is_refused(single):
    _, profile = single
    other = gs.build(sim_graphs.fanout)
    with pytest.raises(ProfileError, match=r"measured on graph 'single' and the plan is graph 'fanout'.*branch0"):
        Simulator(other, profile)


def test_variants_share_the_compiled_graph(single):
    plan, profile = single
    sim = Simulator(plan, profile)
    variant = sim.with_deployment("Sleeper", num_replicas=3, max_queued_requests=10)
    assert variant.templates is sim.templates
    assert sim.settings["Sleeper"].num_replicas == 1 and variant.settings["Sleeper"].num_replicas == 3
    assert len(variant.run(rate=10, duration_s=1).replicas) == 3


def test_power_of_two_choices_spreads_sequential_calls(single):
    """The runtime's alternative replica choice: two drawn at random, the less loaded one."""
    plan, profile = single
    least = Simulator(plan, profile).with_deployment("Sleeper", num_replicas=2)
    drawn = Simulator(plan, profile, routing="power_of_two").with_deployment("Sleeper", num_replicas=2)
    quiet = {"rate": 20, "arrivals": "uniform", "duration_s": 50}
    assert [r.busy for r in least.run(**quiet).replicas] == pytest.approx([0.2, 0.0], abs=0.01)
    assert [r.busy for r in drawn.run(**quiet).replicas] == pytest.approx([0.1, 0.1], abs=0.02)
    busy = {"rate": 150, "arrivals": "uniform", "duration_s": 10}
    assert drawn.run(**busy).throughput_rps == pytest.approx(least.run(**busy).throughput_rps, rel=0.01)
    with pytest.raises(ProfileError, match="unknown routing"):
        Simulator(plan, profile, routing="random")  # type: ignore[arg-type]


def test_the_runtimes_own_cpu_per_request_runs_on_the_event_loop_first():
    """``request_cpu_s``: each request's executor work is event-loop CPU before its calls."""
    plan = gs.build(sim_graphs.single)
    quick = Profile.assumed(plan, {"Sleeper.__call__": 0.0001}).model_copy(update={"request_cpu_s": 0.002})
    alone = simulate(plan, quick, rate=10, arrivals="uniform", duration_s=5)
    assert alone.latency.p50_s == pytest.approx(0.002 + 0.0001)
    # at 1000 requests/s the loop, 2 ms a request, is the bottleneck: 500 requests/s
    saturated = simulate(plan, quick, rate=1000, arrivals="uniform", duration_s=5)
    assert saturated.throughput_rps == pytest.approx(500, rel=0.02)
    assert saturated.cpu_utilization == pytest.approx(1.0, abs=0.01)
