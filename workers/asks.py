"""PendingAsks: the asks a worker waits on, each a future settled by its answer or failed at its deadline.

Deadlines sit in a coarse timer wheel (buckets of ``TICK`` seconds) that the
worker loop sweeps, instead of one asyncio timer armed and cancelled per ask:
an ask then costs a dict entry, and a timeout fires at most ``TICK`` late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Any

from gorilix.transport.errors import AskTimeout
from gorilix.workers.ref import ActorRef

#: Resolution of ask deadlines, in seconds.
TICK = 0.01


class PendingAsks:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._corr = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[Any], ActorRef, float]] = {}
        self._buckets: dict[int, list[int]] = {}  # tick number -> corrs whose deadline falls in it
        self._ticks: list[int] = []  # heap of the tick numbers in _buckets

    def __len__(self) -> int:
        return len(self._waiting)

    def open(self, ref: ActorRef, timeout: float) -> tuple[int, asyncio.Future[Any]]:
        """A new ask's correlation id and the future its answer settles (``timeout`` may be inf)."""
        corr = next(self._corr)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._waiting[corr] = (future, ref, timeout)
        if timeout != math.inf:
            tick = math.ceil((self.loop.time() + timeout) / TICK)
            bucket = self._buckets.get(tick)
            if bucket is None:
                bucket = self._buckets[tick] = []
                heapq.heappush(self._ticks, tick)
            bucket.append(corr)
        return corr, future

    def settle(self, corr: int, value: Any) -> None:
        pending = self._waiting.pop(corr, None)
        if pending is not None and not pending[0].done():  # done: the asker was cancelled
            pending[0].set_result(value)

    def fail(self, corr: int, error: BaseException) -> None:
        pending = self._waiting.pop(corr, None)
        if pending is not None and not pending[0].done():
            pending[0].set_exception(error)

    def next_deadline(self) -> float | None:
        """When the sweep next has something to do (loop time), or None."""
        return self._ticks[0] * TICK if self._ticks else None

    def expire(self, now: float) -> None:
        """Fail with AskTimeout every ask whose deadline is past at ``now`` (loop time)."""
        ticks = self._ticks
        while ticks and ticks[0] * TICK <= now:
            for corr in self._buckets.pop(heapq.heappop(ticks)):
                pending = self._waiting.pop(corr, None)
                if pending is not None and not pending[0].done():
                    future, ref, timeout = pending
                    future.set_exception(AskTimeout(f"{ref} did not answer within {timeout:g} s"))
