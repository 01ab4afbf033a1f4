"""A small PyTorch network, trained on first start, served with batching (on a GPU when there is one).

The network (an MLP, defined below) classifies the 8x8 handwritten digits that ship with
scikit-learn (``load_digits``). It is trained for a few epochs the first time a replica
starts and its weights are cached under ``$GRAPHSERVE_CACHE/pytorch_model``. Requests are
gathered into batches by ``@gs.batch`` and classified in one forward pass.
The deployment asks for ``num_gpus=1`` when this machine has a GPU (and then runs on
CUDA if ``torch.cuda.is_available()``), else for none, so the example runs on CPU too.

Serve it:   graphserve deploy examples.pytorch_model:app
Request:    POST /  {"pixels": [0, 0, 5, 13, 9, 1, 0, 0, ... 64 numbers in 0..16]}
            (an 8x8 grey image, row by row, as in sklearn.datasets.load_digits)
Response:   {"digit": 0, "probability": 0.9999}
"""

from __future__ import annotations

import io
from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs
from examples.common import atomic_write_bytes, cache_dir, train_lock
from graphserve.compiler import detect_cluster

EXAMPLE = "pytorch_model"
NUM_GPUS = 1 if detect_cluster().gpus >= 1 else 0  # reads /proc only: no torch import here


class Request(BaseModel):
    pixels: list[float] = Field(min_length=64, max_length=64, description="8x8 image, values 0..16")


def build_net() -> Any:
    """The network: 64 pixels -> 64 hidden units -> 10 digit logits."""
    from torch import nn

    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(epochs: int = 30, seed: int = 0) -> Any:
    """Train the network on load_digits (full-batch Adam, a second or two on a CPU); return it."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    net = build_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        for start in range(0, len(x), 256):
            optimizer.zero_grad()
            loss = loss_fn(net(x[start : start + 256]), y[start : start + 256])
            loss.backward()
            optimizer.step()
    return net.eval()


def load_or_train() -> Any:
    """The trained network, from the cache (weights only) or trained now and cached."""
    import torch

    path = cache_dir(EXAMPLE) / "digits_mlp.pt"
    with train_lock(EXAMPLE):
        if path.exists():
            net = build_net()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        net = train()
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return net


@gs.deployment(num_gpus=NUM_GPUS)
class DigitClassifier:
    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if NUM_GPUS and torch.cuda.is_available() else "cpu")
        self.net = load_or_train().to(self.device)

    @gs.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict(self, pixels: list[list[float]]) -> list[dict[str, Any]]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.tensor(pixels, dtype=torch.float32, device=self.device) / 16.0
            probabilities = torch.softmax(self.net(x), dim=1)
            best, digit = probabilities.max(dim=1)
        return [
            {"digit": int(d), "probability": round(float(p), 4)}
            for d, p in zip(digit.tolist(), best.tolist(), strict=True)
        ]


with gs.InputNode(schema=Request) as inp:
    app = gs.graph(DigitClassifier.bind().predict.bind(inp.pixels), name="pytorch_model")
