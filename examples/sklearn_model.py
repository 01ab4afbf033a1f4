"""A scikit-learn pipeline (scaling, PCA, logistic regression) on the bundled wine dataset.

Trained on first start and cached (pickled) under ``$GRAPHSERVE_CACHE/sklearn_model``.

Serve it:   graphserve deploy examples.sklearn_model:app
Request:    POST /  {"features": [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]}
            (the 13 measurements of sklearn.datasets.load_wine, in its feature order:
            alcohol, malic_acid, ash, ..., proline)
Response:   {"cultivar": "class_0", "probabilities": {"class_0": 0.9714, "class_1": 0.0283, "class_2": 0.0003}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs
from examples.common import cached_pickle

EXAMPLE = "sklearn_model"


class Request(BaseModel):
    features: list[float] = Field(min_length=13, max_length=13, description="the 13 wine measurements")


def train() -> Any:
    """Fit the pipeline on the wine dataset; the class names ride along on the pipeline."""
    from sklearn.datasets import load_wine
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    pipeline = make_pipeline(StandardScaler(), PCA(n_components=5), LogisticRegression(max_iter=1000))
    pipeline.fit(wine.data, wine.target)
    pipeline.class_names_ = [str(name) for name in wine.target_names]
    return pipeline


@gs.deployment
class WineClassifier:
    def __init__(self) -> None:
        self.pipeline = cached_pickle(EXAMPLE, "pipeline", train)

    def __call__(self, features: list[float]) -> dict[str, Any]:
        probabilities = self.pipeline.predict_proba([features])[0]
        names = self.pipeline.class_names_
        return {
            "cultivar": names[int(probabilities.argmax())],
            "probabilities": {name: round(float(p), 4) for name, p in zip(names, probabilities, strict=True)},
        }


with gs.InputNode(schema=Request) as inp:
    app = gs.graph(WineClassifier.bind().__call__.bind(inp.features), name="sklearn_model")
