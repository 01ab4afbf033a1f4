"""The DSL records what the user wrote, with call sites, and checks nothing itself."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import graphserve as gs
from graphserve.dsl import CallNode, DeploymentNode, InputNode, SelectNode, SwitchNode
from tests.graphs import models as m


def test_deployment_bare_and_with_options() -> None:
    assert m.Slow.name == "Slow" and m.Slow.deployment_options == {}
    assert m.Slow.func_or_class.__name__ == "Slow"

    @gs.deployment(num_replicas=3, name="custom")
    class Model:
        pass

    assert Model.name == "custom" and Model.deployment_options == {"num_replicas": 3, "name": "custom"}


def test_options_returns_a_configured_copy() -> None:
    copy = m.Slow.options(name="fast", num_replicas=2)
    assert copy.name == "fast" and copy.deployment_options["num_replicas"] == 2
    assert m.Slow.name == "Slow" and "num_replicas" not in m.Slow.deployment_options


def test_bind_builds_nodes_and_records_the_call_site() -> None:
    with gs.InputNode() as inp:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        node = m.Slow.bind("a")
        call = node.__call__.bind(inp.x, y=inp[0])
    assert isinstance(inp, InputNode) and isinstance(node, DeploymentNode) and isinstance(call, CallNode)
    assert node._location is not None and node._location.file == __file__ and node._location.line == line
    assert isinstance(call._args[0], SelectNode) and call._args[0]._access == "attr"
    assert call._kwargs["y"]._key == 0 and call._kwargs["y"]._access == "item"


def test_function_deployment_bind_is_a_call() -> None:
    with gs.InputNode() as inp:
        call = m.double.bind(inp)
    assert isinstance(call, CallNode) and call._target is m.double


def test_cond_and_switch() -> None:
    with gs.InputNode() as inp:
        c = gs.cond(inp.flag, 1, 2)
        s = gs.switch(inp.kind, {"a": inp.a}, default=inp.b)
    assert isinstance(c, SwitchNode) and c._branches == {True: 1, False: 2} and not c._has_default
    assert s._has_default and set(s._branches) == {"a"}


def test_comparison_builds_glue_and_truthiness_is_refused() -> None:
    with gs.InputNode() as inp:
        gt = inp.score > 0.5
        assert isinstance(gt, CallNode)
        with pytest.raises(TypeError, match=r"gs\.cond"):
            if inp.score:  # type: ignore[truthy-bool]
                pass


def test_graph_names() -> None:
    with gs.InputNode() as inp:
        call = m.Slow.bind("a").__call__.bind(inp)
    assert gs.graph(call).name == "Slow"
    assert gs.graph(call, name="mine", timeout_s=2).timeout_s == 2
    assert gs.graph({"a": call}).name == "default"


def test_private_attributes_are_not_methods() -> None:
    node: Any = m.Slow.bind("a")
    with pytest.raises(AttributeError):
        node._private  # noqa: B018
    with gs.InputNode() as inp, pytest.raises(AttributeError):
        inp.__len__  # noqa: B018
