"""Serving models from an MLflow model registry: two versions, two named deployments.

On first start, ``train()`` fits two versions of an iris GradientBoostingClassifier with
``mlflow.sklearn.autolog()`` (which logs the parameters, metrics and model, and registers
each fitted model as a new version of ``iris-classifier``) and logs the class names as a
``labels.json`` artifact of each run. Everything lives in a local MLflow store under
``$GRAPHSERVE_CACHE/model_registry``: a SQLite file (``mlflow.db``, runs and registry)
and an ``artifacts/`` directory. No server, nothing downloaded. (MLflow 3 refuses the
old plain-directory ``./mlruns`` store unless told otherwise, so the store is SQLite.)

Each deployment loads its model by URI (``models:/iris-classifier/<version>``) with
``mlflow.pyfunc.load_model`` in its constructor. ``IrisModel.options(name=...)`` makes two
deployments of the same class, ``iris_v1`` and ``iris_v2``; the request's ``version``
picks one (``gs.switch``: the other does not run).

Serve it:   graphserve deploy examples.model_registry:app
Request:    POST /  {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
            optional "version": 1 or 2 (default 2, the newest)
Response:   {"result": "virginica"}
Browse the store:  mlflow ui --backend-store-uri sqlite:///.gs-cache/model_registry/mlflow.db
"""

from __future__ import annotations

import shutil
from typing import Any, Literal

from pydantic import BaseModel

import graphserve as gs
from examples.common import atomic_write_json, cache_dir, train_lock

EXAMPLE = "model_registry"
REGISTERED_MODEL = "iris-classifier"
EXPERIMENT = "iris"
#: Hyperparameters of each registered version (version 1 is deliberately small).
VERSIONS = {1: {"n_estimators": 5, "max_depth": 1}, 2: {"n_estimators": 50, "max_depth": 2}}


class Flower(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float
    version: Literal[1, 2] = 2


def tracking_uri() -> str:
    return f"sqlite:///{(cache_dir(EXAMPLE) / 'mlflow.db').resolve()}"


def model_uri(version: int) -> str:
    return f"models:/{REGISTERED_MODEL}/{version}"


def use_store() -> Any:
    """Point MLflow (tracking and registry) at the local store; returns the mlflow module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return mlflow


def train() -> dict[int, str]:
    """Train and register every version (once: later calls find them); returns version -> URI."""
    done = cache_dir(EXAMPLE) / "versions.json"
    with train_lock(EXAMPLE):
        if done.exists():
            return {int(v): model_uri(int(v)) for v in VERSIONS}
        # A store without the marker is left over from an interrupted training: start afresh,
        # so that the versions get the numbers 1 and 2 again.
        (cache_dir(EXAMPLE) / "mlflow.db").unlink(missing_ok=True)
        shutil.rmtree(cache_dir(EXAMPLE) / "artifacts", ignore_errors=True)
        mlflow = use_store()
        from sklearn.datasets import load_iris
        from sklearn.ensemble import GradientBoostingClassifier

        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            artifacts = (cache_dir(EXAMPLE) / "artifacts").resolve()
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
        mlflow.set_experiment(EXPERIMENT)
        iris = load_iris()
        labels = [str(name) for name in iris.target_names]
        mlflow.sklearn.autolog(registered_model_name=REGISTERED_MODEL, log_input_examples=False, silent=True)
        try:
            for version, params in VERSIONS.items():
                with mlflow.start_run(run_name=f"{REGISTERED_MODEL}-v{version}"):
                    GradientBoostingClassifier(random_state=0, **params).fit(iris.data, iris.target)
                    mlflow.log_dict({"labels": labels}, "labels.json")
        finally:
            mlflow.sklearn.autolog(disable=True)
        atomic_write_json(done, {str(v): model_uri(v) for v in VERSIONS})
        return {v: model_uri(v) for v in VERSIONS}


@gs.deployment
class IrisModel:
    """Serves one registered model version, loaded by URI."""

    def __init__(self, uri: str) -> None:
        train()  # no-op once the store has the versions
        mlflow = use_store()
        self.model = mlflow.pyfunc.load_model(uri)
        run_id = self.model.metadata.run_id
        self.labels = mlflow.artifacts.load_dict(f"runs:/{run_id}/labels.json")["labels"]

    def predict(
        self, sepal_length: float, sepal_width: float, petal_length: float, petal_width: float
    ) -> dict[str, str]:
        import numpy as np

        features = np.array([[sepal_length, sepal_width, petal_length, petal_width]], dtype=np.float64)
        return {"result": self.labels[int(self.model.predict(features)[0])]}


with gs.InputNode(schema=Flower) as inp:
    features = (inp.sepal_length, inp.sepal_width, inp.petal_length, inp.petal_width)
    v1 = IrisModel.options(name="iris_v1").bind(model_uri(1))
    v2 = IrisModel.options(name="iris_v2").bind(model_uri(2))
    app = gs.graph(
        gs.switch(inp.version, {1: v1.predict.bind(*features), 2: v2.predict.bind(*features)}),
        name="model_registry",
    )
