"""Graphs for the live page's tests: a switch (one arm skipped), a batched deployment, and a
node that fails when asked to (a 500 naming it)."""

from __future__ import annotations

from pydantic import BaseModel

import graphserve as gs


class Query(BaseModel):
    text: str
    fail: bool = False


@gs.deployment
class Classifier:
    async def __call__(self, text: str) -> str:
        return "long" if len(text) > 5 else "short"


@gs.deployment
class Embed:
    @gs.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def __call__(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]


@gs.deployment(num_replicas=2)
def long_path(n: int, fail: bool) -> dict[str, object]:
    if fail:
        raise ValueError("asked to fail")
    return {"path": "long", "n": n}


@gs.deployment
def short_path(n: int) -> dict[str, object]:
    return {"path": "short", "n": n}


def make_app(name: str = "page_demo") -> gs.App:
    with gs.InputNode(schema=Query) as inp:
        kind = Classifier.bind().__call__.bind(inp.text)
        n = Embed.bind().__call__.bind(inp.text)
        out = gs.switch(kind, {"long": long_path.bind(n, inp.fail), "short": short_path.bind(n)})
    return gs.graph(out, name=name)


app = make_app()
