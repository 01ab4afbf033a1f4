"""An invalid graph with two problems (a type mismatch and an unknown method) for the CLI tests."""

from __future__ import annotations

import graphserve as gs


@gs.deployment
class Words:
    async def __call__(self, text: str) -> str:
        return text


@gs.deployment
class Counter:
    async def __call__(self, n: int) -> int:
        return n + 1


with gs.InputNode() as inp:
    words = Words.bind().__call__.bind(inp["text"])
    counted = Counter.bind().__call__.bind(words)  # str into int: GS104
    missing = Counter.bind().nothing_here.bind(inp["n"])  # no such method: GS102

app = gs.graph([counted, missing], name="invalid")
