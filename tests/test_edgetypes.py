"""Edge type compatibility."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional, TypedDict, Union

import pytest
from pydantic import BaseModel

from graphserve.compiler.edgetypes import describe, field_type, hints, is_compatible

if TYPE_CHECKING:
    from decimal import Decimal  # a name that does not exist at run time


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


def only_typed_for_the_checker(x: int, amount: Decimal) -> str:
    return f"{x} {amount}"


class Fields(TypedDict):
    count: int
    amount: Decimal


def test_an_annotation_that_does_not_resolve_leaves_the_others_checked() -> None:
    assert hints(only_typed_for_the_checker) == {"x": int, "return": str}  # `amount` passes as Any
    assert hints(Fields) == {"count": int}
    assert field_type(Fields, "count", "item") == (True, int)


def test_a_bug_in_resolving_is_not_swallowed() -> None:
    class Exploding:
        @property
        def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
            raise RuntimeError("a bug, not an annotation problem")

    with pytest.raises(RuntimeError, match="a bug"):
        hints(Exploding())
