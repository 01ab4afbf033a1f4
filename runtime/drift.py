"""Drift: a served graph's traffic or latency leaving what its plan was made for.

A plan made for an SLO (``plan.slo``) assumed a request rate and predicted a p99
(``plan.prediction``). :class:`DriftMonitor` keeps the requests of the last quarter of
``window_s`` (the measurement) and, at most every ``window_s / 10``, compares:

- ``rate``: the observed rate against the planned rate, more than ``tolerance`` (20%) above
  or below it;
- ``latency``: the observed p99 against the SLO's p99 (the predicted p99 plus ``tolerance``
  where that is higher: a plan predicted above its SLO is not drifting when it does what it
  said).

A condition counts as drift only once it has held at every check for ``window_s`` (a burst
shorter than three quarters of the window is not drift), and ends only once it has not held
for ``window_s`` (hysteresis: no flapping). Entering and leaving drift are logged
(``graphserve.drift``, warning and info) and shown in ``/-/metrics``; ``graphserve build
--from-metrics URL`` re-plans from the observed rate there.

No clock of its own: the caller passes ``now`` (the ingress uses ``time.monotonic``), so the
rule is tested with a fake clock.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from graphserve.plan import Plan

logger = logging.getLogger("graphserve.drift")

DEFAULT_WINDOW_S = 30.0
DEFAULT_TOLERANCE = 0.2
KINDS = ("rate", "latency")
MEASURE_SHARE = 0.25  # rate and p99 are measured over this share of the window


@dataclass
class DriftState:
    """One kind of drift: whether it holds now and since when its condition changed."""

    active: bool = False
    since: float | None = None  # when the condition last started to differ from ``active``
    events: int = 0  # times it became active


class DriftMonitor:
    """Observed rate and p99 of one graph against its plan's; see the module docstring."""

    def __init__(
        self, plan: Plan, window_s: float = DEFAULT_WINDOW_S, tolerance: float = DEFAULT_TOLERANCE, start: float = 0.0
    ) -> None:
        if plan.slo is None:
            raise ValueError(f"graph {plan.name!r} was not planned for an SLO: nothing to drift from")
        if not window_s > 0:
            raise ValueError(f"drift window must be a positive number of seconds, got {window_s!r}")
        self.graph = plan.name
        self.window_s = float(window_s)
        self.measure_s = self.window_s * MEASURE_SHARE
        self.tolerance = tolerance
        self.planned_rate = plan.slo.rate_rps
        predicted = plan.prediction.p99_s if plan.prediction is not None else 0.0
        self.planned_p99 = max(plan.slo.p99_s, predicted * (1 + tolerance))
        self.started = start
        self.rate = 0.0
        self.p99 = 0.0
        self.states = {kind: DriftState() for kind in KINDS}
        self._requests: deque[tuple[float, float]] = deque()  # (finished at, latency)
        self._checked = start

    def request(self, now: float, latency_s: float) -> None:
        """One request was answered at ``now`` after ``latency_s``."""
        self._requests.append((now, latency_s))
        if now - self._checked >= self.window_s / 10:
            self.check(now)

    def check(self, now: float) -> None:
        """Measure the last window and update each kind of drift (logging changes)."""
        self._checked = now
        horizon = now - self.measure_s
        while self._requests and self._requests[0][0] < horizon:
            self._requests.popleft()
        span = min(self.measure_s, now - self.started)
        if span < self.measure_s:  # not a full measurement yet: nothing to compare
            return
        latencies = sorted(latency for _, latency in self._requests)
        self.rate = len(latencies) / span
        self.p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)] if latencies else 0.0
        low, high = self.planned_rate * (1 - self.tolerance), self.planned_rate * (1 + self.tolerance)
        self._update("rate", not low <= self.rate <= high, now)
        self._update("latency", self.p99 > self.planned_p99, now)

    def _update(self, kind: str, differs: bool, now: float) -> None:
        state = self.states[kind]
        if differs == state.active:  # the condition agrees with the state: nothing pending
            state.since = None
            return
        if state.since is None:
            state.since = now
        if now - state.since < self.window_s:
            return
        state.active, state.since = differs, None
        if differs:
            state.events += 1
            logger.warning("graph %r drifted from its plan: %s", self.graph, self.describe(kind))
        else:
            logger.info("graph %r is back inside its plan: %s", self.graph, self.describe(kind))

    def describe(self, kind: str) -> str:
        if kind == "rate":
            return (
                f"observed {self.rate:.1f} req/s over the last {self.measure_s:g} s, held {self.window_s:g} s, "
                f"planned for {self.planned_rate:g} req/s (+-{self.tolerance:.0%})"
            )
        return (
            f"observed p99 {self.p99 * 1000:.1f} ms over the last {self.measure_s:g} s, held {self.window_s:g} s, "
            f"planned {self.planned_p99 * 1000:.1f} ms"
        )
