"""Adaptive batching: a batcher's size limit and wait, adjusted from the latencies it observes
so the node stays inside its latency budget (its share of the graph's SLO) as load changes.

Clipper's AIMD on the size limit (NSDI 2017), judged as Clipper does on the batch's own run
time: a batch whose run time alone exceeds the budget cuts the limit by 10% (the planner
checked the planned size against the whole SLO in its simulation; this reacts to a device
that became slower than profiled); a batch whose oldest item (from entering the batcher
to its result) took under 90% of the budget raises it by one, never above the planned
``max_batch_size``. A batch late only because calls queued behind a backlog does not cut the
limit: smaller batches would serve fewer calls per second and the backlog would grow (a
planned batcher near its capacity would collapse); it only stops the increase. Nor does any
cut go below the size that keeps up with the calls arriving (their rate, from the batches'
sizes and start times, times ``MARGIN``, at the fitted batch time): a slower device makes
batches late, and smaller ones than that would fall behind for good. The wait is
BentoML's rule: a batch may wait only as long as the budget leaves after running a batch of
the current limit, estimated from a decaying least-squares fit of batch time on batch size,
never above the planned ``batch_wait_timeout_s``.

Pure arithmetic with no clock of its own: the batcher passes the times it measured, so the
rule is tested with a fake clock.
"""

from __future__ import annotations

import math

DECREASE = 0.9  # multiplicative decrease when a batch breaks the budget (Clipper backs off 10%)
INCREASE = 1  # additive increase after a batch well inside the budget
INSIDE = 0.9  # "well inside": under this share of the budget
DECAY = 0.9  # weight of older batches in the batch-time fit and the arrival rate
MARGIN = 1.25  # the limit keeps up with this many times the arrival rate


class AdaptiveLimits:
    """The current ``max_batch_size`` and ``batch_wait_timeout_s`` of one adaptive batcher."""

    def __init__(self, max_batch_size: int, max_wait_s: float, budget_s: float, concurrent: int = 1) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.budget_s = budget_s
        self.concurrent = concurrent  # batches that may run at once
        self.limit = max_batch_size
        self.wait_s = max_wait_s
        self.decreases = 0
        # decayed sums for the fit t(n) = fixed + per_item x n
        self._w = self._n = self._nn = self._t = self._nt = 0.0
        # decayed items and time between batch starts: the arrival rate
        self._items = self._span = 0.0
        self._last_start: float | None = None

    def observe(self, size: int, latency_s: float, run_s: float, started: float | None = None) -> None:
        """One batch of ``size`` items ran ``run_s`` (from ``started``, on the batcher's clock);
        its oldest item waited ``latency_s`` in all."""
        self._fit(size, run_s)
        if started is not None:
            if self._last_start is not None and started > self._last_start:
                self._items = self._items * DECAY + size
                self._span = self._span * DECAY + (started - self._last_start)
            self._last_start = started
        if run_s > self.budget_s:
            cut = max(1, min(self.limit - 1, math.floor(self.limit * DECREASE)))
            limit = max(cut, min(self.limit, self.keeping_up()))
            self.decreases += limit < self.limit
            self.limit = limit
        elif latency_s <= INSIDE * self.budget_s:
            self.limit = min(self.max_batch_size, self.limit + INCREASE)
        self.wait_s = min(self.max_wait_s, max(0.0, self.budget_s - 2 * self.estimate(self.limit)))

    @property
    def arrival_rate(self) -> float:
        """Calls per second reaching the batcher (0 until two batches started)."""
        return self._items / self._span if self._span > 0 else 0.0

    def keeping_up(self) -> int:
        """The smallest size whose batches serve ``MARGIN`` x the arrival rate (the planned
        maximum when none does, or after a single batch)."""
        rate = self.arrival_rate * MARGIN
        if rate <= 0:  # no start times given (no floor), or only one so far (no cut yet)
            return 1 if self._last_start is None else self.max_batch_size
        for size in range(1, self.max_batch_size + 1):
            if size * self.concurrent >= rate * self.estimate(size):
                return size
        return self.max_batch_size

    def estimate(self, size: int) -> float:
        """The fitted time of a batch of ``size`` (0 before any batch ran)."""
        if self._w <= 0:
            return 0.0
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n * mean_n
        slope = (self._nt / self._w - mean_n * mean_t) / var if var > 1e-12 else 0.0
        slope = max(0.0, slope)
        return max(0.0, mean_t + slope * (size - mean_n))

    def _fit(self, size: int, run_s: float) -> None:
        d = DECAY
        self._w = self._w * d + 1
        self._n = self._n * d + size
        self._nn = self._nn * d + size * size
        self._t = self._t * d + run_s
        self._nt = self._nt * d + size * run_s
