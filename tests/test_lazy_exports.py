"""The packages' shared PEP 562 ``__getattr__``/``__dir__`` (graphserve/lazy_exports.py)."""

from __future__ import annotations

from typing import Any

import pytest

from graphserve.lazy_exports import lazy_dir, lazy_getattr


def test_a_name_is_imported_when_first_used_then_kept() -> None:
    namespace: dict[str, Any] = {}
    getattr_ = lazy_getattr("pkg", {"OrderedDict": "collections"}, namespace, submodules={"path"})
    import collections

    assert getattr_("OrderedDict") is collections.OrderedDict
    assert namespace == {"OrderedDict": collections.OrderedDict}  # the next lookup is a plain one


def test_a_submodule_is_imported_by_its_name() -> None:
    import os.path

    assert lazy_getattr("os", {}, {}, submodules={"path"})("path") is os.path


def test_an_unknown_name_is_an_attribute_error_naming_the_package() -> None:
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'nope'"):
        lazy_getattr("pkg", {}, {})("nope")


def test_the_packages_use_it() -> None:
    import graphserve
    import graphserve.compiler
    import graphserve.runtime

    assert graphserve.runtime.GraphRuntime.__module__ == "graphserve.runtime.running_graph"
    assert "GraphRuntime" in dir(graphserve.runtime)
    assert "compile_app" in dir(graphserve.compiler)
    assert "deployment" in dir(graphserve)
    with pytest.raises(AttributeError, match=r"module 'graphserve\.runtime' has no attribute 'nope'"):
        graphserve.runtime.nope  # noqa: B018
    assert lazy_dir({"a": 1}, ["b"])() == ["a", "b"]
