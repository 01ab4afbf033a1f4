"""Request arrival times for the simulator: Poisson, evenly spaced, or a recorded trace.

    poisson(rate, duration_s, seed)   exponential gaps (an open-loop client with random arrivals)
    uniform(rate, duration_s)         one request every 1/rate seconds
    read_trace(path)                  one arrival timestamp in seconds per line

All return sorted arrival times in seconds from the first arrival's time 0 (a trace is
shifted so it starts at 0).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from graphserve.errors import ProfileError


def poisson(rate: float, duration_s: float, seed: int = 0) -> list[float]:
    """Arrivals of a Poisson process of ``rate`` per second over ``[0, duration_s)``."""
    _check(rate, duration_s)
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def uniform(rate: float, duration_s: float) -> list[float]:
    """``rate x duration_s`` arrivals, evenly spaced from 0."""
    _check(rate, duration_s)
    return [i / rate for i in range(max(1, int(rate * duration_s)))]


def from_times(times: Iterable[float], source: str = "arrivals") -> list[float]:
    """Sorted, shifted to start at 0; a ProfileError for an empty trace or a bad time."""
    values = sorted(float(t) for t in times)
    if not values:
        raise ProfileError(f"{source} has no arrival times")
    if not all(math.isfinite(v) for v in values):
        raise ProfileError(f"{source} has a time that is not a finite number")
    first = values[0]
    return [v - first for v in values]


def read_trace(path: str) -> list[float]:
    """A trace file: one arrival timestamp (seconds) per line; blank lines and ``#`` comments skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ProfileError(f"cannot read arrivals {path!r}: {exc.strerror or exc}") from None
    times = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            times.append(float(text))
        except ValueError:
            raise ProfileError(
                f"{path} line {number}: {text[:60]!r} is not a timestamp (one number of seconds per line)"
            ) from None
    return from_times(times, source=path)


def _check(rate: float, duration_s: float) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ProfileError(f"rate must be a positive number of requests per second, got {rate!r}")
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ProfileError(f"duration must be a positive number of seconds, got {duration_s!r}")
