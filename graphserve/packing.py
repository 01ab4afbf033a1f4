"""Built-in glue functions the compiler inserts, e.g. to pack a list of nodes into one
argument (``combine.bind([a, b, c])``). Plain functions, importable by the runtime by
their ``module:qualname`` like any user glue."""

from __future__ import annotations

from typing import Any


def pack_list(*items: Any) -> list[Any]:
    return list(items)


def pack_tuple(*items: Any) -> tuple[Any, ...]:
    return tuple(items)


def pack_dict(**items: Any) -> dict[str, Any]:
    return dict(items)
