"""Ray Serve's deployment graph API (Ray 2.0-2.6) on graphserve (issue 14, item 5).

Graphs written with ``InputNode``, ``.bind()`` on methods and functions, and
``DAGDriver.bind(dag, http_adapter=...)``, as Ray's deployment graph guide and pattern
pages write them; the handle's ``predict.remote(...)``; the pre-2.7 double ``await``.
"""

from __future__ import annotations

import asyncio
import warnings

import httpx
import numpy as np
import pytest
from pydantic import BaseModel
from starlette.requests import Request

import graphserve as serve
from graphserve.deployment_graph import InputNode
from graphserve.drivers import DAGDriver
from graphserve.errors import HTTPAdapterError, RouteNotFoundError
from graphserve.http_adapters import json_request, json_to_ndarray
from graphserve.runtime.handle import DeploymentResponse


@serve.deployment
class AddCls:
    def __init__(self, addend: float):
        self.addend = addend

    def add(self, number: float) -> float:
        return number + self.addend


@serve.deployment
def subtract_one_fn(number: float) -> float:
    return number - 1


@serve.deployment
async def unpack_request(http_request: Request) -> float:
    return float(await http_request.json())


def test_the_default_adapter_hands_the_dag_the_starlette_request() -> None:
    with InputNode() as http_request:
        request_number = unpack_request.bind(http_request)
        add_2_output = AddCls.bind(2).add.bind(request_number)
        subtract_1_output = subtract_one_fn.bind(add_2_output)
        add_3_output = AddCls.bind(3).add.bind(subtract_1_output)
    handle = serve.run(DAGDriver.bind(add_3_output))
    assert httpx.post(handle.url, json=5, timeout=30).json() == 9


def test_json_request_adapter_and_predict() -> None:
    with InputNode() as request_number:
        add_2_output = AddCls.bind(2).add.bind(request_number)
        subtract_1_output = subtract_one_fn.bind(add_2_output)
        add_3_output = AddCls.bind(3).add.bind(subtract_1_output)
    handle = serve.run(DAGDriver.bind(add_3_output, http_adapter=json_request))
    assert handle.predict.remote(5).result(timeout_s=30) == 9
    assert httpx.post(handle.url, json=5, timeout=30).json() == 9


@serve.deployment
class Model:
    def __init__(self, weight: int):
        self.weight = weight

    def forward(self, input: int) -> int:
        return input + self.weight


@serve.deployment
def combine(value1: int, value2: int, operation: str) -> int:
    return sum([value1, value2]) if operation == "sum" else max([value1, value2])


def test_several_arguments_are_read_by_index_as_rays_input_node_does() -> None:
    model1, model2 = Model.bind(0), Model.bind(1)
    with InputNode() as user_input:
        input_number, input_operation = user_input[0], user_input[1]
        combine_output = combine.bind(
            model1.forward.bind(input_number), model2.forward.bind(input_number), input_operation
        )
    handle = serve.run(DAGDriver.bind(combine_output, http_adapter=json_request))
    assert handle.predict.remote(1, "max").result(timeout_s=30) == 2
    assert handle.predict.remote(1, "sum").result(timeout_s=30) == 3
    assert httpx.post(handle.url, json=[1, "sum"], timeout=30).json() == 3


class ModelInputData(BaseModel):
    model_input1: int
    model_input2: str


@serve.deployment
class PydanticModel:
    def __init__(self, weight: int):
        self.weight = weight

    def forward(self, input: ModelInputData) -> int:
        return input.model_input1 + len(input.model_input2) + self.weight


@serve.deployment
def add_all(values: list[int]) -> int:
    return sum(values)


def test_a_pydantic_model_as_the_adapter_validates_the_body() -> None:
    with InputNode() as user_input:
        dag = add_all.bind(
            [PydanticModel.bind(0).forward.bind(user_input), PydanticModel.bind(1).forward.bind(user_input)]
        )
    handle = serve.run(DAGDriver.options(route_prefix="/my-dag").bind(dag, http_adapter=ModelInputData))
    assert handle.url.endswith("/my-dag")
    assert handle.predict.remote(ModelInputData(model_input1=1, model_input2="test")).result(timeout_s=30) == 11
    assert httpx.post(handle.url, json={"model_input1": 1, "model_input2": "test"}, timeout=30).json() == 11
    bad = httpx.post(handle.url, json={"model_input1": "one"}, timeout=30)
    assert bad.status_code == 422 and "model_input1" in bad.text


def double_it(my_custom_param: int) -> int:
    return my_custom_param * 2


@serve.deployment
def echo(value: object) -> object:
    return value


def test_adapters_read_query_parameters_and_ndarrays() -> None:
    with InputNode() as inp:
        dag = echo.bind(inp)
    handle = serve.run(DAGDriver.bind(dag, http_adapter=double_it), name="query")
    assert httpx.post(handle.url + "/?my_custom_param=21", timeout=30).json() == 42
    assert httpx.post(handle.url, timeout=30).status_code == 422  # the parameter is required
    assert httpx.post(handle.url + "/?my_custom_param=x", timeout=30).status_code == 422
    serve.delete("query")
    handle = serve.run(DAGDriver.bind(dag, http_adapter=json_to_ndarray))
    payload = {"array": [1, 2, 3, 4], "shape": [2, 2], "dtype": "float32"}
    assert httpx.post(handle.url, json=payload, timeout=30).json() == [[1.0, 2.0], [3.0, 4.0]]
    assert np.asarray(handle.predict.remote(np.ones(2)).result(timeout_s=30)).tolist() == [1.0, 1.0]


def test_bad_adapters_are_refused_with_rays_checks() -> None:
    with InputNode() as inp:
        dag = echo.bind(inp)
    with pytest.raises(ValueError, match="callable") as info:
        DAGDriver.bind(dag, http_adapter=["not function"])
    assert isinstance(info.value, HTTPAdapterError)

    def unannotated(a):  # type: ignore[no-untyped-def]
        return a

    with pytest.raises(ValueError, match="type annotated"):
        DAGDriver.bind(dag, http_adapter=unannotated)


@serve.deployment
class D1:
    def forward(self, *args: object) -> str:
        return "D1"


@serve.deployment
class D3:
    def __call__(self, *args: object) -> str:
        return "D3"


@serve.deployment
def d4(*args: object) -> str:
    return "D4"


def test_one_driver_serves_several_dags_by_route_and_runs_only_the_one_asked() -> None:
    handle = serve.run(DAGDriver.bind({"/my_D1": D1.bind().forward.bind(), "/my_D3": D3.bind(), "/my_D4": d4.bind()}))
    for name in ("D1", "D3", "D4"):
        assert handle.predict_with_route.remote(f"/my_{name}").result(timeout_s=30) == name
    with pytest.raises(RouteNotFoundError, match="no DAG at route '/nope'"):
        handle.predict_with_route.remote("/nope").result(timeout_s=30)


@serve.deployment
class Responder:
    def say_hello(self, name: str) -> str:
        return f"Hola {name}"


@serve.deployment
class OldStyle:
    """Ray Serve before 2.7: the first await gave an ObjectRef, the second its value."""

    def __init__(self, responder):  # type: ignore[no-untyped-def]
        self.responder = responder

    async def __call__(self, name: str) -> str:
        ref = await self.responder.say_hello.remote(name)
        return await ref

    async def nested(self, name: str) -> str:
        return await (await self.responder.say_hello.remote(name))

    async def new_style(self, name: str) -> str:
        result = await self.responder.say_hello.remote(name)
        return result


def test_old_style_double_await_works() -> None:
    handle = serve.run(OldStyle.bind(Responder.bind()))
    assert handle.remote("Dora").result(timeout_s=30) == "Hola Dora"
    assert handle.nested.remote("Dora").result(timeout_s=30) == "Hola Dora"
    assert handle.new_style.remote("Dora").result(timeout_s=30) == "Hola Dora"


async def test_double_await_warns_that_it_is_deprecated() -> None:
    loop = asyncio.get_running_loop()

    def response(value: str) -> DeploymentResponse:
        future = loop.create_future()
        future.set_result(value)
        return DeploymentResponse(future, loop)

    with pytest.warns(DeprecationWarning, match="await a DeploymentResponse once|Await a DeploymentResponse once"):
        assert await (await response("x")) == "x"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await response("y") == "y"  # awaited once: no warning
        assert await asyncio.gather(response("a"), response("b")) == ["a", "b"]


def test_several_dags_are_served_over_http_by_sub_path() -> None:
    dag = DAGDriver.options(route_prefix="/dags").bind({"/my_D1": D1.bind().forward.bind(), "/my_D4": d4.bind()})
    handle = serve.run(dag)
    assert httpx.post(handle.url + "/my_D1", json=1, timeout=30).json() == "D1"
    assert httpx.get(handle.url + "/my_D4", timeout=30).json() == "D4"
    missing = httpx.post(handle.url + "/my_D9", json=1, timeout=30)
    assert missing.status_code == 404 and "/my_D1" in missing.text
