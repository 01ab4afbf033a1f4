"""What this process runs (graphserve/registry.py): every running app, the process-wide
HTTP server, the warnings already shown."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import graphserve as gs
from graphserve import registry
from graphserve.errors import GraphError, RouteConflictError
from tests.graphs import models as m


@pytest.fixture(autouse=True)
def _stopped_after() -> Iterator[None]:
    yield
    gs.shutdown()
    assert registry.running_apps() == [] and registry.served_names() == []


def _app(name: str) -> gs.App:
    with gs.InputNode() as inp:
        return gs.graph(m.double.bind(inp), name=name)


def test_shutdown_stops_every_app_served_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHSERVE_HTTP_PORT", "0")
    quiet = gs.run(_app("quiet"), http=False)
    served = gs.run(_app("served"))
    assert quiet in registry.running_apps() and served in registry.running_apps()
    assert registry.served_names() == ["served"] and registry.served_app("served") is served
    assert served.url is not None and httpx.post(served.url + "/", json=2.0).json() == 4.0
    gs.shutdown()
    assert registry.running_apps() == []
    for handle in (quiet, served):
        with pytest.raises(GraphError, match="was shut down"):
            handle.call(1.0)
    with pytest.raises(httpx.ConnectError):
        httpx.post(served.url + "/", json=2.0)


def test_a_taken_route_is_a_route_conflict_naming_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHSERVE_HTTP_PORT", "0")
    first = gs.run(_app("first"), route_prefix="/x")
    with pytest.raises(RouteConflictError, match="route_prefix") as conflict:
        gs.run(_app("second"), route_prefix="/x")
    assert conflict.value.path == "/x"
    assert registry.served_names() == ["first"] and first.call(1.5) == 3.0


def test_each_warning_is_shown_once_per_process() -> None:
    key = ("GS117", None, "test_registry: shown once")
    assert registry.first_time(key) is True
    assert registry.first_time(key) is False
