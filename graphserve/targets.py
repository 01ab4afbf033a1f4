"""Command-line targets: the user's app named by ``module:app``, ``pkg.module:app`` or
``path/to/file.py:app`` (like uvicorn), or a plan file written by ``graphserve build``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from graphserve.errors import GraphError


def load_app(target: str) -> Any:
    """The object named by ``module:attr`` or ``file.py:attr`` (attr defaults to ``app``)."""
    module_ref, _, attr = target.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_ref.endswith(".py") or os.sep in module_ref:
        path = Path(module_ref).resolve()
        if not path.exists():
            raise GraphError(f"cannot load {target!r}: no file {path}")
        module_name = _module_name_for(path)
        if str(_import_root(path)) not in sys.path:
            sys.path.insert(0, str(_import_root(path)))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise GraphError(f"cannot import {path}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise GraphError(f"cannot import module {module_ref!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise GraphError(f"module {module.__name__!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import_root(path: Path) -> Path:
    """The first parent directory that is not a package."""
    root = path.parent
    while (root / "__init__.py").exists():
        root = root.parent
    return root


def _module_name_for(path: Path) -> str:
    root = _import_root(path)
    rel = path.with_suffix("").relative_to(root)
    return ".".join(rel.parts)


def is_plan_file(target: str) -> bool:
    return target.endswith(".json") and ":" not in target
