"""Edge type compatibility."""

from __future__ import annotations

from typing import Any, Literal, Optional, TypedDict, Union

import pytest
from pydantic import BaseModel

from graphserve.compiler.edgetypes import describe, field_type, is_compatible


class Base(BaseModel):
    a: int


class Child(Base):
    b: str = ""


class TD(TypedDict):
    x: int


@pytest.mark.parametrize(
    ("produced", "expected", "ok"),
    [
        (int, float, True),
        (bool, int, True),
        (float, int, False),
        (str, int, False),
        (Any, int, True),
        (int, Any, True),
        (Child, Base, True),
        (Base, Child, False),
        (Optional[int], int, False),  # noqa: UP045
        (int, Optional[int], True),  # noqa: UP045
        (Union[int, str], Union[str, int, None], True),  # noqa: UP007
        (int | str, int, False),
        (list[int], list[float], True),
        (list[str], list[int], False),
        (list[int], list, True),
        (dict[str, int], dict[str, float], True),
        (dict[str, str], dict[str, int], False),
        (tuple[int, str], tuple[int, str], True),
        (tuple[int, str], tuple[int, int], False),
        (tuple[int, ...], tuple[int, ...], True),
        (Literal["a", "b"], str, True),
        (str, Literal["a"], True),
        (int, Literal["a"], False),
        ("Forward", int, True),
    ],
)
def test_is_compatible(produced: Any, expected: Any, ok: bool) -> None:
    assert is_compatible(produced, expected) is ok


def test_field_types() -> None:
    assert field_type(Child, "b", "attr") == (True, str)
    assert field_type(Child, "zzz", "attr") == (False, Any)
    assert field_type(TD, "x", "item") == (True, int)
    assert field_type(dict[str, float], "k", "item") == (True, float)
    assert field_type(tuple[int, str], 1, "item") == (True, str)
    assert field_type(Any, "k", "attr") == (True, Any)


def test_describe() -> None:
    assert describe(int) == "int" and describe(Any) == "Any" and describe(list[int]) == "list[int]"
    assert describe(Child) == "Child"
