"""Apps Ray Serve builds that are driven through handles (issue 14, item 2).

Ray Serve accepts a ``__call__(self)`` without parameters (and function deployments
without parameters), deployments with only named methods, and a bound *function*
deployment passed to a constructor (it arrives as a handle). graphserve builds and
serves them all, and still reports what is really wrong.
"""

from __future__ import annotations

import httpx
import pytest

import graphserve as serve
from graphserve.errors import GraphValidationError


@serve.deployment
class Preprocessor:
    def __call__(self) -> str:
        return "Hello from preprocessor!"


@serve.deployment
def hello() -> str:
    return "hello"


def test_zero_argument_call_through_a_handle_and_over_http() -> None:
    handle = serve.run(Preprocessor.bind())
    assert handle.remote().result(timeout_s=30) == "Hello from preprocessor!"
    assert httpx.get(handle.url, timeout=30).text == "Hello from preprocessor!"


def test_zero_argument_function_deployment() -> None:
    handle = serve.run(hello.bind())
    assert handle.remote().result(timeout_s=30) == "hello"
    assert httpx.post(handle.url, timeout=30).text == "hello"


@serve.deployment
class Greeter:
    """Only named methods, no __call__: reached as handle.method.remote()."""

    def say_hello(self, name: str) -> str:
        return f"Hola {name}"

    async def shout(self, name: str) -> str:
        return f"HOLA {name.upper()}"


def test_deployment_with_only_named_methods() -> None:
    handle = serve.run(Greeter.bind())
    assert handle.say_hello.remote("Dora").result(timeout_s=30) == "Hola Dora"
    assert handle.options(method_name="shout").remote("Dora").result(timeout_s=30) == "HOLA DORA"
    response = httpx.post(handle.url, json="Dora", timeout=30)  # Ray Serve fails such a request too
    assert response.status_code == 500 and "__call__" in response.text


@serve.deployment
def double(x: int) -> int:
    return 2 * x


@serve.deployment
class UsesFunction:
    def __init__(self, double_handle: serve.handle.DeploymentHandle) -> None:
        self.double = double_handle

    async def __call__(self, x: int) -> int:
        return await self.double.remote(x) + 1


def test_a_bound_function_deployment_arrives_as_a_handle() -> None:
    handle = serve.run(UsesFunction.bind(double.bind()))
    assert handle.remote(20).result(timeout_s=30) == 41


def test_what_is_really_wrong_is_still_reported() -> None:
    @serve.deployment
    class NoMethods:
        pass

    @serve.deployment
    class TakesTwo:
        def __call__(self, a: int, b: int) -> int:
            return a + b

    with pytest.raises(GraphValidationError, match="has no method '__call__'"):
        serve.build(NoMethods.bind())
    with pytest.raises(GraphValidationError, match="GS101"):
        serve.build(TakesTwo.bind())  # the request is one argument; b is missing
    with serve.InputNode() as inp:
        node = double.bind(inp)
    with pytest.raises(GraphValidationError, match="GS112"):
        serve.build(UsesFunction.bind(node))  # a dataflow node is no handle
