"""Helpers for the example tests (tests/test_examples*.py): a fresh model cache, and reading /-/metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def use_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point GRAPHSERVE_CACHE at an empty directory, so the example trains its models for real."""
    cache = tmp_path / "gs-cache"
    monkeypatch.setenv("GRAPHSERVE_CACHE", str(cache))
    return cache


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` on ``url``'s /-/metrics whose labels include ``labels``."""
    text = httpx.get(url + "/-/metrics", timeout=30).text
    total, found = 0.0, False
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        sample = dict(_LABEL.findall(match["labels"] or ""))
        if all(sample.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
            found = True
    if not found:
        raise AssertionError(f"no sample of {name} with labels {labels} in /-/metrics:\n{text}")
    return total
