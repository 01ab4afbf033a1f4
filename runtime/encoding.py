"""JSON for the wire: request bodies in, graph outputs out (orjson, no pickle ever).

``dumps`` converts what graphs commonly return and JSON cannot hold as is: pydantic
models, numpy arrays and scalars (orjson does contiguous arrays natively), torch
tensors, pandas frames and series, sets. Optional libraries are recognised by their
type's module name, so nothing here imports torch, numpy or pandas.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises :data:`JSONDecodeError` (a ValueError) on malformed input."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes; raises TypeError naming a type that cannot be converted."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


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
