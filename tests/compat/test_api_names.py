"""Ray Serve's smaller API names and habits (issue 14, item 6)."""

from __future__ import annotations

import asyncio

import pytest

import graphserve as serve
from graphserve.errors import GraphError, OverloadedError
from graphserve.exceptions import BackPressureError, RayServeException
from graphserve.handle import DeploymentHandle, DeploymentResponse


@serve.deployment
class Echo:
    def __call__(self, x: int) -> int:
        return x


@serve.deployment
class Holds:
    def __init__(self, echo: DeploymentHandle) -> None:
        assert isinstance(echo, DeploymentHandle)
        self.echo = echo

    async def __call__(self, x: int) -> bool:
        response = self.echo.remote(x)
        return isinstance(response, DeploymentResponse) and await response == x


def test_handles_are_deployment_handles() -> None:
    handle = serve.run(Holds.bind(Echo.bind()))
    assert isinstance(handle, DeploymentHandle) and isinstance(handle, serve.handle.DeploymentHandle)
    response = handle.remote(3)
    assert isinstance(response, DeploymentResponse)
    assert response.result(timeout_s=30) is True


def test_a_positional_name_as_in_ray_serve_1() -> None:
    @serve.deployment("greeter", num_replicas=2)
    class Greeter:
        def __call__(self, name: str) -> str:
            return f"hi {name}"

    assert Greeter.name == "greeter" and Greeter.deployment_options["num_replicas"] == 2
    assert serve.run(Greeter.bind()).remote("x").result(timeout_s=30) == "hi x"
    with pytest.raises(GraphError, match="give the name once"):
        serve.deployment("a", name="b")


def test_misuse_says_what_to_write_instead() -> None:
    node = Echo.bind()
    with pytest.raises(GraphError, match=r"already bound.*\.method\.bind"):
        node.bind()
    with pytest.raises(GraphError, match=r"serve\.run\(Echo\.bind\(\.\.\.\)\)"):
        node.remote(1)
    with pytest.raises(GraphError, match=r"Echo\.options\(\.\.\.\)\.bind"):
        node.options(num_replicas=2)
    with pytest.raises(GraphError, match=r"cannot be called or constructed directly.*Echo\.bind"):
        Echo(1)
    with pytest.raises(GraphError, match=r"\.bind\(\.\.\.\) to wire"):
        node.__call__(1)
    with pytest.raises(GraphError, match=r"handle\.predict\.remote"):
        node.predict.remote(1)


@serve.deployment(num_replicas=2)
class Pid:
    def __call__(self) -> int:
        return id(self)


def test_sequential_calls_spread_over_the_replicas() -> None:
    handle = serve.run(Pid.bind())
    replicas = {handle.remote().result(timeout_s=30) for _ in range(30)}
    assert len(replicas) == 2  # power of two choices; the chance all 30 go to one replica is 2**-29


def test_ray_serve_exception_names_catch_graphserve_errors() -> None:
    assert issubclass(OverloadedError, BackPressureError) and BackPressureError is OverloadedError
    with pytest.raises(RayServeException):
        serve.get_app_handle("missing")


@serve.deployment
def no_params() -> str:
    return "sync!"


def test_errors_from_a_deployment_keep_their_type() -> None:
    handle = serve.run(no_params.bind())
    with pytest.raises(TypeError, match=r"\(\) takes 0 positional arguments but 1 was given") as info:
        handle.remote(1).result(timeout_s=30)
    assert isinstance(info.value, serve.NodeExecutionError) and info.value.node == "no_params.__call__"
    with pytest.raises(TypeError, match=r"\(\) got an unexpected keyword argument"):
        handle.remote(key=1).result(timeout_s=30)


@serve.deployment
class AsyncInit:
    async def __init__(self, start: int) -> None:
        await asyncio.sleep(0)
        self.count = start

    async def __call__(self) -> int:
        self.count += 1
        return self.count


def test_an_async_constructor_is_awaited() -> None:
    assert serve.run(AsyncInit.bind(41)).remote().result(timeout_s=30) == 42


def test_options_ray_refuses_at_once() -> None:
    with pytest.raises(ValueError, match="max_replicas_per_node is not allowed when placement_group_bundles"):
        serve.deployment(max_replicas_per_node=3, placement_group_bundles=[{"CPU": 1}])
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        Echo.options(max_ongoing_requests=None)


def test_a_bound_deployment_hidden_in_an_object_is_reported() -> None:
    class Wrapper:
        def __init__(self, node: object) -> None:
            self.node = node

    with pytest.raises(serve.GraphValidationError, match=r"Wrapper holding Echo\.bind"):
        serve.build(Holds.bind(Wrapper(Echo.bind())))
