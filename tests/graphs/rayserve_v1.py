"""Ray Serve 1.x examples (``serve.start()``, ``.deploy()``, ``.get_handle()``), written as
Ray Serve code with only the import changed: the "Serving ML Models" scikit-learn
regressor (GET with a JSON body) and the composition of two function deployments
reached through ``get_handle()`` in a constructor."""

import json
import pickle

import graphserve as serve

CALLS = {"model_one": 0, "model_two": 0}


@serve.deployment(route_prefix="/regressor")
class BoostingModel:
    def __init__(self, model_path, label_path):
        with open(model_path, "rb") as f:
            self.model = pickle.load(f)
        with open(label_path) as f:
            self.label_list = json.load(f)

    async def __call__(self, starlette_request):
        payload = await starlette_request.json()
        input_vector = [
            payload["sepal length"],
            payload["sepal width"],
            payload["petal length"],
            payload["petal width"],
        ]
        prediction = self.model.predict([input_vector])[0]
        human_name = self.label_list[prediction]
        return {"result": human_name}


@serve.deployment
def model_one(data):
    CALLS["model_one"] += 1
    return float(data)


@serve.deployment
def model_two(data):
    CALLS["model_two"] += 1
    return data


@serve.deployment(max_concurrent_queries=10, route_prefix="/composed")
class ComposedModel:
    def __init__(self):
        self.model_one = model_one.get_handle()
        self.model_two = model_two.get_handle()

    async def __call__(self, starlette_request):
        data = await starlette_request.body()
        score = await self.model_one.remote(data=data)
        if score > 0.5:
            await self.model_two.remote(data=data)
            result = {"model_used": 2, "score": score}
        else:
            result = {"model_used": 1, "score": score}
        return result
