"""Edge types: what a node produces and what a parameter accepts, from type hints.

:func:`is_compatible` decides whether a producer's type fits a consumer's parameter.
It is deliberately forgiving where hints say nothing (missing hints, ``Any``, type
variables, and an annotation that cannot be resolved, such as a name imported only
under ``TYPE_CHECKING``, all pass, while the function's other hints are still
checked) and strict where they do: classes by subclass (with int -> float -> complex),
pydantic models by subclass, ``Optional`` and ``Union`` member by member,
``list[...]``/``dict[...]``/``tuple[...]`` element by element. A ``@gs.batch``
method's ``list[T]`` parameter and ``list[R]`` return are ``T`` and ``R`` per request
on the graph.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import sys
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from graphserve.dsl import batch_config

ANY: Any = Any

_NUMERIC = {bool: (int, float, complex), int: (float, complex), float: (complex,)}


#: What resolving an annotation raises when it names something not importable at run time
#: (an import under ``TYPE_CHECKING``), is not valid Python, or is not a type.
_UNRESOLVABLE = (NameError, AttributeError, TypeError, SyntaxError)


def hints(fn: Any) -> dict[str, Any]:
    """Resolved type hints of ``fn`` (unwrapping decorators).

    When one annotation cannot be resolved, the others still are: only that one is
    left out (it passes every check, as a missing hint does)."""
    target = inspect.unwrap(fn) if callable(fn) else fn
    try:
        return typing.get_type_hints(target, include_extras=False)
    except _UNRESOLVABLE:
        return _hints_one_by_one(target)


def _hints_one_by_one(target: Any) -> dict[str, Any]:
    """``typing.get_type_hints`` annotation by annotation, leaving out those that do not resolve."""
    scopes: list[tuple[Any, dict[str, Any] | None, Any]]  # globals, locals, annotated object
    if isinstance(target, type):  # a class's fields, base classes first
        scopes = [
            (vars(sys.modules[base.__module__]) if base.__module__ in sys.modules else {}, dict(vars(base)), base)
            for base in reversed(target.__mro__)
        ]
    else:
        scopes = [(getattr(target, "__globals__", {}), None, target)]
    out: dict[str, Any] = {}
    for globalns, localns, owner in scopes:
        try:
            annotations = inspect.get_annotations(owner)
        except TypeError:  # not a class, module or function (a callable object)
            annotations = getattr(owner, "__annotations__", None) or {}
        for name, annotation in annotations.items():
            if isinstance(annotation, typing.ForwardRef):  # TypedDict keeps its strings so
                annotation = annotation.__forward_arg__
            if not isinstance(annotation, str):
                out[name] = annotation
                continue
            try:
                out[name] = eval(annotation, dict(globalns), localns)  # what get_type_hints does with a string
            except _UNRESOLVABLE:
                out.pop(name, None)
    return out


def return_type(fn: Any) -> Any:
    rtype = hints(fn).get("return", ANY)
    if batch_config(fn) is not None:
        rtype = _element(rtype)
    return _unwrap_awaitable(rtype)


def param_type(fn: Any, name: str) -> Any:
    ptype = hints(fn).get(name, ANY)
    if batch_config(fn) is not None:
        ptype = _element(ptype)
    return ptype


def _element(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (list, cabc.Sequence, cabc.Iterable, tuple) and get_args(tp):
        return get_args(tp)[0]
    return ANY


def _unwrap_awaitable(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (cabc.Awaitable, cabc.Coroutine):
        args = get_args(tp)
        return args[-1] if args else ANY
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _passes(tp: Any) -> bool:
    return tp is ANY or tp is object or tp is None or isinstance(tp, (typing.TypeVar, str, typing.ForwardRef))


def is_compatible(produced: Any, expected: Any) -> bool:
    """Can a value of type ``produced`` be passed where ``expected`` is annotated?"""
    if _passes(expected) or _passes(produced):
        return True
    if get_origin(produced) is typing.Annotated:
        produced = get_args(produced)[0]
    if get_origin(expected) is typing.Annotated:
        expected = get_args(expected)[0]
    if _is_union(produced):
        return all(is_compatible(member, expected) for member in get_args(produced))
    if _is_union(expected):
        return any(is_compatible(produced, member) for member in get_args(expected))
    if get_origin(produced) is Literal:
        return all(is_compatible(type(v), expected) or _literal_ok(v, expected) for v in get_args(produced))
    if get_origin(expected) is Literal:
        return any(is_compatible(produced, type(v)) for v in get_args(expected))
    p_origin, e_origin = get_origin(produced) or produced, get_origin(expected) or expected
    if not isinstance(p_origin, type) or not isinstance(e_origin, type):
        return True  # NewType, Protocol instances and other exotica: no opinion
    if not _class_fits(p_origin, e_origin):
        return False
    p_args, e_args = get_args(produced), get_args(expected)
    if not p_args or not e_args:
        return True
    if issubclass(p_origin, tuple) and issubclass(e_origin, tuple):
        if Ellipsis in p_args or Ellipsis in e_args:
            return all(is_compatible(p_args[0], e) for e in e_args if e is not Ellipsis)
        return len(p_args) == len(e_args) and all(map(is_compatible, p_args, e_args))
    if issubclass(p_origin, cabc.Mapping) and len(p_args) == 2 and len(e_args) == 2:
        return is_compatible(p_args[0], e_args[0]) and is_compatible(p_args[1], e_args[1])
    return is_compatible(p_args[0], e_args[0])


def _literal_ok(value: Any, expected: Any) -> bool:
    return get_origin(expected) is Literal and value in get_args(expected)


def _class_fits(produced: type, expected: type) -> bool:
    if expected is float and produced in (int, bool):
        return True
    if produced in _NUMERIC and expected in _NUMERIC[produced]:
        return True
    try:
        return issubclass(produced, expected)
    except TypeError:  # non-runtime protocols and the like
        return True


def field_type(source: Any, key: Any, access: str) -> tuple[bool, Any]:
    """The type of ``source.key`` / ``source[key]``: (known_field, type).

    ``known_field`` is False only when ``source`` declares its fields (pydantic model,
    TypedDict, dataclass) and ``key`` is not among them.
    """
    if _passes(source):
        return True, ANY
    model_fields = getattr(source, "model_fields", None)
    if isinstance(source, type) and isinstance(model_fields, dict):
        if key in model_fields:
            return True, model_fields[key].annotation
        return False, ANY
    if isinstance(source, type) and typing.is_typeddict(source):
        th = hints(source)
        return (key in th), th.get(key, ANY)
    fields = getattr(source, "__dataclass_fields__", None)
    if isinstance(source, type) and isinstance(fields, dict):
        return (key in fields), hints(source).get(key, ANY)
    origin, args = get_origin(source), get_args(source)
    if access == "item" and origin is not None and args:
        if isinstance(origin, type) and issubclass(origin, cabc.Mapping) and len(args) == 2:
            return True, args[1]
        if isinstance(origin, type) and issubclass(origin, tuple) and isinstance(key, int):
            if Ellipsis in args:
                return True, args[0]
            return True, args[key] if -len(args) <= key < len(args) else ANY
        if isinstance(origin, type) and issubclass(origin, cabc.Sequence):
            return True, args[0]
    return True, ANY


def describe(tp: Any) -> str:
    """A short readable name for a type: ``list[int]``, ``Optional[str]``, ``Scores``."""
    if tp is ANY:
        return "Any"
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    text = repr(tp).replace("typing.", "")
    for mod in ("builtins.", "collections.abc."):
        text = text.replace(mod, "")
    return text


def union_of(items: list[Any]) -> Any:
    """The union of branch types (Any if any branch is Any)."""
    if not items or any(_passes(t) for t in items):
        return ANY
    unique: list[Any] = []
    for t in items:
        if t not in unique:
            unique.append(t)
    if len(unique) == 1:
        return unique[0]
    return Union[tuple(unique)]  # noqa: UP007
