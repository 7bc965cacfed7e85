"""A circuit breaker that stops a supervisor from restarting a hopeless child.

When a child keeps failing, restarting it again and again only burns work;
the breaker opens after ``trip_threshold`` failures within ``failure_window``,
refuses attempts for ``reset_timeout`` seconds, then lets trial attempts
through (half-open) and closes again after ``success_threshold`` successes.

The state machine is pure: time comes from an injected clock and the
open -> half-open step is taken lazily when the state is read, so there are no
timers or threads. It is not thread-safe: the node drives each breaker from a
single thread, so it takes no locks.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gorilix.backoff import as_float, is_count
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument

__all__ = ["BreakerConfig", "BreakerStats", "CircuitBreaker", "CircuitState", "DEFAULT_CONFIG"]


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds and durations (seconds) of a :class:`CircuitBreaker`."""

    trip_threshold: int = 5
    failure_window: float = 60.0
    reset_timeout: float = 30.0
    success_threshold: int = 1

    def __post_init__(self) -> None:
        for name in ("trip_threshold", "success_threshold"):
            value = getattr(self, name)
            if not is_count(value, 1):
                raise InvalidArgument(
                    f"BreakerConfig.{name} must be an int from 1 to 2**64-1, got {shown(value)}"
                )
        for name in ("failure_window", "reset_timeout"):
            value = getattr(self, name)
            if not 0 < as_float(value) < math.inf:  # (nan is refused too)
                raise InvalidArgument(
                    f"BreakerConfig.{name} must be a finite number of seconds > 0, got {shown(value)}"
                )


DEFAULT_CONFIG = BreakerConfig()


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of a breaker, as returned by :meth:`CircuitBreaker.statistics`."""

    state: CircuitState
    failures_in_window: int
    successes_in_half_open: int
    opened_at: float | None
    trips: int


class CircuitBreaker:
    """Closed -> open -> half-open -> closed, driven by recorded outcomes.

    A failure counts while less than ``failure_window`` seconds old. The
    circuit is half-open from ``opened_at + reset_timeout`` on (inclusive).
    """

    __slots__ = ("_clock", "_config", "_failures", "_opened_at", "_state", "_successes", "_trips")

    def __init__(
        self, config: BreakerConfig = DEFAULT_CONFIG, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(config, BreakerConfig):
            raise InvalidArgument(
                f"CircuitBreaker config must be a supervisor.BreakerConfig, got {shown(config)}"
            )
        if not callable(clock):
            raise InvalidArgument(
                "CircuitBreaker clock must be a function returning seconds (such as "
                f"time.monotonic), got {shown(clock)}"
            )
        self._config = config
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures: deque[float] = deque()
        self._successes = 0
        self._opened_at: float | None = None
        self._trips = 0

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def state(self) -> CircuitState:
        """The current state; an expired OPEN becomes HALF_OPEN on this read."""
        return self._current(self._clock())

    def allow(self) -> bool:
        """Whether an attempt may go ahead now (False only while OPEN)."""
        return self.state is not CircuitState.OPEN

    def record_failure(self) -> None:
        now = self._clock()
        state = self._current(now)
        if state is CircuitState.CLOSED:
            self._expire(now)
            self._failures.append(now)
            if len(self._failures) >= self._config.trip_threshold:
                self._open(now)
        elif state is CircuitState.HALF_OPEN:
            self._open(now)
        # OPEN: already refusing; the reset timer is not extended.

    def record_success(self) -> None:
        state = self._current(self._clock())
        if state is not CircuitState.HALF_OPEN:
            return  # CLOSED: counted failures stay; OPEN: nothing was allowed through.
        self._successes += 1
        if self._successes >= self._config.success_threshold:
            self._close()

    def retry_at(self) -> float | None:
        """While OPEN, the clock time at which the circuit turns HALF_OPEN; else None."""
        if self._current(self._clock()) is not CircuitState.OPEN:
            return None
        assert self._opened_at is not None
        return self._opened_at + self._config.reset_timeout

    def reset(self) -> None:
        """Back to CLOSED with no counted failures or successes (``trips`` is kept)."""
        self._close()

    def statistics(self) -> BreakerStats:
        now = self._clock()
        state = self._current(now)
        self._expire(now)
        return BreakerStats(
            state=state,
            failures_in_window=len(self._failures),
            successes_in_half_open=self._successes,
            opened_at=self._opened_at,
            trips=self._trips,
        )

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self._state.value}, trips={self._trips})"

    def _current(self, now: float) -> CircuitState:
        if self._state is CircuitState.OPEN:
            assert self._opened_at is not None
            if now >= self._opened_at + self._config.reset_timeout:
                self._state = CircuitState.HALF_OPEN
                self._successes = 0
        return self._state

    def _expire(self, now: float) -> None:
        horizon = now - self._config.failure_window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()

    def _open(self, now: float) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = now
        self._successes = 0
        self._trips += 1

    def _close(self) -> None:
        self._state = CircuitState.CLOSED
        self._opened_at = None
        self._successes = 0
        self._failures.clear()
