"""Ray Serve's model composition pattern, written as Ray Serve code with only the import changed.

The driver reads the raw body, asks model one for a score and calls model two only
when the score is above 0.5 (Ray Serve's "conditional composition"); each model
counts its calls.
"""

from starlette.requests import Request

import graphserve as serve


@serve.deployment
class ModelOne:
    def __init__(self):
        self.calls = 0

    def __call__(self, data: bytes) -> float:
        self.calls += 1
        return float(data.decode())  # the "score" is the request's number, so tests choose the branch

    def count(self):
        return self.calls


@serve.deployment
class ModelTwo:
    def __init__(self):
        self.calls = 0

    async def __call__(self, data: bytes, *, scale: float = 1.0) -> float:
        self.calls += 1
        return scale * float(data.decode()) * 10

    def count(self):
        return self.calls


@serve.deployment(max_concurrent_queries=10)
class Driver:
    def __init__(self, model_one, model_two):
        self.model_one = model_one
        self.model_two = model_two

    async def __call__(self, http_request: Request):
        data = await http_request.body()
        score = await self.model_one.remote(data)
        if score > 0.5:
            result = await self.model_two.remote(data, scale=2.0)
            return {"model_used": 2, "score": score, "result": result}
        return {"model_used": 1, "score": score}


app = Driver.bind(ModelOne.bind(), ModelTwo.bind())
