"""The Plan: deterministic JSON (byte-identical across builds and processes), round trip,
re-importing deployments from a plan file, and clear errors for what JSON cannot hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import graphserve as gs
from graphserve.api import GraphHandle
from graphserve.compiler import PLAN_VERSION, Plan, compile_app
from graphserve.plan import ConstValue, import_object
from tests.graphs import branching, plan_graphs

ROOT = Path(__file__).resolve().parent.parent


def test_same_graph_built_twice_gives_byte_identical_json() -> None:
    first = compile_app(branching.app, cluster="cpus=8,gpus=0").to_json()
    second = compile_app(branching.app, cluster="cpus=8,gpus=0").to_json()
    assert first == second
    # fresh bind objects for the same graph, too
    assert gs.build(plan_graphs.nested_app()).to_json() == gs.build(plan_graphs.nested_app()).to_json()


def test_json_is_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "from graphserve.compiler import compile_app\n"
        "from tests.graphs import branching\n"
        "import sys\n"
        "sys.stdout.write(compile_app(branching.app, cluster='cpus=8').to_json())\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] == compile_app(branching.app, cluster="cpus=8").to_json()


def test_json_holds_the_plan_fields() -> None:
    data = json.loads(compile_app(branching.app, cluster={"cpus": 8}).to_json())
    assert data["version"] == PLAN_VERSION
    assert {"name", "nodes", "stages", "deployments", "replicas", "cluster", "warnings", "input", "output"} <= set(data)
    heavy_call = next(n for n in data["nodes"] if n["id"] == "Heavy.run")
    assert heavy_call["guard"] == [[{"switch": "switch", "arm": 0}]]
    assert heavy_call["fused"] is False
    glue = next(n for n in data["nodes"] if n["id"] == "is_long")
    assert glue["fused"] is True and glue["fused_reason"]
    heavy = next(d for d in data["deployments"] if d["name"] == "Heavy")
    assert heavy["import_path"] == "tests.graphs.branching:Heavy"
    assert heavy["init_args"] == [{"kind": "const", "value": 2}]
    assert heavy["batching"][0]["max_batch_size"] == 8
    assert data["cluster"] == {"cpus": 8.0, "gpus": 0.0, "source": "given", "nodes": []}
    assert [w["code"] for w in data["warnings"]] == ["GS110"]


def test_json_round_trip() -> None:
    plan = compile_app(branching.app, cluster={"cpus": 8})
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again.model_dump() == plan.model_dump()
    assert again.to_json() == text
    assert Plan.from_json(text.encode()).stages == plan.stages


def test_a_plan_read_from_json_runs_by_reimporting_its_deployments(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(gs.build(branching.app).to_json())
    plan = Plan.from_json(path.read_text())
    assert plan.resolve("tests.graphs.branching:Heavy") is branching.Heavy  # imported, not remembered
    handle = GraphHandle(plan)
    try:
        out = handle.call({"text": "hello there", "route": "slow"})
        assert out == {"score": 1.1, "chosen": "HELLO THEREHELLO THERE", "routed": "slow:hello there"}
        out = handle.call({"text": "Hi"})
        assert out == {"score": 0.2, "chosen": "hi", "routed": "fast:Hi"}
    finally:
        handle.shutdown()


def test_unsupported_version_is_refused() -> None:
    data = json.loads(gs.build(branching.app).to_json())
    data["version"] = PLAN_VERSION + 1
    with pytest.raises(gs.PlanError, match="version"):
        Plan.from_json(json.dumps(data))


def test_unserializable_constructor_argument_names_the_deployment_and_argument() -> None:
    plan = gs.build(plan_graphs.configured_app(plan_graphs.Opaque()))
    with pytest.raises(gs.PlanError) as caught:
        plan.to_json()
    message = str(caught.value)
    assert "deployment 'Configured' constructor argument 0 (Opaque) is not JSON" in message
    assert "load large objects in the constructor" in message
    # JSON values are fine, in positional and keyword arguments alike
    ok = gs.build(plan_graphs.configured_app({"layers": [1, 2], "name": "m"}))
    data = json.loads(ok.to_json())
    (dep,) = data["deployments"]
    assert dep["init_args"] == [{"kind": "const", "value": {"layers": [1, 2], "name": "m"}}]
    assert dep["init_kwargs"] == {"threshold": {"kind": "const", "value": 0.25}}


def test_nan_constant_is_not_json() -> None:
    plan = gs.build(plan_graphs.configured_app(float("nan")))
    (arg,) = plan.deployment("Configured").init_args
    assert isinstance(arg, ConstValue) and arg.value != arg.value  # NaN
    with pytest.raises(gs.PlanError, match="constructor argument 0 \\(float\\) is not JSON"):
        plan.to_json()


def test_deployments_defined_in_a_function_run_in_process_but_cannot_be_written() -> None:
    @gs.deployment
    class Local:
        async def __call__(self, x: float) -> float:
            return x + 1

    with gs.InputNode() as inp:
        app = gs.graph(Local.bind().__call__.bind(inp["x"]), name="local")
    plan = gs.build(app)
    with pytest.raises(gs.PlanError) as caught:
        plan.to_json()
    message = str(caught.value)
    assert "deployment 'Local'" in message and "<locals>" in message and "module level" in message
    handle = GraphHandle(plan)
    try:
        assert handle.call({"x": 1}) == 2
    finally:
        handle.shutdown()


def test_a_lambda_glue_names_the_glue_node() -> None:
    with gs.InputNode() as inp:
        score = plan_graphs.Embed.bind().__call__.bind(inp["text"])
        flag = gs.glue(lambda s: s > 2).bind(score)
        app = gs.graph(flag, name="lambda")
    with pytest.raises(gs.PlanError, match=r"glue node '.*' is .*<lambda>.*define it at module level"):
        gs.build(app).to_json()


def test_import_object_errors_are_clear() -> None:
    assert import_object("tests.graphs.plan_graphs:is_big") is plan_graphs.is_big
    assert import_object("tests.graphs.plan_graphs.is_big") is plan_graphs.is_big
    with pytest.raises(gs.PlanError, match="no attribute 'nope'"):
        import_object("tests.graphs.plan_graphs:nope")
    with pytest.raises(gs.PlanError, match="cannot import 'no_such_module_xyz:thing'"):
        import_object("no_such_module_xyz:thing")
    # a plan file's deployment whose module fails while it is imported: what it raised, where
    with pytest.raises(gs.PlanError, match=r"raises_at_import raised RuntimeError: the model file .* \(at .*:\d+\)$"):
        import_object("tests.graphs.raises_at_import:Never")
