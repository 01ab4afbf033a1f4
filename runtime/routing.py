"""Routing calls to replicas: the less loaded of two drawn at random (power of two
choices, as Ray Serve routes; the least loaded of all when both are full), at most
``max_ongoing_requests`` per replica, the rest waiting in a FIFO of at most
``max_queued_requests`` (then :class:`OverloadedError`). Shared by the local and the Ray
backend, which differ only in what a replica is and how a call runs on it.

A replica is anything with an ``ongoing`` count and a ``down`` flag (a replica that
died and is restarting is avoided while another can take the call).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from graphserve.errors import OverloadedError
from graphserve.plan import DeploymentPlan

if TYPE_CHECKING:
    from .backend import BatchLimits


class Routed(Protocol):
    ongoing: int
    down: bool


R = TypeVar("R", bound=Routed)


def _draw_two(count: int) -> tuple[int, int]:
    """Two different replica indexes, drawn at random."""
    first = random.randrange(count)
    second = random.randrange(count - 1)
    return first, second if second < first else second + 1


@dataclass(frozen=True)
class DeploymentLoad:
    """How busy one deployment is right now (the live page and the gauges read it)."""

    replicas: int  # how many it has
    busy: int  # how many are running at least one call
    ongoing: int  # calls running on them
    queued: int  # calls waiting for a free replica
    # method -> the batching limits its batchers use now (where the backend can see them)
    batching: dict[str, BatchLimits] = field(default_factory=dict)


class ReplicaRouter(Generic[R]):
    """Admission and power-of-two-choices routing for one deployment's replicas."""

    def __init__(self, plan: DeploymentPlan, replicas: list[R]) -> None:
        self.name = plan.name
        self.replicas = replicas
        self._only = replicas[0] if len(replicas) == 1 else None  # one replica: no choice to make
        self.limit = plan.max_ongoing_requests
        self.max_queued = plan.max_queued_requests
        self.retries = plan.max_retries
        self.closed = False
        self._waiters: deque[asyncio.Future[R]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def ongoing(self) -> int:
        return sum(r.ongoing for r in self.replicas)

    def load(self) -> DeploymentLoad:
        replicas = self.replicas
        return DeploymentLoad(
            replicas=len(replicas),
            busy=sum(1 for r in replicas if r.ongoing > 0),
            ongoing=sum(r.ongoing for r in replicas),
            queued=len(self._waiters),
        )

    def _pick(self) -> R | None:
        replicas = self.replicas
        if len(replicas) == 1:
            best = replicas[0]
        else:
            # Power of two choices (as Ray Serve routes): the less loaded of two replicas drawn at
            # random, so sequential calls spread over all replicas instead of piling on the first.
            first, second = _draw_two(len(replicas))
            a, b = replicas[first], replicas[second]
            best = a if (not a.down, -a.ongoing) >= (not b.down, -b.ongoing) else b
            if best.down or best.ongoing >= self.limit:  # both busy or restarting: any free replica will do
                candidate: R | None = None
                for replica in replicas:
                    if not replica.down and (candidate is None or replica.ongoing < candidate.ongoing):
                        candidate = replica
                # all restarting: the backend holds the calls until one is back
                best = candidate if candidate is not None else min(replicas, key=lambda r: r.ongoing)
        return best if best.ongoing < self.limit else None

    def try_acquire(self) -> R | None:
        """A replica with a slot reserved for the caller, if one is free and nobody waits (else None)."""
        if self._waiters or self.closed:
            return None
        replica = self._only or self._pick()
        if replica is None or replica.ongoing >= self.limit:
            return None
        replica.ongoing += 1
        return replica

    async def acquire(self) -> R:
        """A replica with a slot reserved for the caller, waiting in the FIFO for one if needed;
        :meth:`release` it after the call. ``router.try_acquire() or await router.acquire()``
        is the fast path."""
        replica = self.try_acquire()
        if replica is not None:
            return replica
        if self.closed:
            raise OverloadedError(f"deployment {self.name!r} is stopping")
        if 0 <= self.max_queued <= len(self._waiters):
            raise OverloadedError(
                f"deployment {self.name!r} is overloaded: {len(self._waiters)} requests queued "
                f"(max_queued_requests={self.max_queued})"
            )
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter  # comes reserved
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # got a replica just as we were cancelled
                self.release(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, replica: R) -> None:
        replica.ongoing -= 1
        if self._waiters:
            self.wake()

    def wake(self) -> None:
        """Hand free slots to waiting callers, oldest first."""
        while self._waiters:
            free = self._pick()
            if free is None:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                free.ongoing += 1
                waiter.set_result(free)

    def close(self) -> None:
        """Refuse new calls; waiting callers get OverloadedError."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(OverloadedError(f"deployment {self.name!r} is stopping"))
