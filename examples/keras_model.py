"""A Keras 3 model on the PyTorch backend (no TensorFlow), trained on tiny generated data.

The model learns whether a point of the plane lies inside the unit circle, from 2,000
random points (generated with a fixed seed; nothing is downloaded). It is trained on first
start and saved as a ``.keras`` file under ``$GRAPHSERVE_CACHE/keras_model``.
``KERAS_BACKEND=torch`` is set when this module is imported, before anything imports keras.

Serve it:   graphserve deploy examples.keras_model:app
Request:    POST /  {"x": 0.3, "y": -0.2}
Response:   {"inside": true, "probability": 0.9998}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # must precede the first `import keras` (keras then never imports TensorFlow)

from pydantic import BaseModel

import graphserve as gs
from examples.common import cache_dir, train_lock

EXAMPLE = "keras_model"


class Point(BaseModel):
    x: float
    y: float


def make_data(n: int = 2000, seed: int = 0) -> tuple[Any, Any]:
    """``n`` points uniform in [-1.5, 1.5]^2 and whether each is inside the unit circle."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.5, 1.5, size=(n, 2)).astype("float32")
    inside = ((points**2).sum(axis=1) < 1.0).astype("float32")
    return points, inside


def import_keras() -> Any:
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"keras was imported with the {keras.backend.backend()!r} backend before this example set "
            "KERAS_BACKEND=torch; import examples.keras_model first or set KERAS_BACKEND=torch"
        )
    return keras


def train(epochs: int = 40) -> Any:
    """A small dense network, trained quietly for a few seconds."""
    keras = import_keras()
    keras.utils.set_random_seed(0)
    points, inside = make_data()
    model = keras.Sequential(
        [
            keras.Input(shape=(2,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(points, inside, epochs=epochs, batch_size=128, verbose=0)
    return model


def load_or_train() -> Any:
    """The model from the cache, or trained now and saved there (atomically)."""
    keras = import_keras()
    path = cache_dir(EXAMPLE) / "circle.keras"
    with train_lock(EXAMPLE):
        if path.exists():
            return keras.saving.load_model(path)
        model = train()
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            staged = Path(tmp) / path.name
            model.save(staged)
            os.replace(staged, path)
        return model


@gs.deployment
class CircleModel:
    def __init__(self) -> None:
        import numpy as np

        self.np = np
        self.model = load_or_train()

    def __call__(self, x: float, y: float) -> dict[str, Any]:
        batch = self.np.array([[x, y]], dtype="float32")
        probability = float(self.model(batch, training=False).detach().cpu().numpy()[0, 0])
        return {"inside": probability > 0.5, "probability": round(probability, 4)}


with gs.InputNode(schema=Point) as inp:
    app = gs.graph(CircleModel.bind().__call__.bind(inp.x, inp.y), name="keras_model")
