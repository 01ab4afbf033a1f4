"""Ray Serve's HTTP adapters (``ray.serve.http_adapters``), for ``DAGDriver.bind(dag, http_adapter=...)``.

An HTTP adapter turns the HTTP request into the DAG's input. Any of these works as one:

- a function taking the Starlette ``Request`` (``json_request``, ``starlette_request``,
  ``pandas_read_json``, or your own ``async def adapter(request: Request)``);
- a function whose parameters are annotated with pydantic models (read from the JSON
  body, e.g. ``json_to_ndarray(payload: NdArray)``) or with plain types (read from the
  query string by name, e.g. ``def adapter(limit: int)``), as FastAPI injects them;
- a pydantic model: the JSON body validated into an instance.

A body or query that does not fit is answered 422. Ray's ``image_to_ndarray`` is not
provided (it needs Pillow and FastAPI's ``File``): read ``await request.body()`` in an
adapter of your own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from starlette.requests import Request

__all__ = [
    "NdArray",
    "json_request",
    "json_to_multi_ndarray",
    "json_to_ndarray",
    "pandas_read_json",
    "starlette_request",
]


class NdArray(BaseModel):
    """A numpy array as JSON: the nested ``array``, with an optional ``shape`` and ``dtype``."""

    array: list[Any]
    shape: list[int] | None = None
    dtype: str | None = None


def starlette_request(request: Request) -> Request:
    """The Starlette ``Request`` itself (the DAGDriver's default adapter)."""
    return request


async def json_request(request: Request) -> Any:
    """The JSON body, parsed."""
    return await request.json()


def json_to_ndarray(payload: NdArray) -> np.ndarray:
    """The body ``{"array": [...], "shape": [...], "dtype": "..."}`` as a numpy array."""
    import numpy as np

    array = np.array(payload.array, dtype=payload.dtype)
    return array.reshape(payload.shape) if payload.shape else array


def json_to_multi_ndarray(payload: dict[str, NdArray]) -> dict[str, np.ndarray]:
    """The body ``{"name": {"array": ...}, ...}`` as numpy arrays by name."""
    return {name: json_to_ndarray(value) for name, value in payload.items()}


async def pandas_read_json(raw_request: Request) -> pd.DataFrame:
    """The body read by ``pandas.read_json`` (query parameters are its options, e.g. ``?orient=records``)."""
    from io import StringIO

    import pandas as pd

    body = await raw_request.body()
    return pd.read_json(StringIO(body.decode()), **dict(raw_request.query_params))
