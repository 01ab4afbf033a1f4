"""schemathesis against every graph route (POST and GET, valid and invalid bodies): at least
1,000 cases per graph and not one 5xx."""

from __future__ import annotations

import pytest

from bench.reliability import CRITERIA, fuzz

pytestmark = pytest.mark.slow


def test_fuzzing_every_graph_route_finds_no_server_error() -> None:
    figures = fuzz()
    assert figures["server_errors"] == 0, figures["first_failures"]
    assert len(figures["graphs"]) == 3
    for path, graph in figures["graphs"].items():
        assert graph["cases"] >= CRITERIA["fuzz_cases_per_graph"], (path, graph)
        statuses = set(graph["statuses"])
        assert "200" in statuses and all(int(status) < 500 for status in statuses), (path, graph)
        if path != "/echo":  # /echo takes any JSON: nothing it can be sent is invalid
            assert statuses & {"400", "422"}, (path, graph)  # valid and invalid inputs were both tried
    assert figures["operations_routes"]["cases"] > 0
