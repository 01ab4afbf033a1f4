"""The simulator benchmark's harness (bench/sim.py, bench/sim_report.py): its results hold
every graph and rate, its tables render them, and the graphs it measures work.
(tests/test_readme.py checks that the README's ``sim`` section is the one generated.)"""

from __future__ import annotations

import json

import pytest

import graphserve as gs
from bench import readme, sim, sim_report, sim_workloads
from bench import servers as bench_servers


@pytest.fixture(scope="module")
def results():
    return readme.load(readme.SECTIONS["sim"].source)


def test_the_results_hold_every_graph_and_rate(results):
    assert list(results["graphs"]) == list(sim_workloads.APPS)
    for graph in results["graphs"].values():
        assert [row["fraction"] for row in graph["rates"]] == list(sim.FRACTIONS)
        for row in graph["rates"]:
            assert set(row["predicted"]) == {"p50_ms", "p99_ms", "throughput_rps"}
    assert set(results["speed"]) == set(sim_workloads.APPS)


def test_the_tables_show_each_row_and_change_with_the_results(results):
    text = sim_report.markdown(results)
    rows = sum(len(g["rates"]) for g in results["graphs"].values())
    assert text.count("| chain3 |") == 5  # three rates, the capacity and the speed
    assert len([line for line in text.splitlines() if line.endswith(("pass |", "FAIL |"))]) == rows
    changed = json.loads(json.dumps(results))
    changed["speed"]["chain3"]["seconds"] = 4.321
    assert "| chain3 | 100,000 | 4.32 |" in sim_report.markdown(changed)


@pytest.mark.parametrize("name", list(sim_workloads.APPS))
def test_the_benchmark_graphs_answer_and_simulate(name):
    app = sim_workloads.APPS[name]
    handle = gs.run(app, http=False)
    try:
        assert handle.call({"x": 0.5}) == (1.5 if name == "fanout3" else 0.5)
    finally:
        handle.shutdown()
    plan = gs.build(app)
    result = gs.simulate(plan, sim._assumed(plan, name), rate=50, duration_s=2)
    assert result.completed == result.requests > 0


def test_the_sim_server_starts_answers_and_stops(tmp_path):
    server = sim.start_server(["chain3", "batched"], tmp_path)
    try:
        assert server.port and server.started_s > 0
        status, body = bench_servers.post(server.url("batched"), sim_workloads.BODIES[5])
        assert (status, json.loads(body)) == (200, 0.05)
    finally:
        bench_servers.stop(server)
    assert server.process.poll() is not None
