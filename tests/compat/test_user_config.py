"""Ray Serve's ``user_config``: given to ``reconfigure()`` as each replica starts, from the
decorator or ``.options(user_config=...)``; deploying again with a new one reconfigures."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

import graphserve as serve
from graphserve.errors import DeploymentStartError, GraphValidationError


@serve.deployment(user_config={"threshold": 0.5})
class Thresholder:
    def __init__(self) -> None:
        self.threshold = 0.0

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.threshold = config["threshold"]

    def __call__(self, score: float) -> bool:
        return score > self.threshold


@serve.deployment(user_config={"greeting": "hello"})
class AsyncGreeter:
    async def reconfigure(self, config: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        self.greeting = config["greeting"]

    def __call__(self, name: str) -> str:
        return f"{self.greeting} {name}"


def test_reconfigure_gets_the_user_config_before_the_first_call() -> None:
    handle = serve.run(Thresholder.bind())
    assert handle.remote(0.7).result(timeout_s=30) is True
    assert handle.remote(0.3).result(timeout_s=30) is False


def test_an_async_reconfigure_is_awaited_and_options_override_the_decorator() -> None:
    handle = serve.run(AsyncGreeter.options(user_config={"greeting": "hola"}).bind())
    assert handle.remote("Dora").result(timeout_s=30) == "hola Dora"


def test_deploying_again_with_a_new_user_config_reconfigures() -> None:
    handle = serve.run(Thresholder.options(user_config={"threshold": 0.9}).bind(), name="t")
    assert handle.remote(0.7).result(timeout_s=30) is False
    handle = serve.run(Thresholder.options(user_config={"threshold": 0.1}).bind(), name="t")
    assert handle.remote(0.7).result(timeout_s=30) is True


@serve.deployment(user_config={"max_batch_size": 3, "batch_wait_timeout_s": 30})
class Model:
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.1)
    async def __call__(self, samples: list[int]) -> Any:
        return np.array([len(samples)] * len(samples))

    def reconfigure(self, config: dict[str, Any]) -> None:  # the batching guide's reconfigure
        self.__call__.set_max_batch_size(config["max_batch_size"])
        self.__call__.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])


def test_the_batching_guides_reconfigure_sets_the_batch_size_over_the_decorators() -> None:
    handle = serve.run(Model.bind())
    responses = [handle.remote(i) for i in range(6)]
    # batches of 3 (the user_config's), not 8: the 30 s wait would otherwise hold them
    assert [r.result(timeout_s=20) for r in responses] == [3] * 6
    assert Model.func_or_class.__call__.get_max_batch_size() == 3


def test_user_config_without_reconfigure_is_a_build_error() -> None:
    @serve.deployment(user_config={"x": 1})
    class NoReconfigure:
        def __call__(self) -> int:
            return 1

    with pytest.raises(GraphValidationError, match="no reconfigure"):
        serve.run(NoReconfigure.bind())


def test_a_user_config_that_is_not_json_is_a_build_error() -> None:
    with pytest.raises(GraphValidationError, match="user_config"):
        serve.run(Thresholder.options(user_config={"threshold": object()}).bind())


def test_a_failing_reconfigure_names_the_deployment() -> None:
    with pytest.raises(DeploymentStartError, match=r"Thresholder.*reconfigure raised KeyError"):
        serve.run(Thresholder.options(user_config={"wrong": 1}).bind())
