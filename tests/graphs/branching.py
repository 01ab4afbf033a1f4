"""A branching graph for the planner, plan, render and CLI tests: a score, a ``gs.cond`` on a
glue predicate, a ``gs.switch`` on a field, a batched deployment, replicas and resources."""

from __future__ import annotations

from pydantic import BaseModel

import graphserve as gs


class Request(BaseModel):
    text: str
    route: str = "fast"


@gs.deployment(num_replicas=2, num_cpus=1)
class Scorer:
    async def __call__(self, text: str) -> float:
        return len(text) / 10


@gs.deployment(num_cpus=2, max_ongoing_requests=4)
class Heavy:
    def __init__(self, scale: int) -> None:
        self.scale = scale

    @gs.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def run(self, texts: list[str]) -> list[str]:
        return [t.upper() * self.scale for t in texts]


@gs.deployment
def light(text: str) -> str:
    return text.lower()


@gs.deployment
class Fast:
    async def __call__(self, text: str) -> str:
        return "fast:" + text


@gs.deployment
class Slow:
    async def __call__(self, text: str) -> str:
        return "slow:" + text


def is_long(score: float) -> bool:
    return score > 0.5


with gs.InputNode(schema=Request) as inp:
    score = Scorer.bind().__call__.bind(inp.text)
    chosen = gs.cond(gs.glue(is_long).bind(score), Heavy.bind(2).run.bind(inp.text), light.bind(inp.text))
    routed = gs.switch(
        inp.route, {"fast": Fast.bind().__call__.bind(inp.text), "slow": Slow.bind().__call__.bind(inp.text)}
    )

app = gs.graph({"score": score, "chosen": chosen, "routed": routed}, name="branching", route_prefix="/branching")
