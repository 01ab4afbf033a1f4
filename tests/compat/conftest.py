"""Ray Serve compatibility tests: each test is written as Ray Serve's docs write it, with
``import graphserve as serve`` for ``from ray import serve``; every app is shut down after its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import graphserve as serve


@pytest.fixture(autouse=True)
def _shutdown_serve() -> Iterator[None]:
    yield
    serve.shutdown()
