"""The MLflow model registry pattern from Ray Serve's docs, written as Ray Serve code with only
the import changed: the body is raw CSV text, read with pandas; the model comes from a
``models:/name/version`` URI (tests train and register it in a temporary local store)."""

from io import StringIO

import mlflow.pyfunc
import pandas as pd

import graphserve as serve


@serve.deployment
class MLflowDeployment:
    def __init__(self, model_uri):
        self.model = mlflow.pyfunc.load_model(model_uri=model_uri)

    async def __call__(self, request):
        csv_text = await request.body()  # The body contains just raw csv text.
        df = pd.read_csv(StringIO(csv_text.decode("utf-8")))
        return self.model.predict(df)
