"""The examples (examples/*.py) deployed on a real HTTP server, checked with real predictions.

The examples that train bigger models (PyTorch, Keras, MLflow, RLlib) are in
test_examples_models.py. Every test here starts from an empty model cache, so the
example trains its models as a newcomer's first ``graphserve deploy`` would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.examples_utils import metric, use_empty_cache
from tests.serving_utils import running_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["batching", "composition", "ensemble", "keras_model", "model_registry", "pytorch_model", "rllib_policy"]
EXAMPLES += ["sklearn_model", "quickstart"]
HEAVY = ["torch", "keras", "mlflow", "ray", "sklearn", "tensorflow", "numpy"]


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_empty_cache(tmp_path, monkeypatch)


def post(url: str, body: object, path: str = "/") -> dict:
    response = httpx.post(url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_examples_import_cheaply_and_build(model_cache: Path) -> None:
    """Importing an example and building its plan trains nothing and imports no ML framework."""
    script = f"""
import json, sys
import graphserve as gs
from graphserve.targets import load_app
plans = {{}}
for name in {EXAMPLES!r}:
    for attr in ["app", "app_handles"] if name == "composition" else ["app"]:
        plan = gs.build(load_app(f"examples.{{name}}:{{attr}}"))
        plans[f"{{name}}:{{attr}}"] = {{d.name: d.num_replicas for d in plan.deployments}}
print(json.dumps({{"plans": plans, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["heavy"] == []
    assert not model_cache.exists() or not any(model_cache.rglob("*.*")), "building an example trained a model"
    plans = result["plans"]
    assert set(plans) == {f"{n}:app" for n in EXAMPLES} | {"composition:app_handles"}
    assert plans["ensemble:app"] == {"ridge": 1, "forest": 2, "knn": 1, "Average": 1}
    assert plans["model_registry:app"] == {"iris_v1": 1, "iris_v2": 1}
    assert plans["composition:app_handles"] == {"Cascade": 1, "Screen": 1, "Specialist": 1}


async def test_batching_forms_batches_under_concurrent_load(model_cache: Path) -> None:
    with running_server("examples.batching:app") as url:
        alone = post(url, {"x": 1.5})
        assert alone == {"y": 3.0, "batch_size": 1}  # nobody to share a batch with: sent after the wait bound

        n = 48
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
            responses = await asyncio.gather(*(client.post(url + "/", json={"x": i}) for i in range(n)))
        assert [r.status_code for r in responses] == [200] * n
        results = [r.json() for r in responses]
        assert [r["y"] for r in results] == [2.0 * i for i in range(n)]
        sizes = [r["batch_size"] for r in results]
        assert max(sizes) > 1
        assert max(sizes) <= 16  # max_batch_size
        # the batches the server reports agree with what the responses say
        labels = {"graph": "batching", "deployment": "Doubler"}
        assert metric(url, "graphserve_batch_size_sum", **labels) == n + 1
        batches = metric(url, "graphserve_batch_size_count", **labels)
        assert batches == 1 + sum(1 / s for s in sizes)  # each batch of size s answered s requests
        assert batches < n + 1

        bad = httpx.post(url + "/", json={"x": "three"}, timeout=30)
        assert bad.status_code == 422


def _iris_rows() -> list[tuple[list[float], str]]:
    from sklearn.datasets import load_iris

    iris = load_iris()
    return [([float(v) for v in row], str(iris.target_names[t])) for row, t in zip(iris.data, iris.target, strict=True)]


def test_composition_runs_model_two_only_for_high_scores(model_cache: Path) -> None:
    rows = _iris_rows()
    setosas = [r for r in rows if r[1] == "setosa"][:10]
    others = [r for r in rows if r[1] != "setosa"][::5]  # 20 versicolors and virginicas
    with running_server(["examples.composition:app", "examples.composition:app_handles"]) as url:
        for path in ("/composition", "/composition_handles"):
            for features, _species in setosas:
                answer = post(url, {"features": features}, path)
                assert answer["score"] <= 0.5
                assert answer["result"] == {"species": "setosa"}  # no specialist_calls: model two did not run
            correct = 0
            for i, (features, species) in enumerate(others, start=1):
                answer = post(url, {"features": features}, path)
                assert answer["score"] > 0.5
                # the specialist counts its calls: it ran for these requests and for no setosa before them
                assert answer["result"]["specialist_calls"] == i
                correct += answer["result"]["species"] == species
            assert correct >= 0.9 * len(others)

        # the static graph's per-node latency histograms count the calls too
        calls = {
            node: metric(url, "graphserve_node_latency_seconds_count", graph="composition", node=node)
            for node in ("Screen.__call__", "Specialist.__call__")
        }
        assert calls == {"Screen.__call__": len(setosas) + len(others), "Specialist.__call__": len(others)}
        assert sorted(p.name for p in (model_cache / "composition").iterdir()) == ["screen.pkl", "specialist.pkl"]


def test_ensemble_averages_members_running_with_their_own_replicas(model_cache: Path) -> None:
    from sklearn.datasets import load_diabetes

    from examples.ensemble import MEMBERS, train

    data = load_diabetes()
    rows = list(range(0, len(data.target), 11))  # 41 patients
    local = {kind: train(kind) for kind in MEMBERS}  # the same training, run here, to compare with
    with running_server("examples.ensemble:app") as url:
        plan = httpx.get(url + "/-/graphs/ensemble.json", timeout=30).json()
        replicas = {d["name"]: d["num_replicas"] for d in plan["deployments"]}
        assert replicas == {"ridge": 1, "forest": 2, "knn": 1, "Average": 1}

        errors, baseline = [], []
        for i in rows:
            features = [float(v) for v in data.data[i]]
            answer = post(url, {"features": features})
            members = answer["members"]
            assert set(members) == set(MEMBERS)
            for kind in MEMBERS:
                assert members[kind] == pytest.approx(float(local[kind].predict([features])[0]), abs=0.01)
            assert answer["prediction"] == pytest.approx(sum(members.values()) / 3, abs=0.01)
            errors.append((answer["prediction"] - data.target[i]) ** 2)
            baseline.append((data.target.mean() - data.target[i]) ** 2)
        assert sum(errors) < 0.6 * sum(baseline)  # R^2 > 0.4 on (training) patients
        assert httpx.post(url + "/", json={"features": [0.0] * 9}, timeout=30).status_code == 422


def test_sklearn_pipeline_classifies_wines_and_caches_the_model(model_cache: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine()
    names = [str(n) for n in wine.target_names]
    with running_server("examples.sklearn_model:app") as url:
        correct = 0
        for row, target in zip(wine.data[::4], wine.target[::4], strict=True):
            answer = post(url, {"features": [float(v) for v in row]})
            assert set(answer["probabilities"]) == set(names)
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=0.01)
            assert answer["cultivar"] == max(answer["probabilities"], key=answer["probabilities"].get)
            correct += answer["cultivar"] == names[target]
        assert correct >= 0.9 * len(wine.data[::4])
        first = post(url, {"features": [float(v) for v in wine.data[0]]})
    cached = model_cache / "sklearn_model" / "pipeline.pkl"
    stamp = cached.stat().st_mtime_ns
    with running_server("examples.sklearn_model:app") as url:  # second start: loads the cached pipeline
        assert post(url, {"features": [float(v) for v in wine.data[0]]}) == first
    assert cached.stat().st_mtime_ns == stamp
