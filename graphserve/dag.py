"""Ray's DAG names (``ray.dag``, ``ray.serve.dag``) and the input value of a DAG called with arguments.

``from graphserve.dag import InputNode`` is graphserve's ``InputNode``. Ray's DAGs take
the arguments of ``handle.predict.remote(*args, **kwargs)`` as their input: one
positional argument is the input itself; several (or keywords) make a
:class:`DAGInput`, which ``inp[0]``, ``inp["key"]`` and ``inp.key`` read, as Ray's
``InputNode`` does.
"""

from __future__ import annotations

from typing import Any

from graphserve.dsl import InputNode

__all__ = ["DAGInput", "InputNode", "RoutedRequest", "dag_input"]


class DAGInput:
    """Several arguments given to a DAG: ``inp[i]`` is the i-th positional one, ``inp["k"]``/``inp.k`` a keyword."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = tuple(args)
        self.kwargs = dict(kwargs)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self.args[key]
        return self.kwargs[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.kwargs[name]
        except KeyError:
            raise AttributeError(f"the DAG was called without a keyword argument {name!r}") from None

    def __getstate__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self.args, self.kwargs

    def __setstate__(self, state: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        self.args, self.kwargs = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DAGInput) and (self.args, self.kwargs) == (other.args, other.kwargs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DAGInput(args={self.args!r}, kwargs={self.kwargs!r})"


class RoutedRequest:
    """``handle.predict_with_route.remote(route, ...)``: the input of a DAGDriver serving several routes."""

    __slots__ = ("route", "value")

    def __init__(self, route: str, value: Any) -> None:
        self.route = route
        self.value = value

    def __getstate__(self) -> tuple[str, Any]:
        return self.route, self.value

    def __setstate__(self, state: tuple[str, Any]) -> None:
        self.route, self.value = state

    def __repr__(self) -> str:
        return f"RoutedRequest({self.route!r}, {self.value!r})"


def dag_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The DAG input for a call with ``args`` and ``kwargs`` (one argument is the input itself)."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and not kwargs:
        return None
    return DAGInput(args, kwargs)
