"""The IR's directed graph: data on nodes and edges, topological order, cycles."""

from __future__ import annotations

import itertools

from graphserve.compiler.digraph import DiGraph, cycles, topological_order


def graph(*edges: str) -> DiGraph:
    g = DiGraph()
    for edge in edges:
        source, target = edge.split(">")
        g.add_edge(source, target)
    return g


def test_nodes_and_edges_keep_their_data_and_order() -> None:
    g = DiGraph()
    g.add_node("b", ir=1)
    g.add_edge("a", "b", slot="0")
    g.add_edge("a", "c")
    g.add_node("b", extra=2)
    assert list(g) == ["b", "a", "c"] and len(g) == 3 and "c" in g and "z" not in g
    assert g.nodes["b"] == {"ir": 1, "extra": 2}
    assert list(g.successors("a")) == ["b", "c"] and list(g.predecessors("b")) == ["a"]
    assert list(g.edges()) == [("a", "b", {"slot": "0"}), ("a", "c", {})]


def test_a_copy_is_independent() -> None:
    g = graph("a>b")
    other = g.copy()
    other.add_edge("b", "c")
    assert list(g) == ["a", "b"] and list(g.successors("b")) == []
    assert list(other.successors("b")) == ["c"]


def test_topological_order_is_deterministic_smallest_first() -> None:
    assert topological_order(graph("c>d", "a>d", "b>a", "input>b", "input>c")) == ["input", "b", "a", "c", "d"]
    assert topological_order(DiGraph()) == []


def test_topological_order_of_a_cycle_is_none() -> None:
    assert topological_order(graph("a>b", "b>c", "c>a", "x>a")) is None


def test_each_cycle_is_reported_once_as_the_path_that_closes_it() -> None:
    g = graph("B>A", "A>B", "A>C", "C>D", "D>C", "E>E", "F>A")
    assert cycles(g) == [["A", "B"], ["C", "D"], ["E"]]
    assert cycles(graph("a>b", "b>c", "a>c")) == []


def test_a_long_chain_needs_no_recursion() -> None:
    chain = [f"n{i:05d}" for i in range(5000)]
    g = DiGraph()
    for source, target in itertools.pairwise(chain):
        g.add_edge(source, target)
    assert topological_order(g) == chain and cycles(g) == []
    g.add_edge(chain[-1], chain[0])
    (cycle,) = cycles(g)
    assert cycle == chain
