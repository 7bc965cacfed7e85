"""Restart delays for supervisors.

A supervisor that restarts a crashing child at once can spin in a tight crash
loop; waiting a little longer after each attempt gives the fault (a database
that is down, a port still in use) time to clear. This module only computes
the delay: it never sleeps, and jitter comes from an injectable random source,
so supervisors and tests stay deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument

__all__ = ["Backoff"]

_RNG = random.Random()

#: The largest count a setting may hold: it travels to the node as a msgpack uint64.
COUNT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before restart attempt ``n`` (counted from 1).

    With ``m = n - free``: ``none`` is 0, ``linear`` is ``base * m``,
    ``exponential`` is ``base * 2 ** (m - 1)`` and ``jittered`` is the exponential
    value times a factor drawn uniformly from ``[1 - jitter, 1 + jitter]``.
    Every delay is capped at ``max``; the first ``free`` attempts wait 0.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "linear", "exponential", "jittered")

    kind: str = "none"
    base: float = 0.1
    max: float = 60.0
    jitter: float = 0.2
    free: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in self.KINDS:
            allowed = ", ".join(repr(k) for k in self.KINDS)
            raise InvalidArgument(f"Backoff.kind must be one of {allowed}, got {shown(self.kind)}")
        for name in ("base", "max"):
            value = getattr(self, name)
            if not 0 <= as_float(value) < math.inf:  # (nan is refused too)
                raise InvalidArgument(f"Backoff.{name} must be a finite number >= 0, got {shown(value)}")
        if not 0 <= as_float(self.jitter) <= 1:
            raise InvalidArgument(f"Backoff.jitter must be a number in [0, 1], got {shown(self.jitter)}")
        if not is_count(self.free, 0):
            raise InvalidArgument(f"Backoff.free must be an int from 0 to 2**64-1, got {shown(self.free)}")

    @classmethod
    def none(cls, free: int = 0) -> Backoff:
        """No delay between restarts."""
        return cls(kind="none", free=free)

    @classmethod
    def linear(cls, base: float = 0.1, max: float = 60.0, free: int = 0) -> Backoff:
        """``base * m``, capped at ``max``."""
        return cls(kind="linear", base=base, max=max, free=free)

    @classmethod
    def exponential(cls, base: float = 0.1, max: float = 60.0, free: int = 0) -> Backoff:
        """``base * 2 ** (m - 1)``, capped at ``max``."""
        return cls(kind="exponential", base=base, max=max, free=free)

    @classmethod
    def jittered(
        cls, base: float = 0.1, max: float = 60.0, jitter: float = 0.2, free: int = 0
    ) -> Backoff:
        """Exponential, capped, then scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
        return cls(kind="jittered", base=base, max=max, jitter=jitter, free=free)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before restart ``attempt`` (1 for the first restart).

        ``rng`` is only consulted by ``jittered``, and only for attempts that
        are not free; it defaults to a module-level :class:`random.Random`.
        """
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise InvalidArgument(f"Backoff.delay: attempt must be an int >= 1, got {shown(attempt)}")
        if rng is not None and not callable(getattr(rng, "uniform", None)):
            raise InvalidArgument(f"Backoff.delay: rng must be a random.Random (or None), got {shown(rng)}")
        m = attempt - self.free
        if m <= 0 or self.kind == "none":
            return 0.0
        if self.kind == "linear":
            return _capped(lambda: self.base * m, self.max)
        capped = _capped(lambda: math.ldexp(self.base, m - 1), self.max)
        if self.kind == "exponential":
            return capped
        factor = (rng if rng is not None else _RNG).uniform(1 - self.jitter, 1 + self.jitter)
        return min(max(capped * factor, 0.0), self.max)


def as_float(value: object) -> float:
    """``value`` as a float if it is an int or float (not a bool); else nan, which every range check refuses.

    An int too large for a float is ``inf`` (or ``-inf``).
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def is_count(value: object, least: int) -> bool:
    """Whether ``value`` is an int (not a bool) from ``least`` to COUNT_MAX."""
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= COUNT_MAX


def _capped(compute: Callable[[], float], cap: float) -> float:
    """``min(compute(), cap)``, treating a float overflow as exceeding ``cap``."""
    try:
        value = float(compute())
    except OverflowError:
        return float(cap)
    return float(min(value, cap))
