"""Response chaining, as Ray Serve's model composition guide writes it (issue 14, item 1).

A ``DeploymentResponse`` passed to another handle call, at any depth of its arguments,
reaches the callee as its value; the call waits for it without blocking the event loop.
On Ray it travels as its object reference, so neither the calling actor nor the driver
fetches it.
"""

from __future__ import annotations

from typing import Any

import pytest

import graphserve as serve
from tests.graphs import rayserve_chaining as rc


def test_the_guides_chain() -> None:
    handle = serve.run(rc.chain_app)
    assert handle.remote(5).result(timeout_s=30) == 12, "(5 + 1) * 2 = 12"


def test_responses_at_any_depth_arrive_as_values() -> None:
    handle = serve.run(rc.composer_app)
    got = handle.nested.remote(1).result(timeout_s=30)
    assert got == {"items": [2, (3, 7)], "table": {"c": 4}, "deep": [{"again": 2}]}
    assert handle.from_a_thread.remote(1).result(timeout_s=30) == 3


def test_waiting_for_a_chained_response_does_not_block_the_loop() -> None:
    handle = serve.run(rc.composer_app)
    timing = handle.loop_stays_free.remote(4).result(timeout_s=30)
    assert timing["result"] == 5
    assert timing["ticked_s"] < 0.2 < timing["total_s"]


def test_driver_side_chaining_through_the_app_handle() -> None:
    handle = serve.run(rc.composer_app)
    adder = serve.get_deployment_handle("Adder", app_name=handle.plan.name)
    assert handle.nested.remote(adder.remote(1)).result(timeout_s=30)["table"] == {"c": 5}


@pytest.mark.slow
def test_on_ray_responses_travel_as_references(ray_cluster: Any) -> None:
    handle = serve.run(rc.composer_app, backend="ray", http=False)
    backend = handle.runtime.backend
    fetched: list[Any] = []
    fetch = backend.fetch

    async def counting_fetch(values: list[Any]) -> list[Any]:
        fetched.extend(values)
        return await fetch(values)

    backend.fetch = counting_fetch
    adder = handle.deployment("Adder")
    chained = adder.remote(adder.remote(adder.remote(1)))  # driver side: two responses passed on
    assert chained.result(timeout_s=60) == 4
    assert len(fetched) == 1  # the driver fetched only the last result
    got = handle.nested.remote(1).result(timeout_s=60)  # actor side, nested at any depth
    assert got == {"items": [2, (3, 7)], "table": {"c": 4}, "deep": [{"again": 2}]}
    chain = serve.run(rc.chain_app, backend="ray", http=False, name="chain")
    assert chain.remote(5).result(timeout_s=60) == 12
