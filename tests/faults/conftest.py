"""The fault suite: each scenario of issue 13 ("Reliability under faults") reproduced against
a real server on 127.0.0.1, with its pass criteria. The scenarios are in
``bench/reliability.py`` (the same functions write ``bench/results/reliability.json`` for the
README); these tests run them and assert. Servers run in their own session and are always
ended (``bench.faults.Deployed``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.faults import Deployed
from bench.reliability import GRAPHS


@pytest.fixture
def sleepy_server() -> Iterator[Deployed]:
    with Deployed([f"{GRAPHS}:sleepy"]) as server:
        yield server
