"""What an executor reports about one request while it runs it, for whoever listens
(the profiler): each deployment call with its inputs and timing, each switch's arm.

An observer is optional and costs nothing when absent; it must be cheap and must not
raise (it runs on the request's path).
"""

from __future__ import annotations

from typing import Any, Protocol


class ExecutionObserver(Protocol):
    """Told about every deployment call and every switch decision of every request."""

    def call_finished(
        self, node: str, args: tuple[Any, ...], kwargs: dict[str, Any], started: float, finished: float
    ) -> None:
        """Deployment call ``node`` returned; ``started``/``finished`` are ``time.perf_counter()`` values."""

    def switch_taken(self, node: str, arm: int) -> None:
        """Switch ``node`` chose branch number ``arm`` (-1: its default), as the plan's guards count arms."""
