"""A graph whose output holds numpy arrays and scalars, a torch tensor and a pydantic model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

import graphserve as gs


class Summary(BaseModel):
    n: int
    mean: float


@gs.deployment
class Stats:
    def __init__(self) -> None:
        self.weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    async def __call__(self, values: list[float]) -> dict[str, Any]:
        array = np.asarray(values, dtype=np.float64)
        return {
            "array": array * 2,
            "transposed": np.arange(6).reshape(2, 3).T,  # not C-contiguous
            "half": array.astype(np.float16),
            "scalar": np.float32(array.sum()),
            "count": np.int64(len(values)),
            "tensor": self.weights * float(len(values)),
            "scalar_tensor": torch.tensor(array.sum()),
            "summary": Summary(n=len(values), mean=float(array.mean())),
            "tags": {"b", "a"},
        }


with gs.InputNode() as inp:
    stats = Stats.bind().__call__.bind(inp["values"])
tensor_app = gs.graph(stats, name="tensors")
