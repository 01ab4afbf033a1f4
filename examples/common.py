"""Helpers the examples share: where trained models are cached, and writing files atomically.

Every example trains its own model the first time a replica starts and caches it under
``$GRAPHSERVE_CACHE/<example>`` (default ``.gs-cache/<example>``, relative to the working
directory). Delete that directory to train again.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "GRAPHSERVE_CACHE"
DEFAULT_CACHE = ".gs-cache"

# Replicas of one deployment start in the same process; one lock per example makes the
# first one train and the others load what it saved.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def cache_dir(example: str) -> Path:
    """``$GRAPHSERVE_CACHE/<example>`` (created if missing)."""
    path = Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)) / example
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_lock(example: str) -> threading.Lock:
    """The lock that serializes training of one example within this process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(example, threading.Lock())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode())


def cached_pickle(example: str, name: str, train: Callable[[], Any]) -> Any:
    """The object pickled at ``cache_dir(example)/<name>.pkl``; ``train()`` makes (and caches) it if missing."""
    path = cache_dir(example) / f"{name}.pkl"
    with train_lock(example):
        if path.exists():
            with path.open("rb") as f:
                return pickle.load(f)
        value = train()
        atomic_write_bytes(path, pickle.dumps(value))
        return value
