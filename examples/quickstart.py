"""Quickstart: a cheap scorer, and an expensive model that runs only for high scores.

Serve it:   graphserve deploy examples.quickstart:app
Request:    POST /  {"text": "graphserve makes graphs fast"}
Response:   {"score": 0.83, "result": {"label": "long", "words": 4}}
            (the "detailed" model runs only when score > 0.5; otherwise result is
            {"label": "short"} and the detailed model is never called)
"""

from __future__ import annotations

from pydantic import BaseModel

import graphserve as gs


class Request(BaseModel):
    text: str


@gs.deployment
class Scorer:
    """Cheap: the share of characters that are letters."""

    async def __call__(self, text: str) -> float:
        return round(sum(c.isalpha() for c in text) / max(len(text), 1), 3)


@gs.deployment(num_replicas=2)
class Detailed:
    """Expensive (pretend): counts words."""

    async def analyze(self, text: str) -> dict[str, object]:
        return {"label": "long", "words": len(text.split())}


@gs.deployment
def short(text: str) -> dict[str, object]:
    return {"label": "short"}


with gs.InputNode(schema=Request) as inp:
    score = Scorer.bind().__call__.bind(inp.text)
    result = gs.cond(score > 0.5, Detailed.bind().analyze.bind(inp.text), short.bind(inp.text))

app = gs.graph({"score": score, "result": result}, name="quickstart")
