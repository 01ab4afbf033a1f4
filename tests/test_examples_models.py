"""The examples that train bigger models, deployed on a real HTTP server and checked with real predictions:
PyTorch (with batching), Keras 3 on the torch backend, MLflow's model registry, and an RLlib policy.

Every test starts from an empty model cache, so the example trains for real (a few
seconds each; RLlib about half a minute).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.examples_utils import metric, use_empty_cache
from tests.serving_utils import running_server

pytestmark = pytest.mark.slow


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_empty_cache(tmp_path, monkeypatch)


def post(client: httpx.Client, url: str, body: object) -> dict:
    response = client.post(url + "/", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_pytorch_digits_batched(model_cache: Path) -> None:
    pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    from examples.pytorch_model import NUM_GPUS

    digits = load_digits()
    n = 240
    rows = range(0, len(digits.target), len(digits.target) // n)[:n]
    with running_server("examples.pytorch_model:app") as url:
        plan = httpx.get(url + "/-/graphs/pytorch_model.json", timeout=30).json()
        assert plan["deployments"][0]["resources"]["num_gpus"] == NUM_GPUS
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            responses = await asyncio.gather(
                *(client.post(url + "/", json={"pixels": [float(v) for v in digits.data[i]]}) for i in rows)
            )
        assert [r.status_code for r in responses] == [200] * n
        answers = [r.json() for r in responses]
        correct = sum(a["digit"] == digits.target[i] for a, i in zip(answers, rows, strict=True))
        assert correct >= 0.9 * n
        assert all(0.0 < a["probability"] <= 1.0 for a in answers)
        batches = metric(url, "graphserve_batch_size_count", graph="pytorch_model", deployment="DigitClassifier")
        assert metric(url, "graphserve_batch_size_sum", graph="pytorch_model", deployment="DigitClassifier") == n
        assert batches < n  # some requests shared a forward pass
        assert httpx.post(url + "/", json={"pixels": [0.0] * 63}, timeout=30).status_code == 422
    assert (model_cache / "pytorch_model" / "digits_mlp.pt").is_file()


def test_keras_circle(model_cache: Path) -> None:
    import examples.keras_model  # noqa: F401  (sets KERAS_BACKEND=torch before keras is first imported)

    pytest.importorskip("keras")
    import numpy as np

    rng = np.random.default_rng(1234)  # not the training seed: points the model has not seen
    points = rng.uniform(-1.5, 1.5, size=(100, 2))
    with running_server("examples.keras_model:app") as url, httpx.Client(timeout=60) as client:
        correct = 0
        for x, y in points:
            answer = post(client, url, {"x": float(x), "y": float(y)})
            assert answer["inside"] == (answer["probability"] > 0.5)
            correct += answer["inside"] == bool(x * x + y * y < 1.0)
        assert correct >= 90
        assert post(client, url, {"x": 0.0, "y": 0.0})["inside"] is True
        assert post(client, url, {"x": 1.4, "y": 1.4})["inside"] is False
    assert (model_cache / "keras_model" / "circle.keras").is_file()


@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")  # mlflow, at import
@pytest.mark.filterwarnings("ignore:`y_pred` was renamed to `y_proba`:FutureWarning")  # sklearn, in mlflow's autolog
def test_mlflow_model_registry_two_versions(model_cache: Path) -> None:
    pytest.importorskip("mlflow")
    from sklearn.datasets import load_iris
    from sklearn.ensemble import GradientBoostingClassifier

    from examples import model_registry as example

    iris = load_iris()
    names = [str(n) for n in iris.target_names]
    fields = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with running_server("examples.model_registry:app") as url, httpx.Client(timeout=60) as client:
        for version, params in example.VERSIONS.items():
            # the same estimator fitted here: the served version must agree with it on every flower
            reference = GradientBoostingClassifier(random_state=0, **params).fit(iris.data, iris.target)
            expected = reference.predict(iris.data)
            served = [
                post(client, url, {**dict(zip(fields, map(float, row), strict=True)), "version": version})["result"]
                for row in iris.data
            ]
            assert served == [names[i] for i in expected]
        newest = post(client, url, dict(zip(fields, map(float, iris.data[120]), strict=True)))
        assert newest == {"result": names[expected[120]]}  # no version: the newest (2)
        assert client.post(url + "/", json={**dict.fromkeys(fields, 1.0), "version": 3}).status_code == 422

    # what the example left in its local MLflow store: two registered versions, autologged, with labels
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=example.tracking_uri(), registry_uri=example.tracking_uri())
    versions = sorted(client.search_model_versions(f"name='{example.REGISTERED_MODEL}'"), key=lambda v: v.version)
    assert [int(v.version) for v in versions] == [1, 2]
    for mv, params in zip(versions, example.VERSIONS.values(), strict=True):
        run = client.get_run(mv.run_id)
        assert run.data.params["n_estimators"] == str(params["n_estimators"])  # logged by autolog
        assert "training_accuracy_score" in run.data.metrics
        local = client.download_artifacts(mv.run_id, "labels.json", str(model_cache / f"labels-{mv.version}"))
        assert Path(local).read_text().count("versicolor") == 1
    assert (model_cache / "model_registry" / "mlflow.db").is_file()


def test_rllib_policy_balances_the_pole(model_cache: Path) -> None:
    pytest.importorskip("ray.rllib")
    import gymnasium as gym

    with running_server("examples.rllib_policy:app") as url, httpx.Client(timeout=60) as client:
        env = gym.make("CartPole-v1")
        returns = []
        for seed in (1, 2, 3):
            observation, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:  # bounded: CartPole-v1 truncates episodes at 500 steps
                action = post(client, url, {"observation": [float(v) for v in observation]})["action"]
                assert action in (0, 1)
                observation, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
        # a random policy keeps the pole up for about 22 steps; the trained one for far longer
        assert sum(returns) / len(returns) >= 60, returns
        assert client.post(url + "/", json={"observation": [0.0, 0.0]}).status_code == 422
    assert (model_cache / "rllib_policy" / "policy").is_dir()
