"""An RLlib policy: PPO trained on CartPole for a few iterations, then served (observation in, action out).

On first start, ``train()`` starts a small local Ray instance (2 CPUs, no dashboard, on
127.0.0.1), trains PPO on gymnasium's ``CartPole-v1`` for ``ITERATIONS`` iterations
(RLlib's new API stack; everything runs in this process: no remote env runners or
learners; about half a minute on a laptop), saves the policy's RLModule under
``$GRAPHSERVE_CACHE/rllib_policy/policy`` and shuts Ray down again (a Ray instance that
was already running is left alone). Serving needs no Ray: each replica loads the RLModule
with ``RLModule.from_checkpoint`` and acts greedily (the most likely action).

Serve it:   graphserve deploy examples.rllib_policy:app
Request:    POST /  {"observation": [0.02, -0.01, 0.03, 0.04]}
            (cart position, cart velocity, pole angle, pole angular velocity)
Response:   {"action": 1}          (0 pushes the cart left, 1 pushes it right)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import graphserve as gs
from examples.common import cache_dir, train_lock

EXAMPLE = "rllib_policy"
ENV = "CartPole-v1"
ITERATIONS = 8


class Observation(BaseModel):
    observation: list[float] = Field(min_length=4, max_length=4, description="CartPole-v1 observation")


def train(iterations: int = ITERATIONS) -> Path:
    """Train PPO on CartPole (once: later calls find the saved policy); returns the RLModule's directory."""
    path = cache_dir(EXAMPLE) / "policy"
    with train_lock(EXAMPLE):
        if path.exists():
            return path
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig

        config = (
            PPOConfig()
            .environment(ENV)
            .env_runners(num_env_runners=0)  # sample in this process
            .learners(num_learners=0)  # learn in this process
            .training(train_batch_size_per_learner=1000, minibatch_size=250, num_epochs=6, lr=3e-4)
            .debugging(seed=0)
        )
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(
                address="local",  # a new instance: never a cluster another process on this machine runs
                num_cpus=2,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level="warning",
                log_to_driver=False,
            )
        try:
            algo = config.build_algo()
            try:
                for _ in range(iterations):
                    algo.train()
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    staged = Path(tmp) / "policy"
                    algo.get_module().save_to_path(str(staged))
                    os.replace(staged, path)
            finally:
                algo.stop()
        finally:
            if started_ray:
                ray.shutdown()
        return path


@gs.deployment
class CartPolePolicy:
    def __init__(self) -> None:
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        self.torch = torch
        self.module: Any = RLModule.from_checkpoint(str(train()))

    def __call__(self, observation: list[float]) -> dict[str, int]:
        torch = self.torch
        with torch.inference_mode():
            out = self.module.forward_inference({"obs": torch.tensor([observation], dtype=torch.float32)})
        return {"action": int(out["action_dist_inputs"].argmax(dim=-1)[0])}


with gs.InputNode(schema=Observation) as inp:
    app = gs.graph(CartPolePolicy.bind().__call__.bind(inp.observation), name="rllib_policy")
