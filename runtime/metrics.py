"""In-process metrics: counters and histograms with labels, rendered as Prometheus text.

Cheap enough for the hot path (a dict lookup and a bisect per observation). The
executor records per-node latency, the batcher batch sizes, the ingress requests by
status and per-graph latency.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]

#: The ``graph`` label of HTTP answers that reached no graph (a malformed request, an unknown route).
NO_GRAPH = ""

# from 10 us: an in-process hop costs microseconds, a model milliseconds
LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: How many observations a histogram keeps before it sorts them into its buckets.
_PENDING_MAX = 4096


class Histogram:
    """Observations counted per bucket (``le`` bounds, then +Inf), with their sum and count.

    :meth:`observe` is on the hot path (every node call's latency), so it only keeps the
    value; the kept values are sorted into the buckets when the histogram is read, or once
    ``PENDING_MAX`` of them wait (a sort and one bisect per bucket, in C; no sort when they
    all fall in one bucket, as the calls of a steady deployment often do)."""

    __slots__ = ("_count", "_counts", "_pending", "_sum", "buckets")

    PENDING_MAX = _PENDING_MAX

    def __init__(self, buckets: Iterable[float]):
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._count = 0
        self._pending: list[float] = []

    def observe(self, value: float) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= _PENDING_MAX:
            self._fold()

    def _fold(self) -> None:
        pending = self._pending
        if not pending:
            return
        counts, buckets = self._counts, self.buckets
        low = bisect.bisect_left(buckets, min(pending))
        if low == bisect.bisect_left(buckets, max(pending)):  # all in one bucket (steady calls): no sort
            counts[low] += len(pending)
        else:
            self._fold_sorted(pending)
        self._sum += sum(pending)
        self._count += len(pending)
        pending.clear()

    def _fold_sorted(self, pending: list[float]) -> None:
        pending.sort()
        counts, start = self._counts, 0
        for index, bound in enumerate(self.buckets):
            end = bisect.bisect_right(pending, bound, start)  # values <= bound: this bucket or below
            counts[index] += end - start
            start = end
        counts[-1] += len(pending) - start

    @property
    def counts(self) -> list[int]:
        """Observations per bucket (not cumulative), the last one above every bound."""
        self._fold()
        return self._counts

    @property
    def sum(self) -> float:
        self._fold()
        return self._sum

    @property
    def count(self) -> int:
        self._fold()
        return self._count


class Metrics:
    """A small registry; ``render()`` gives the Prometheus exposition format."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, tuple[tuple[float, ...], dict[Labels, Histogram]]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self._help: dict[str, str] = {}

    def describe(self, name: str, help_text: str) -> None:
        self._help[name] = help_text

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        series = self._counters.setdefault(name, {})
        series[labels] = series.get(labels, 0.0) + value

    def observe(self, name: str, value: float, labels: Labels = (), buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.series(name, labels, buckets).observe(value)

    def series(self, name: str, labels: Labels = (), buckets: Iterable[float] = LATENCY_BUCKETS) -> Histogram:
        """The histogram of ``name`` with ``labels`` (created empty): keep it to observe on a hot path."""
        family = self._histograms.get(name)
        if family is None:
            family = self._histograms.setdefault(name, (tuple(buckets), {}))
        hist = family[1].get(labels)
        if hist is None:
            hist = family[1].setdefault(labels, Histogram(family[0]))
        return hist

    def gauge(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        """Register a gauge read when rendering (queue depth, in-flight)."""
        self._gauges[name] = read

    def counter_value(self, name: str, labels: Labels = ()) -> float:
        return self._counters.get(name, {}).get(labels, 0.0)

    def histogram(self, name: str, labels: Labels = ()) -> Histogram | None:
        family = self._histograms.get(name)
        return family[1].get(labels) if family else None

    def histograms(self, name: str) -> dict[Labels, Histogram]:
        """Every series of histogram ``name`` (the live page reads them)."""
        family = self._histograms.get(name)
        return dict(family[1]) if family else {}

    def counters(self, name: str) -> dict[Labels, float]:
        """Every series of counter ``name``."""
        return dict(self._counters.get(name, {}))

    def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            self._head(lines, name, "counter")
            for labels, value in sorted(series.items()):
                lines.append(f"{name}{_fmt(labels)} {_num(value)}")
        for name, (buckets, hists) in sorted(self._histograms.items()):
            self._head(lines, name, "histogram")
            for labels, hist in sorted(hists.items()):
                cumulative = 0
                for bound, count in zip([*buckets, float("inf")], hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else _num(bound)
                    lines.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {cumulative}")
                lines.append(f"{name}_sum{_fmt(labels)} {_num(hist.sum)}")
                lines.append(f"{name}_count{_fmt(labels)} {hist.count}")
        for name, read in sorted(self._gauges.items()):
            self._head(lines, name, "gauge")
            for labels, value in sorted(read().items()):
                lines.append(f"{name}{_fmt(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"

    def _head(self, lines: list[str], name: str, kind: str) -> None:
        if name in self._help:
            lines.append(f"# HELP {name} {self._help[name]}")
        lines.append(f"# TYPE {name} {kind}")


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def quantile(q: float, buckets: tuple[float, ...], counts: list[int]) -> float | None:
    """The ``q`` quantile of a histogram's per-bucket ``counts`` (the last one the open top
    bucket), by linear interpolation inside the bucket it falls in, as Prometheus'
    ``histogram_quantile``; None without observations. The top bucket reads as the highest bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(buckets):
                return buckets[-1]
            lower = buckets[index - 1] if index else 0.0
            return lower + (buckets[index] - lower) * (rank - seen) / count
        seen += count
    return buckets[-1]
