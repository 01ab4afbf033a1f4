"""JSON for the wire: request bodies in, graph outputs out (orjson, no pickle ever).

``loads`` bounds what it accepts before parsing: arrays and objects nested at most
``max_depth`` levels (:data:`MAX_DEPTH`, 64; deeper input can exhaust the recursion of
whatever walks it later: validation, the graph, the answer's encoder). It never loses
digits: orjson turns integers beyond 64 bits into floats, so a body that may hold such
an integer is parsed by Python's own ``json`` instead, which keeps them as exact
Python ints (up to Python's 4300-digit conversion limit). Input past a limit raises
:class:`JSONLimitError` saying which; malformed input raises :data:`JSONDecodeError`.

``dumps`` converts what graphs commonly return and JSON cannot hold as is: pydantic
models, numpy arrays and scalars (orjson does contiguous arrays natively), torch
tensors, pandas frames and series, sets. Optional libraries are recognised by their
type's module name, so nothing here imports torch, numpy or pandas. Integers beyond
64 bits are written exactly (by Python's ``json``, which orjson cannot do).
"""

from __future__ import annotations

import json
import math
import re
import sys
from itertools import accumulate
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_LONG_INTEGER = re.compile(rb"\d{19,}")  # may not fit 64 bits (or sits in a string: harmless)


class JSONLimitError(ValueError):
    """Well-formed JSON that is past what the server accepts (nesting, integer size)."""


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON (see the module docstring); raises :class:`JSONLimitError` or :data:`JSONDecodeError`."""
    raw = data.encode() if isinstance(data, str) else data
    depth = nesting_depth(raw, max_depth)
    if depth > max_depth:
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels of arrays and objects")
    if _LONG_INTEGER.search(raw) is None:
        return orjson.loads(raw)
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    except UnicodeDecodeError as exc:
        raise JSONDecodeError(f"not UTF-8: {exc.reason}", "", exc.start) from None
    except ValueError:  # Python's digit limit for int()
        limit = sys.get_int_max_str_digits()
        raise JSONLimitError(f"an integer in the JSON has more than {limit} digits") from None


def nesting_depth(raw: bytes, limit: int) -> int:
    """How deep arrays and objects nest in ``raw`` (string contents do not count); any value
    <= ``limit`` when there are not even ``limit`` openers (the common case, decided in C)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    if b'"' in raw:
        raw = _STRING.sub(b"", raw)
    return max(accumulate(map(_STEP.__getitem__, raw.translate(None, _NOT_BRACKETS))), default=0)


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number {text[:40]} is out of range", text, 0)
    return value


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes; raises TypeError naming a type that cannot be converted."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
    # an integer beyond 64 bits: Python's json writes it exactly, the rest made plain as orjson would
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value: Any) -> Any:
    """``value`` as dicts, lists, str, int, float, bool and None, the way orjson writes it
    (a NaN or infinite float as null); raises TypeError for what cannot be converted."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    try:
        return _plain(_default(value))  # pydantic, numpy, torch, pandas, sets, dataclasses
    except TypeError:
        return orjson.loads(orjson.dumps(value, option=_OPTIONS))  # datetimes, UUIDs, enums


def _key(key: Any) -> Any:
    return key if isinstance(key, (str, int, float, bool)) or key is None else str(_plain(key))


def _default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None and callable(dump):  # a pydantic model
        return dump(mode="json")
    module = type(obj).__module__.partition(".")[0]
    if module == "torch":
        detach = getattr(obj, "detach", None)
        if detach is not None:  # a tensor: any device, any dtype
            return detach().cpu().tolist()
    elif module == "pandas":
        if hasattr(obj, "columns") and hasattr(obj, "to_dict"):
            return obj.to_dict(orient="records")
        if hasattr(obj, "tolist"):
            return obj.tolist()
    elif module == "numpy" and hasattr(obj, "tolist"):  # non-contiguous, float16 or object arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
    raise TypeError(f"{type(obj).__module__}.{type(obj).__qualname__} is not JSON serializable")
