"""The simulator benchmark's harness (bench/sim.py, bench/sim_report.py): the README's table
is the one generated from bench/results/sim.json, and the pieces the benchmark runs work."""

from __future__ import annotations

import pytest

import graphserve as gs
from bench import sim, sim_report, sim_workloads


def test_the_readme_table_is_generated_from_the_results():
    results = sim_report.load_results()
    readme = sim_report.README.read_text(encoding="utf-8")
    assert sim_report.current_section(readme) == sim_report.section(results)
    assert sim_report.main(["--check"]) == 0


def test_the_results_hold_every_graph_and_rate():
    results = sim_report.load_results()
    assert list(results["graphs"]) == list(sim_workloads.APPS)
    for graph in results["graphs"].values():
        assert [row["fraction"] for row in graph["rates"]] == list(sim.FRACTIONS)
        for row in graph["rates"]:
            assert set(row["predicted"]) == {"p50_ms", "p99_ms", "throughput_rps"}
    assert set(results["speed"]) == set(sim_workloads.APPS)


def test_replacing_the_section_keeps_the_rest(tmp_path):
    results = {"graphs": {}, "speed": {"g": {"requests": 10, "seconds": 0.5}}}
    text = f"before\n{sim_report.START}\nold\n{sim_report.END}\nafter\n"
    updated = sim_report.replace_section(text, results)
    assert updated.startswith("before\n") and updated.endswith("\nafter\n") and "old" not in updated
    assert "| g | 10 | 0.50 |" in updated
    with pytest.raises(ValueError, match="no <!-- bench:sim:start -->"):
        sim_report.replace_section("no markers", results)


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
