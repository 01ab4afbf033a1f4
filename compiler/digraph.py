"""A small directed graph for the IR, and the two algorithms the compiler runs on it.

:class:`DiGraph` keeps nodes with data and edges with data, in insertion order;
:func:`topological_order` sorts it (smallest ready node first, so the order is
deterministic); :func:`cycles` reports one cycle per knot of nodes that reach each other,
as the path that closes it (Dask's way of reporting a cycle).

networkx did this before, at a cost of about 0.1 s and 20 MB per process to import (it
loads some 450 modules) for these few operations, paid on every ``graphserve deploy``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from typing import Any


class DiGraph:
    """Nodes (strings) with a data dict each, and at most one edge per ordered pair."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, dict[str, dict[str, Any]]] = {}
        self._pred: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def nodes(self) -> Mapping[str, dict[str, Any]]:
        """Node -> its data (``graph.nodes[node]["ir"]``); iterates over the nodes."""
        return self._nodes

    def add_node(self, node: str, **data: Any) -> None:
        if node not in self._nodes:
            self._nodes[node] = {}
            self._succ[node] = {}
            self._pred[node] = {}
        self._nodes[node].update(data)

    def add_edge(self, source: str, target: str, **data: Any) -> None:
        """An edge ``source -> target`` (its nodes are added if new); a second edge replaces the first's data."""
        self.add_node(source)
        self.add_node(target)
        edge = self._succ[source].setdefault(target, {})
        edge.update(data)
        self._pred[target][source] = edge

    def successors(self, node: str) -> Iterator[str]:
        return iter(self._succ[node])

    def predecessors(self, node: str) -> Iterator[str]:
        return iter(self._pred[node])

    def edges(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for source, targets in self._succ.items():
            for target, data in targets.items():
                yield source, target, data

    def copy(self) -> DiGraph:
        """A copy of the structure (node and edge data dicts are copied, their values shared)."""
        other = DiGraph()
        for node, data in self._nodes.items():
            other.add_node(node, **data)
        for source, target, data in self.edges():
            other.add_edge(source, target, **data)
        return other

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)


def topological_order(graph: DiGraph) -> list[str] | None:
    """Every node after its predecessors, the smallest ready node first; None if there is a cycle."""
    waiting = {node: sum(1 for _ in graph.predecessors(node)) for node in graph}
    ready = [node for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for successor in graph.successors(node):
            waiting[successor] -= 1
            if waiting[successor] == 0:
                heapq.heappush(ready, successor)
    return order if len(order) == len(waiting) else None


def cycles(graph: DiGraph) -> list[list[str]]:
    """One cycle for each group of nodes that reach each other (a strongly connected component
    with a cycle), as a path from the group's smallest node back to it (``[a, b]`` is a -> b -> a)."""
    found = []
    for component in _strongly_connected(graph):
        start = min(component)
        if len(component) == 1 and start not in set(graph.successors(start)):
            continue
        found.append(_path_back(graph, start, component))
    return sorted(found)


def _strongly_connected(graph: DiGraph) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, graph.successors(root))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, graph.successors(successor)))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _path_back(graph: DiGraph, start: str, component: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside ``component`` (breadth first, smallest nodes first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for successor in sorted(graph.successors(node)):
                if successor not in component:
                    continue
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise ValueError(f"{start!r} is on no cycle")  # pragma: no cover - callers pass cyclic components
