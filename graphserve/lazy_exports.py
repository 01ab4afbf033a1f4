"""PEP 562 lazy exports, shared by the package ``__init__`` files (``graphserve``,
``graphserve.compiler``, ``graphserve.runtime``): a public name is imported from its
defining module when first used, then kept in the package's namespace.

It imports nothing of graphserve's, so every layer may use it (the bottom layer of the
import-linter contracts in pyproject.toml).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_getattr(
    package: str,
    exports: Mapping[str, str],
    namespace: dict[str, Any],
    submodules: Collection[str] = (),
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports`` maps a public name to the module
    that defines it; a name in ``submodules`` is the submodule ``package.name``. A name found is
    stored in ``namespace`` (the package's ``globals()``) so the next lookup is a plain one."""

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__


def lazy_dir(namespace: dict[str, Any], public: Collection[str]) -> Callable[[], list[str]]:
    """The module ``__dir__``: what is loaded and every public name."""
    return lambda: sorted({*namespace, *public})
