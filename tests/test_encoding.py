"""JSON on the wire (runtime/encoding.py): the nesting bound, integers beyond 64 bits kept
exact both ways, and the limits' errors."""

from __future__ import annotations

import datetime
import math

import pytest
from pydantic import BaseModel

from graphserve.runtime.encoding import MAX_DEPTH, JSONDecodeError, JSONLimitError, dumps, loads, nesting_depth


def test_nesting_is_bounded_before_parsing() -> None:
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    for depth in (MAX_DEPTH + 1, 300, 1000, 100_000):
        with pytest.raises(JSONLimitError, match=f"nested deeper than {MAX_DEPTH} levels"):
            loads(b"[" * depth + b"]" * depth)
    with pytest.raises(JSONLimitError):
        loads(b'{"a":' * 70 + b"1" + b"}" * 70)


def test_brackets_inside_strings_do_not_count() -> None:
    text = b'{"s": "' + b"[" * 500 + b'", "t": "\\"[[[[", "list": [[1], [2]]}'
    assert nesting_depth(text, 10) == 3  # the object, "list", and [1]
    assert loads(text)["s"] == "[" * 500
    wide = b"[" + b",".join(b"[1, 2]" for _ in range(1000)) + b"]"  # many brackets, depth 2
    assert nesting_depth(wide, MAX_DEPTH) == 2 and len(loads(wide)) == 1000


def test_integers_beyond_64_bits_are_exact_python_ints() -> None:
    big = 2**200 + 1
    assert loads(f'{{"n": {big}, "m": -{big}, "f": 1.5, "s": "12345678901234567890123"}}') == {
        "n": big,
        "m": -big,
        "f": 1.5,
        "s": "12345678901234567890123",
    }
    assert loads("18446744073709551615") == 2**64 - 1  # orjson's own range
    with pytest.raises(JSONLimitError, match="more than 4300 digits"):
        loads(b'{"n": ' + b"9" * 5000 + b"}")


def test_the_slow_path_rejects_what_orjson_rejects() -> None:
    for bad in (
        b'{"n": 12345678901234567890123,}',
        b'{"n": 12345678901234567890123, "x": NaN}',
        b"[1e999, 123456789012345678901]",
    ):
        with pytest.raises(JSONDecodeError):
            loads(bad)


class Priced(BaseModel):
    id: int
    total: float


def test_outputs_with_integers_beyond_64_bits_are_written_exactly() -> None:
    value = {"p": Priced(id=2**80, total=math.inf), "at": datetime.date(2024, 1, 2), "xs": {2**65}, "nan": math.nan}
    assert dumps(value) == (
        b'{"p":{"id":1208925819614629174706176,"total":null},"at":"2024-01-02","xs":[36893488147419103232],"nan":null}'
    )
    assert loads(dumps({"n": 2**100})) == {"n": 2**100}
    with pytest.raises(TypeError, match="object"):
        dumps({"n": 2**100, "o": object()})
