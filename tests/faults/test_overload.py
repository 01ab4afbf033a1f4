"""Ten times a graph's capacity: the requests past its in-flight bound get a fast 503 with
Retry-After, and the admitted ones keep their latency."""

from __future__ import annotations

import pytest

from bench.reliability import CRITERIA, overload

pytestmark = pytest.mark.slow


def test_ten_times_the_capacity_is_refused_fast_and_admitted_requests_keep_their_latency() -> None:
    figures = overload()
    assert figures["completed"] == figures["requests"] and figures["errors"]["timeout"] == 0, figures
    assert set(figures["statuses"]) == {"200", "503"}, figures
    assert figures["statuses"]["503"] > figures["statuses"]["200"]  # most of a 10x load is refused
    assert figures["refused_p99_ms"] <= CRITERIA["overload_503_p99_ms"], figures
    assert figures["admitted_p99_ms"] <= CRITERIA["overload_admitted_p99_x_service"] * figures["service_ms"], figures
    assert figures["admitted_rps"] >= 0.7 * figures["capacity_rps"], figures  # the capacity is still used
