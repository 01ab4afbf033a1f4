"""What a Ray Serve style ingress may return, and how it reaches the client; plus a deployment
with Ray Serve options graphserve accepts but ignores (each warns once)."""

import numpy as np
import pandas as pd
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

import graphserve as serve


@serve.deployment
def outputs(request: Request):
    kind = request.query_params["kind"]
    if kind == "text":
        return "hello"
    if kind == "bytes":
        return b"\x00\x01raw"
    if kind == "response":
        return PlainTextResponse("teapot", status_code=418, headers={"X-From": "app"})
    if kind == "json_response":
        return JSONResponse({"ok": True}, status_code=201)
    if kind == "array":
        return np.arange(3) * 1.5
    if kind == "scalar":
        return np.float32(2.5)
    if kind == "frame":
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    if kind == "series":
        return pd.Series([3, 4])
    return {"method": request.method, "headers": request.headers.get("x-custom")}


@serve.deployment(
    autoscaling_config={"min_replicas": 1, "max_replicas": 4},
    user_config={"threshold": 0.5},
    ray_actor_options={"num_cpus": 0, "runtime_env": {"pip": ["scikit-learn"]}},
    health_check_period_s=5,
)
class Tolerant:
    def reconfigure(self, config):  # user_config arrives here (not an ignored option)
        self.threshold = config["threshold"]

    async def __call__(self, request):
        return {"ok": True}


app = outputs.bind()
tolerant_app = Tolerant.bind()
