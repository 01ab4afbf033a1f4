"""/openapi.json: its document, and a bounded schemathesis run against it (no 5xx from any input)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from graphserve.runtime.openapi import openapi_document
from graphserve.serving import load_plans
from tests.graphs import ingress_graphs as graphs
from tests.serving_utils import running_server

FUZZED = [graphs.echo_app, graphs.order_app, graphs.batched_app, graphs.raw_app]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(FUZZED, max_body_bytes=64 * 1024) as base:
        yield base


def test_nested_models_move_to_components(url: str) -> None:
    doc = httpx.get(url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/order"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Order"}
    assert schemas["Order"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert schemas["Line"]["properties"]["qty"]["maximum"] == 100
    assert "$defs" not in str(doc)


def test_same_model_name_in_two_graphs_with_different_fields() -> None:
    echo, order = load_plans([graphs.echo_app, graphs.order_app])
    order.input_json_schema = {**(order.input_json_schema or {}), "title": "Item"}  # clashes with echo's Item
    doc = openapi_document([("/echo", echo), ("/order", order)])
    bodies = [doc["paths"][p]["post"]["requestBody"]["content"]["application/json"] for p in ("/echo", "/order")]
    refs = [body["schema"]["$ref"] for body in bodies]
    assert refs == ["#/components/schemas/Item", "#/components/schemas/order_Item"]
    assert "lines" in doc["components"]["schemas"]["order_Item"]["properties"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_schemathesis_finds_no_server_errors(url: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    listed = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in listed if not op.path.startswith("/-/") and op.path != "/openapi.json"]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (method, path) for method in ("POST", "GET") for path in ("/echo", "/order", "/batched", "/raw")
    }
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            if mode is GenerationMode.POSITIVE and case.headers:
                # a valid but tiny deadline (5e-324 s) is rightly a 504: fuzz the body, not the clock
                case.headers.pop("X-Request-Timeout-S", None)
            response = case.call(base_url=url, timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path} {case.body!r}: {response.text}"

        check()
    assert sum(seen.values()) >= 40
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0
    else:
        assert set(seen) & {400, 413, 422}
