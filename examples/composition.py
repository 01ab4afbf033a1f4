"""Model composition: model one scores every request; model two runs only when the score is above 0.5.

Two iris models (scikit-learn's bundled dataset, trained on first start and cached under
``$GRAPHSERVE_CACHE/composition``):

- ``Screen`` (model one, cheap): the probability that the flower is *not* a setosa.
- ``Specialist`` (model two): versicolor or virginica? It was trained on those two species
  only, so it must not see setosas: it runs only when the screen's score is above 0.5.

The same cascade is written twice:

- ``app``: a static graph; ``gs.cond`` skips the branch it does not take, so the
  specialist is never called for a setosa.
- ``app_handles``: a composing deployment (``Cascade``) that receives handles to both
  models in its constructor and decides in Python, as in Ray Serve's model composition.

Serve it:   graphserve deploy examples.composition:app
            graphserve deploy examples.composition:app_handles
Request:    POST /  {"features": [6.3, 3.3, 6.0, 2.5]}
            (sepal length, sepal width, petal length, petal width, in cm)
Response:   {"score": 0.9994, "result": {"species": "virginica", "confidence": 1.0, "specialist_calls": 1}}
            for a setosa, e.g. [5.1, 3.5, 1.4, 0.2]:
            {"score": 0.0143, "result": {"species": "setosa"}}        (the specialist did not run)
            specialist_calls counts the calls the specialist replica has answered, so a
            client can see that setosas never reach it.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs
from examples.common import cached_pickle

EXAMPLE = "composition"
THRESHOLD = 0.5


class Request(BaseModel):
    features: list[float] = Field(min_length=4, max_length=4, description="sepal/petal length and width, cm")


def train_screen() -> Any:
    """Model one: logistic regression, label 1 = not a setosa."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(iris.data, iris.target != 0)


def train_specialist() -> Any:
    """Model two: a decision tree for versicolor (1) or virginica (2), trained without setosas."""
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    iris = load_iris()
    keep = iris.target != 0
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(iris.data[keep], iris.target[keep])
    model.species_ = [str(s) for s in iris.target_names]
    return model


@gs.deployment
class Screen:
    """Model one: P(not a setosa)."""

    def __init__(self) -> None:
        self.model = cached_pickle(EXAMPLE, "screen", train_screen)

    def __call__(self, features: list[float]) -> float:
        return round(float(self.model.predict_proba([features])[0, 1]), 4)


@gs.deployment
class Specialist:
    """Model two: versicolor or virginica; counts the calls it answers."""

    def __init__(self) -> None:
        self.model = cached_pickle(EXAMPLE, "specialist", train_specialist)
        self._calls = itertools.count(1)  # next() is atomic: safe from the worker threads

    def __call__(self, features: list[float]) -> dict[str, Any]:
        probabilities = self.model.predict_proba([features])[0]
        best = int(probabilities.argmax())
        return {
            "species": self.model.species_[int(self.model.classes_[best])],
            "confidence": round(float(probabilities[best]), 4),
            "specialist_calls": next(self._calls),
        }


def setosa(score: float) -> dict[str, Any]:
    """What the graph answers when the screen says setosa (glue: runs inline, no model)."""
    return {"species": "setosa"}


# -- 1. a static graph: gs.cond runs only the branch it takes ------------------------------
with gs.InputNode(schema=Request) as inp:
    score = Screen.bind().__call__.bind(inp.features)
    result = gs.cond(
        score > THRESHOLD,
        Specialist.bind().__call__.bind(inp.features),
        gs.glue(setosa).bind(score),
    )

app = gs.graph({"score": score, "result": result}, name="composition")


# -- 2. handles inside a composing deployment --------------------------------------------
@gs.deployment
class Cascade:
    """Calls the screen, then the specialist only for high scores (Ray Serve style handles)."""

    def __init__(self, screen: Any, specialist: Any) -> None:
        self.screen = screen
        self.specialist = specialist

    async def __call__(self, features: list[float]) -> dict[str, Any]:
        score = await self.screen.remote(features)
        if score > THRESHOLD:
            result = await self.specialist.remote(features)
        else:
            result = setosa(score)
        return {"score": score, "result": result}


with gs.InputNode(schema=Request) as inp:
    cascade = Cascade.bind(Screen.bind(), Specialist.bind())
    app_handles = gs.graph(cascade.__call__.bind(inp.features), name="composition_handles")
