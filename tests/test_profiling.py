"""The profiler (graphserve/profiling.py) on the real local runtime: visit rates, switch arms,
batch cost curves, CPU share, and every bad input as a clear ProfileError."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest

import graphserve as gs
from graphserve.compiler.profile import Distribution, Profile
from graphserve.errors import ProfileError
from tests.graphs import sim_graphs


def test_visit_rates_and_arms_on_a_conditional_graph():
    rng = random.Random(7)
    requests = [{"x": rng.random()} for _ in range(1000)]
    expensive = sum(r["x"] >= sim_graphs.THRESHOLD for r in requests)
    profile = gs.profile(sim_graphs.conditional, requests, duration_s=2)
    rate = profile.node("expensive.__call__").visit_rate
    assert profile.requests == 1000 and profile.node("cheap.__call__").visit_rate == 1.0
    assert rate == expensive / 1000  # every sample request ran once, so the rate is exact ...
    assert abs(rate - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 1000)  # ... and 10% within sampling error
    switch = profile.switch("switch")
    assert switch is not None and switch.arms == {"0": expensive, "1": 1000 - expensive}
    assert {json.dumps(p.arms): p.requests for p in profile.paths} == {
        '{"switch": 0}': expensive,
        '{"switch": 1}': 1000 - expensive,
    }
    # the simulator draws the branch with the measured probability
    result = gs.simulate(sim_graphs.conditional, profile, rate=100, duration_s=100, seed=1)
    assert result.node("expensive.__call__").calls / result.requests == pytest.approx(rate, abs=0.015)


def test_the_batched_cost_curve_is_measured_not_assumed():
    profile = gs.profile(sim_graphs.batched, [{"x": 1.0}, {"x": 2.0}], duration_s=4)
    node = profile.node("Batched.predict")
    assert [p.batch_size for p in node.batches] == [1, 2, 4, 8]  # powers of two up to max_batch_size=8
    assert node.latency is None and node.runs_on == "event_loop"
    assert node.fit is not None
    assert node.fit.fixed_s == pytest.approx(sim_graphs.BATCH_FIXED_S, abs=0.002)
    assert node.fit.per_item_s == pytest.approx(sim_graphs.BATCH_PER_ITEM_S, rel=0.2)
    medians = [p.latency.p50_s for p in node.batches]
    assert medians == sorted(medians)


def test_batch_sizes_can_be_chosen():
    profile = gs.profile(sim_graphs.batched, [{"x": 1.0}], duration_s=1, batch_sizes=[3, 1])
    assert [p.batch_size for p in profile.node("Batched.predict").batches] == [1, 3]


def test_cpu_share_tells_a_gil_holding_node_from_a_waiting_one():
    busy = gs.profile(sim_graphs.cpu_bound, [{"x": 1.0}], duration_s=1).node("busy")
    waiting = gs.profile(sim_graphs.single, [{"x": 1.0}], duration_s=1).node("Sleeper.__call__")
    assert busy.runs_on == "thread_pool" and waiting.runs_on == "event_loop"
    assert busy.cpu_share > 0.3 > 0.2 > waiting.cpu_share
    assert busy.latency is not None and busy.latency.p50_s >= 0.002


def test_a_profile_is_plain_json_that_the_simulator_reads(tmp_path):
    profile = gs.profile(sim_graphs.fanout, [{"x": 1.0}], duration_s=1)
    path = tmp_path / "fanout.json"
    path.write_text(profile.to_json())
    assert Profile.load(str(path)) == profile
    assert profile.graph == "fanout" and profile.machine.cores >= 1
    nodes = [n.node for n in profile.nodes]
    assert nodes == ["branch0.__call__", "branch1.__call__", "branch2.__call__", "Join.__call__"]
    result = gs.simulate(sim_graphs.fanout, str(path), rate=20, duration_s=5)
    assert result.completed == result.requests > 0


def test_too_few_samples_are_warned_about():
    profile = gs.profile(sim_graphs.batched, [{"x": 1.0}], duration_s=0.2)
    assert any("batches of 8 timed: raise --duration" in w for w in profile.warnings)


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "requests.jsonl"
    path.write_text(text)
    return str(path)


def test_an_empty_requests_file_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="is empty: give one JSON request body per line"):
        gs.profile(sim_graphs.single, _write(tmp_path, "\n  \n"), duration_s=1)
    with pytest.raises(ProfileError, match="cannot read requests file"):
        gs.profile(sim_graphs.single, str(tmp_path / "missing.jsonl"), duration_s=1)


def test_a_malformed_line_is_named(tmp_path):
    with pytest.raises(ProfileError, match=r"requests.jsonl line 3 is not JSON"):
        gs.profile(sim_graphs.single, _write(tmp_path, '{"x": 1}\n\n{"x": \n'), duration_s=1)


def test_a_request_that_fails_validation_is_named(tmp_path):
    path = _write(tmp_path, '{"x": 1}\n{"x": "one"}\n')
    with pytest.raises(ProfileError, match=r"line 2: request does not match Point: x: Input should be a valid number"):
        gs.profile(sim_graphs.validated, path, duration_s=1)
    with pytest.raises(ProfileError, match=r"line 1: the request failed: request has no field 'x'"):
        gs.profile(sim_graphs.single, _write(tmp_path, '{"y": 1}\n'), duration_s=1)


def test_a_request_that_makes_a_node_fail_is_named(tmp_path):
    path = _write(tmp_path, '{"x": 0.1}\n{"x": 0.9}\n')
    with pytest.raises(ProfileError, match=r"line 2: the request failed: node 'Fails.__call__'.*x is too large"):
        gs.profile(sim_graphs.failing, path, duration_s=1)


def test_bad_options_are_refused():
    with pytest.raises(ProfileError, match="duration must be a positive"):
        gs.profile(sim_graphs.single, [{"x": 1.0}], duration_s=0)
    with pytest.raises(ProfileError, match="batch sizes must be integers >= 1"):
        gs.profile(sim_graphs.batched, [{"x": 1.0}], batch_sizes=[0])
    with pytest.raises(ProfileError, match="no sample requests"):
        gs.profile(sim_graphs.single, [], duration_s=1)


def test_two_profiles_of_a_graph_differ_only_in_their_measurements():
    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k not in ("machine", "warnings")}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return 0 if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    first, second = (gs.profile(sim_graphs.conditional, [{"x": 0.1}, {"x": 0.95}], duration_s=0.5) for _ in "ab")
    assert shape(json.loads(first.to_json())) == shape(json.loads(second.to_json()))
    assert list(json.loads(first.to_json())) == list(json.loads(second.to_json()))


class _BusierRunQueue:
    """The real run-queue delay plus ``step`` seconds more at every reading: each timed call
    (read before and after) waited ``step`` longer for a core than it really did."""

    def __init__(self, real: Callable[[], float | None], step: float) -> None:
        self.real = real
        self.step = step
        self.extra = 0.0

    def __call__(self) -> float:
        self.extra += self.step
        return (self.real() or 0.0) + self.extra


def test_the_time_a_call_waited_for_a_core_is_left_out_of_its_latency(monkeypatch):
    from graphserve import profiling

    plain = gs.profile(sim_graphs.batched, [{"x": 1.0}], duration_s=1, batch_sizes=[1])
    monkeypatch.setattr(profiling, "run_delay_s", _BusierRunQueue(profiling.run_delay_s, 0.004))
    busy = gs.profile(sim_graphs.batched, [{"x": 1.0}], duration_s=1, batch_sizes=[1])
    cost = sim_graphs.BATCH_FIXED_S + sim_graphs.BATCH_PER_ITEM_S  # 12 ms a batch of 1
    before, after = plain.node("Batched.predict").batches[0].latency, busy.node("Batched.predict").batches[0].latency
    assert before.p50_s == pytest.approx(cost, abs=0.0015)
    assert after.p50_s == pytest.approx(cost - 0.004, abs=0.0015)  # 4 ms more of each call left out
    node = busy.node("Batched.predict")
    assert node.machine_wait_s >= 0.004 * after.count
    assert busy.machine_wait_share is not None and busy.machine_wait_share >= 0.004 / (after.mean_s + 0.004) - 0.01
    assert any("the machine was busy while profiling" in w for w in busy.warnings)


def test_without_the_run_queue_delay_the_wall_time_stands(monkeypatch):
    from graphserve import profiling

    monkeypatch.setattr(profiling, "run_delay_s", lambda: None)
    profile = gs.profile(sim_graphs.single, [{"x": 1.0}], duration_s=0.5)
    node = profile.node("Sleeper.__call__")
    assert profile.machine_wait_share is None and node.machine_wait_s == 0.0
    assert node.latency is not None and node.latency.p50_s >= 0.001


def test_the_run_queue_delay_is_read_from_linux():
    from graphserve import profiling

    first = profiling.run_delay_s()
    if first is None:
        pytest.skip("this OS does not report run-queue delays")
    sum(range(100_000))
    second = profiling.run_delay_s()
    assert second is not None and second >= first >= 0.0


def test_the_runtimes_own_cpu_per_request_is_what_the_calls_do_not_take():
    from graphserve import profiling

    profile = gs.profile(sim_graphs.conditional, [{"x": 0.5}, {"x": 0.95}], duration_s=0.5)
    cheap, expensive = profile.node("cheap.__call__"), profile.node("expensive.__call__")
    assert cheap.latency is not None and expensive.latency is not None
    cheap = cheap.model_copy(update={"cpu_share": 0.5, "latency": Distribution.constant(0.0002)})
    expensive = expensive.model_copy(update={"cpu_share": 0.1, "latency": Distribution.constant(0.001)})
    # the first request (warming up) is left out; calls: 1 x 0.5 x 200 us + 0.5 x 0.1 x 1000 us = 150 us
    spent = [0.010, 0.0003, 0.0005]
    assert profiling.runtime_cpu(spent, [cheap, expensive]) == pytest.approx(0.0004 - 0.00015)
    assert profiling.runtime_cpu([0.010, 0.0001], [cheap, expensive]) == 0.0  # never below nothing
    assert profiling.runtime_cpu([], [cheap]) == 0.0
    measured = gs.profile(sim_graphs.single, [{"x": 1.0}] * 20, duration_s=0.5).request_cpu_s
    assert 0.0 <= measured < 0.005  # tens of microseconds of Python per request, not milliseconds
