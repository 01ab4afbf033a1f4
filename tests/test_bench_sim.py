"""The simulator benchmark's harness (bench/sim.py, bench/sim_report.py): its results hold
every graph and rate, its tables render them, and the graphs it measures work.
(tests/test_readme.py checks that the README's ``sim`` section is the one generated.)"""

from __future__ import annotations

import json
import re

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
    assert len([line for line in text.splitlines() if re.search(r"\| (pass|FAIL) / (pass|FAIL) \|", line)]) == rows
    changed = json.loads(json.dumps(results))
    changed["speed"]["chain3"]["seconds"] = 4.321
    assert "| chain3 | 100,000 | 4.32 |" in sim_report.markdown(changed)


def test_each_rate_shows_how_busy_the_machine_was(results):
    changed = json.loads(json.dumps(results))
    row = changed["graphs"]["chain3"]["rates"][0]
    row["machine"] = {
        "load_1m": {"median": 1.25, "max": 3.5},
        "server_core_wait_ms_per_s": {"median": 0.4, "max": 12.0},
    }
    changed["graphs"]["chain3"]["profile_machine_wait_share"] = 0.0123
    text = sim_report.markdown(changed)
    line = next(line for line in text.splitlines() if line.startswith("| chain3 | 30% |"))
    assert line.endswith("| 1.25 (3.50) | 0.4 (12.0) |")
    assert "| 1.2% |" in next(line for line in text.splitlines() if line.startswith("| chain3 |") and "req/s" in line)


def test_the_rates_run_interleaved_and_every_run_is_kept(monkeypatch):
    calls = []

    def once(url, sim_, rate, duration_s, seed, rng, server_pid):
        calls.append(rate)
        figures = {"p50_ms": 1.0, "p99_ms": 2.0 + len(calls), "throughput_rps": rate}
        return {
            "requests": 10,
            "predicted": dict(figures),
            "measured": dict(figures),
            "measured_server": dict(figures),
            "measured_from_schedule": dict(figures),
            "complete": True,
            "load_1m": float(len(calls)),
            "server_core_wait_ms_per_s": None,
        }

    monkeypatch.setattr(sim, "measure_once", once)
    rows = sim.measure_rates("http://x", None, 100.0, 1.0, None, 0)
    rates = [f * 100.0 for f in sim.FRACTIONS]
    assert calls == rates * sim.REPEATS  # round after round, each rate once per round
    assert [len(row["runs"]) for row in rows] == [sim.REPEATS] * len(rates)
    assert rows[0]["machine"]["load_1m"] == {"median": 4.0, "max": 7.0}  # runs 1, 4, 7
    assert rows[0]["machine"]["server_core_wait_ms_per_s"] is None


def test_graphs_can_be_chosen():
    assert sim.graph_names(None) == list(sim_workloads.APPS)
    assert sim.graph_names("batched, chain3") == ["chain3", "batched"]
    with pytest.raises(SystemExit, match="unknown graph"):
        sim.graph_names("chain4")


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
