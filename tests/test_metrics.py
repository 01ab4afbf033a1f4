"""The metrics registry: histograms that fold their observations lazily count exactly what
counting each one at once would, and the Prometheus text shows it."""

from __future__ import annotations

import bisect
import random

import pytest

from graphserve.runtime.metrics import LATENCY_BUCKETS, Histogram, Metrics


def eager(values: list[float], buckets: tuple[float, ...]) -> list[int]:
    counts = [0] * (len(buckets) + 1)
    for value in values:
        counts[bisect.bisect_left(buckets, value)] += 1  # the first bound >= value: Prometheus' "le"
    return counts


@pytest.mark.parametrize(
    "count", [0, 1, 7, Histogram.PENDING_MAX - 1, Histogram.PENDING_MAX, 3 * Histogram.PENDING_MAX + 5]
)
def test_a_lazy_histogram_counts_what_an_eager_one_would(count: int) -> None:
    rng = random.Random(count)
    values = [rng.choice([*LATENCY_BUCKETS, rng.uniform(0, 12), rng.expovariate(1000.0)]) for _ in range(count)]
    hist = Histogram(LATENCY_BUCKETS)
    for value in values[: count // 2]:
        hist.observe(value)
    assert hist.count == count // 2  # read in between: folds what waits, keeps counting after
    for value in values[count // 2 :]:
        hist.observe(value)
    assert hist.counts == eager(values, LATENCY_BUCKETS)
    assert hist.count == count and hist.sum == pytest.approx(sum(values))


@pytest.mark.parametrize(("low", "high"), [(0.0, 0.00001), (0.001, 0.0025), (10.0, 50.0)])
def test_a_fold_of_values_in_one_bucket_counts_them_there(low: float, high: float) -> None:
    rng = random.Random(7)  # all in (low, high], the bound itself included; the last: above every bound
    values = [high if i % 10 == 0 else rng.uniform(low, high) or high for i in range(Histogram.PENDING_MAX + 3)]
    hist = Histogram(LATENCY_BUCKETS)
    for value in values:
        hist.observe(value)
    hist.observe(0.3)  # one more, in another bucket: folded with the 2 values still waiting
    assert hist.counts == eager([*values, 0.3], LATENCY_BUCKETS)
    assert hist.count == len(values) + 1 and hist.sum == pytest.approx(sum(values) + 0.3)


def test_values_on_a_bound_fall_in_its_bucket_in_the_text() -> None:
    metrics = Metrics()
    for value in (0.001, 0.001, 0.0011, 20.0):
        metrics.observe("latency_seconds", value, (("node", "a"),))
    text = metrics.render()
    assert 'latency_seconds_bucket{node="a",le="0.001"} 2' in text
    assert 'latency_seconds_bucket{node="a",le="0.0025"} 3' in text
    assert 'latency_seconds_bucket{node="a",le="+Inf"} 4' in text
    assert 'latency_seconds_count{node="a"} 4' in text
