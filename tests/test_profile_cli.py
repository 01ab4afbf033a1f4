"""``graphserve profile`` and ``graphserve simulate`` (graphserve/profile_cli.py): tables,
files, JSON, and errors as one line on stderr with no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphserve import cli

ROOT = Path(__file__).resolve().parent.parent
GRAPHSERVE = Path(sys.executable).parent / "graphserve"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A profile of the conditional graph written by the CLI, and the plan file."""
    folder = tmp_path_factory.mktemp("profile")
    requests = folder / "requests.jsonl"
    requests.write_text("".join(f'{{"x": {i / 10}}}\n' for i in range(10)))
    out = folder / "profile.json"
    assert cli.main(["profile", "tests.graphs.sim_graphs:conditional", "--requests", str(requests), "-o", str(out),
                     "--duration", "1"]) == 0  # fmt: skip
    plan = folder / "plan.json"
    assert cli.main(["build", "tests.graphs.sim_graphs:conditional", "-o", str(plan)]) == 0
    return folder, out, plan


def test_profile_prints_a_table_and_writes_the_profile(measured, capsys):
    folder, out, _ = measured
    data = json.loads(out.read_text())
    assert data["graph"] == "conditional" and [n["node"] for n in data["nodes"]] == [
        "cheap.__call__",
        "expensive.__call__",
    ]
    requests = folder / "requests.jsonl"
    assert cli.main(["profile", "tests.graphs.sim_graphs:batched", "--requests", str(requests),
                     "--duration", "1", "--batch-sizes", "1,4"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "profile of graph batched" in text and "Batched.predict" in text
    assert "runtime's own CPU per request:" in text and "waiting for a core other processes held:" in text
    assert "fit" in text and " x b" in text and "cpu share" in text


def test_simulate_prints_the_prediction(measured, capsys):
    _, out, plan = measured
    capsys.readouterr()
    assert cli.main(["simulate", str(plan), "--profile", str(out), "--rate", "50", "--duration", "5"]) == 0
    text = capsys.readouterr().out
    assert "predicted throughput" in text and "expensive.__call__" in text and "utilization" in text


def test_simulate_json_is_the_result(measured, capsys):
    _, out, _ = measured
    capsys.readouterr()
    argv = ["simulate", "tests.graphs.sim_graphs:conditional", "--profile", str(out), "--rate", "50", "--json"]
    assert cli.main([*argv, "--arrivals", "uniform", "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["graph"] == "conditional" and result["requests"] == 500 and result["arrivals"] == "uniform"
    assert {n["node"] for n in result["nodes"]} == {"cheap.__call__", "expensive.__call__"}


def test_simulate_replays_a_trace_file(measured, capsys, tmp_path):
    _, out, plan = measured
    trace = tmp_path / "trace.txt"
    trace.write_text("0\n0.01\n0.02\n")
    capsys.readouterr()
    assert cli.main(["simulate", str(plan), "--profile", str(out), "--arrivals", str(trace), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 3


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(GRAPHSERVE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_errors_are_one_clear_line_and_no_traceback(measured, tmp_path):
    folder, out, plan = measured
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "other.json"
    assert cli.main(["build", "tests.graphs.sim_graphs:single", "-o", str(other)]) == 0
    cases = [
        (("profile", "tests.graphs.sim_graphs:single", "--requests", str(empty)), 1, "is empty"),
        (("profile", "tests.graphs.sim_graphs:single", "--requests", str(folder / "nope.jsonl")), 1, "cannot read"),
        (("simulate", str(other), "--profile", str(out), "--rate", "5"), 1, "measured on graph 'conditional'"),
        (("simulate", str(plan), "--profile", str(folder / "nope.json"), "--rate", "5"), 1, "cannot read profile"),
        (("simulate", str(plan), "--profile", str(out)), 2, "--rate is needed"),
    ]
    for args, status, message in cases:
        done = _run(*args)
        assert done.returncode == status, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout
