"""Apps, names and routes as Ray Serve has them (issue 14, item 3)."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

import graphserve as serve
from graphserve.errors import GraphError
from graphserve.exceptions import RayServeException
from graphserve.schema import ApplicationStatus, DeploymentStatus


@serve.deployment
class Where:
    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, request: Request) -> dict[str, str]:
        return {"app": self.label, "path": request.url.path}


@serve.deployment(num_replicas=2)
class Pair:
    def __call__(self, request: Request) -> str:
        return "pair"


def test_an_unnamed_app_is_default_and_a_name_is_kept() -> None:
    handle = serve.run(Where.bind("root"))
    assert handle.plan.name == "default"
    assert serve.get_app_handle("default") is handle
    named = serve.run(Where.bind("named"), name="named", route_prefix="/named")
    assert serve.get_app_handle("named") is named
    assert serve.get_app_handle("default").remote  # the first app still runs


def test_same_name_replaces_the_app_and_a_taken_route_is_refused() -> None:
    first = serve.run(Where.bind("one"))
    second = serve.run(Where.bind("two"))  # the default app again: replaced
    assert httpx.get(second.url + "/", timeout=30).json()["app"] == "two"
    with pytest.raises(GraphError, match="shut down"):
        first.remote()
    with pytest.raises(RayServeException, match="both want route '/'"):
        serve.run(Where.bind("three"), name="other")  # another name at the same route: Ray Serve refuses it
    assert list(serve.status().applications) == ["default"]
    with pytest.raises(ValueError, match=r"Invalid route_prefix 'no_slash', must start with a forward slash"):
        serve.run(Where.bind("four"), route_prefix="no_slash")


def test_unknown_paths_get_rays_404() -> None:
    handle = serve.run(Where.bind("api"), route_prefix="/api")
    response = httpx.get(handle.url.rsplit("/api", 1)[0] + "/nowhere", timeout=30)
    assert response.status_code == 404 and "Path '/nowhere' not found" in response.text


def test_status_has_rays_shape() -> None:
    serve.run(Pair.bind(), route_prefix="/pair")
    status = serve.status()
    app = status.applications["default"]
    assert app.status == ApplicationStatus.RUNNING == "RUNNING"
    assert app.route_prefix == "/pair" and app.last_deployed_time_s > 0
    deployment = app.deployments["Pair"]
    assert deployment.status == DeploymentStatus.HEALTHY == "HEALTHY"
    assert deployment.replica_states == {"RUNNING": 2}
    serve.delete("default")
    assert serve.status().applications == {}


def test_routes_match_by_prefix_longest_first_with_the_full_path() -> None:
    root = serve.run(Where.bind("root"), name="root")
    serve.run(Where.bind("api"), name="api", route_prefix="/api")
    base = root.url.rstrip("/")
    assert httpx.get(f"{base}/anything/else", timeout=30).json() == {"app": "root", "path": "/anything/else"}
    assert httpx.get(f"{base}/api", timeout=30).json() == {"app": "api", "path": "/api"}
    assert httpx.get(f"{base}/api/x/y", timeout=30).json() == {"app": "api", "path": "/api/x/y"}
    assert httpx.get(f"{base}/apix", timeout=30).json()["app"] == "root"  # a prefix ends at a '/'
    assert httpx.get(f"{base}/-/healthz", timeout=30).json() == {"status": "ok"}  # the server's own routes stay


def test_unknown_apps_get_rays_error_as_graph_errors() -> None:
    serve.run(Where.bind("root"))
    with pytest.raises(GraphError, match="Application 'nope' does not exist"):
        serve.get_app_handle("nope")
    with pytest.raises(GraphError, match="Application 'nope' does not exist"):
        serve.get_deployment_handle("Where", app_name="nope")
    assert serve.get_deployment_handle("Where", app_name="default").remote  # the known one is found
