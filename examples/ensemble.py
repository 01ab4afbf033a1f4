"""Ensemble: three regressors predict in parallel on the same input; an aggregator averages them.

The members are scikit-learn models trained on scikit-learn's bundled diabetes dataset
(on first start; cached under ``$GRAPHSERVE_CACHE/ensemble``). Each member is its own
deployment with its own ``num_replicas`` (one ``Regressor`` class, three
``.options(name=..., num_replicas=...)``); they share a stage, so they run concurrently,
and ``Average`` waits for all three.

Serve it:   graphserve deploy examples.ensemble:app
Request:    POST /  {"features": [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]}
            (age, sex, bmi, bp, s1..s6 as scaled in sklearn.datasets.load_diabetes)
Response:   {"prediction": 198.62, "members": {"ridge": 199.85, "forest": 199.42, "knn": 196.6}}
            (disease progression one year after baseline; prediction = mean of the members)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs
from examples.common import cached_pickle

EXAMPLE = "ensemble"
MEMBERS = ("ridge", "forest", "knn")


class Request(BaseModel):
    features: list[float] = Field(min_length=10, max_length=10, description="the 10 scaled diabetes features")


def train(kind: str) -> Any:
    """Fit one member on the whole diabetes dataset."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor

    models = {
        "ridge": lambda: Ridge(alpha=0.1),
        "forest": lambda: RandomForestRegressor(n_estimators=50, max_depth=6, random_state=0),
        "knn": lambda: KNeighborsRegressor(n_neighbors=15),
    }
    if kind not in models:
        raise ValueError(f"unknown ensemble member {kind!r}: expected one of {sorted(models)}")
    data = load_diabetes()
    return models[kind]().fit(data.data, data.target)


@gs.deployment
class Regressor:
    """One member of the ensemble; ``kind`` picks the model."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.model = cached_pickle(EXAMPLE, kind, lambda: train(kind))

    def predict(self, features: list[float]) -> float:
        return round(float(self.model.predict([features])[0]), 2)


@gs.deployment
class Average:
    """The aggregator: the mean of the members' predictions, and each of them."""

    def __call__(self, members: dict[str, float]) -> dict[str, Any]:
        return {"prediction": round(sum(members.values()) / len(members), 2), "members": members}


with gs.InputNode(schema=Request) as inp:
    ridge = Regressor.options(name="ridge", num_replicas=1).bind("ridge")
    forest = Regressor.options(name="forest", num_replicas=2).bind("forest")  # the slowest member gets 2
    knn = Regressor.options(name="knn", num_replicas=1).bind("knn")
    members = {name: node.predict.bind(inp.features) for name, node in zip(MEMBERS, (ridge, forest, knn), strict=True)}
    app = gs.graph(Average.bind().__call__.bind(members), name="ensemble")
