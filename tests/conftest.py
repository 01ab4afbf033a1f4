"""Shared fixtures. Keep this small: fixtures used by one test module live in that module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GRAPHSERVE_HTTP_PORT", "0")  # gs.run serves HTTP (as serve.run does): on a free port in tests
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch to keep a local cluster on 127.0.0.1


def start_session_ray(ray: Any) -> None:
    """The session's local Ray instance: 2 CPUs, one logical GPU (none physical here, so num_gpus
    placement is exercised on CPU-only machines), no dashboard, loopback only."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="warning", log_to_driver=False)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray instance for the whole session (see :func:`start_session_ray`)."""
    ray = pytest.importorskip("ray")
    start_session_ray(ray)
    yield ray
    ray.shutdown()
