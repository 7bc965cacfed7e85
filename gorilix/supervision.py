"""Supervision decisions as pure logic: restart whom, after how long, or give up.

The node feeds a supervisor the exits of its children and executes the
decisions it returns (restart these ids after a delay, forget that one, or
escalate to the parent supervisor). No I/O here: the clock and the random
source are injected, so every rule is tested exactly.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from gorilix.backoff import Backoff, as_float, is_count
from gorilix.breaker import BreakerConfig, CircuitBreaker
from gorilix.transport.describe import shown
from gorilix.transport.errors import InvalidArgument
from gorilix.workers.spec import PERMANENT, RESTART_TYPES, TEMPORARY, TRANSIENT

ONE_FOR_ONE = "one_for_one"  # restart only the child that failed
ONE_FOR_ALL = "one_for_all"  # restart every child
REST_FOR_ONE = "rest_for_one"  # restart the failed child and those started after it
STRATEGIES = (ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE)


@dataclass(frozen=True, slots=True)
class Strategy:
    """How a supervisor reacts to its children's failures.

    More than ``max_restarts`` restart incidents within ``within_seconds``
    (the current one counted) and the supervisor gives up: it stops its
    children and fails, and its own supervisor decides. ``None`` means no
    limit. ``backoff`` delays each restart by the child's recent attempt
    count; an open ``circuit_breaker`` holds restarts until its reset timeout.
    """

    kind: str = ONE_FOR_ONE
    max_restarts: int | None = 3
    within_seconds: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    circuit_breaker: BreakerConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in STRATEGIES:
            allowed = ", ".join(repr(k) for k in STRATEGIES)
            raise InvalidArgument(f"Strategy.kind must be one of {allowed}, got {shown(self.kind)}")
        if self.max_restarts is not None and not is_count(self.max_restarts, 0):
            raise InvalidArgument(
                f"Strategy.max_restarts must be an int from 0 to 2**64-1, or None for no limit, "
                f"got {shown(self.max_restarts)}"
            )
        if not 0 < as_float(self.within_seconds) < math.inf:  # (nan is refused too)
            raise InvalidArgument(
                "Strategy.within_seconds must be a finite number of seconds > 0, "
                f"got {shown(self.within_seconds)}"
            )
        if not isinstance(self.backoff, Backoff):
            raise InvalidArgument(
                "Strategy.backoff must be a supervisor.Backoff (Backoff.none() for no delay), "
                f"got {shown(self.backoff)}"
            )
        if self.circuit_breaker is not None and not isinstance(self.circuit_breaker, BreakerConfig):
            raise InvalidArgument(
                "Strategy.circuit_breaker must be a supervisor.BreakerConfig, or None for no breaker, "
                f"got {shown(self.circuit_breaker)}"
            )

    def to_wire(self) -> list[Any]:
        # Plain str, int and float only: a big int (or an int or str subclass,
        # such as an enum) would not travel; every value was checked above.
        b = self.backoff
        c = self.circuit_breaker
        return [
            str.__str__(self.kind), None if self.max_restarts is None else int(self.max_restarts),
            float(self.within_seconds),
            [str.__str__(b.kind), float(b.base), float(b.max), float(b.jitter), int(b.free)],
            None if c is None else [
                int(c.trip_threshold), float(c.failure_window),
                float(c.reset_timeout), int(c.success_threshold),
            ],
        ]

    @classmethod
    def from_wire(cls, fields: list[Any]) -> Strategy:
        """The strategy of ``to_wire``; InvalidArgument (a ValueError) for anything else."""
        try:
            kind, max_restarts, within, backoff, breaker = fields
            return cls(
                kind, max_restarts, within, Backoff(*backoff),
                None if breaker is None else BreakerConfig(*breaker),
            )
        except InvalidArgument:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed supervision strategy {shown(fields)}: {exc}") from None


#: The node's root supervisor: it adopts every actor spawned without one and
#: never gives up; after three quick restarts of one actor it backs off.
ROOT_STRATEGY = Strategy(
    ONE_FOR_ONE, max_restarts=None, within_seconds=5.0,
    backoff=Backoff.exponential(base=0.1, max=5.0, free=3),
)


@dataclass(frozen=True, slots=True)
class Restart:
    ids: tuple[int, ...]  # in start order
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Remove:
    id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str


Decision = Restart | Remove | Escalate


@dataclass(slots=True)
class Child:
    id: int
    key: str
    restart: str = PERMANENT
    is_supervisor: bool = False
    restarts: int = 0  # times it was re-created after a failure (see SupervisorState.restarted_child)


class SupervisorState:
    def __init__(
        self, sup_id: int, name: str, strategy: Strategy, parent: int | None = None, *,
        clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
    ) -> None:
        self.id = sup_id
        self.name = name
        self.strategy = strategy
        self.parent = parent
        self._children: dict[int, Child] = {}  # in start order
        self._keys: dict[str, Child] = {}
        self._clock = clock
        self._rng = rng or random.Random()
        self._incidents: deque[float] = deque()
        self._attempts: dict[int, float | list[float]] = {}  # child id -> its restart attempts (see _attempt)
        self.breaker = (
            CircuitBreaker(strategy.circuit_breaker, clock) if strategy.circuit_breaker else None
        )
        #: Restarts carried out (a child re-created after a failure), children since removed included.
        self.restarts = 0

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self.strategy.kind} {len(self._children)} children>"

    @property
    def children(self) -> list[Child]:
        """In start order (the root may have many: lookups go through dicts)."""
        return list(self._children.values())

    # -- children -----------------------------------------------------------

    def add(self, child: Child) -> None:
        if child.restart not in RESTART_TYPES:
            raise InvalidArgument(f"restart={shown(child.restart)} is not one of {', '.join(RESTART_TYPES)}")
        if child.key in self._keys:
            raise KeyError(f"supervisor {self.name!r} already has a child {child.key!r}")
        self._children[child.id] = child
        self._keys[child.key] = child

    def child_count(self) -> int:
        return len(self._children)

    def most_restarted(self, limit: int) -> list[Child]:
        """Up to ``limit`` children, those restarted most first, then in start order.

        Without building the list of every child: the root of a worker's
        500,000 actors is read this way once a second by a dashboard.
        """
        if not self.restarts:  # (no child was restarted: start order is the answer)
            return list(itertools.islice(self._children.values(), limit))
        # (nlargest keeps the start order among equal counts, as a stable sort would)
        return heapq.nlargest(limit, self._children.values(), key=attrgetter("restarts"))

    def restarted_child(self, child: Child) -> None:
        """``child`` was re-created after a failure: counted for it and for this supervisor."""
        child.restarts += 1
        self.restarts += 1

    def find(self, key: str) -> Child | None:
        return self._keys.get(key)

    def get(self, child_id: int) -> Child | None:
        return self._children.get(child_id)

    def remove(self, child_id: int) -> Child | None:
        child = self._children.pop(child_id, None)
        if child is not None:
            del self._keys[child.key]
            self._attempts.pop(child_id, None)
        return child

    def reset(self) -> None:
        """Forget past failures (the supervisor itself was restarted)."""
        self._incidents.clear()
        self._attempts.clear()
        if self.breaker is not None:
            self.breaker.reset()

    # -- failures -----------------------------------------------------------

    def on_exits(self, exits: list[tuple[int, str, bool]]) -> list[Decision]:
        """Children ``(id, reason, abnormal)`` exited in one incident; decide.

        Several children lost together (their worker died) count as one
        incident against the restart intensity. The same as feeding them to
        one :meth:`incident` at once.
        """
        incident = self.incident()
        return incident.add(exits) + incident.finish()

    def incident(self) -> ExitIncident:
        """One incident whose exits come in parts (a dead worker's many actors): see :class:`ExitIncident`."""
        return ExitIncident(self)

    def _count_incident(self, now: float, reason: str) -> Escalate | None:
        """Count one incident at ``now``: the Escalate if that puts it past the restart intensity."""
        window = self.strategy.within_seconds
        self._incidents.append(now)
        while self._incidents and self._incidents[0] < now - window:
            self._incidents.popleft()
        limit = self.strategy.max_restarts
        if limit is not None and len(self._incidents) > limit:
            return Escalate(
                f"supervisor {self.name!r}: {len(self._incidents)} restarts within {window:g} s "
                f"(limit {limit}); last: {reason}"
            )
        if self.breaker is not None:
            self.breaker.record_failure()  # one incident, one failure
        return None

    def _restart_each(self, failed: list[Child], now: float, reason: str) -> list[Decision]:
        """one_for_one: each child waits by its own recent attempts (a neighbour restarted often,
        lost in the same worker death, must not delay the others); one Restart per delay."""
        window = self.strategy.within_seconds
        by_delay: dict[float, list[int]] = {}
        for child in failed:
            delay = self._delay(self._attempt(child.id, now, window), now)
            by_delay.setdefault(delay, []).append(child.id)
        return [Restart(tuple(ids), delay, reason) for delay, ids in sorted(by_delay.items())]

    def _restart_together(self, failed: list[Child], now: float, reason: str) -> list[Decision]:
        """one_for_all, rest_for_one: the failed children and their affected siblings, in one Restart."""
        failed_ids = {c.id for c in failed}
        if self.strategy.kind == ONE_FOR_ALL:
            affected = list(self.children)
        else:
            order = self.children
            first = min(order.index(c) for c in failed)
            affected = order[first:]
        decisions: list[Decision] = []
        restart_ids = []
        for child in affected:
            if child.id not in failed_ids and child.restart == TEMPORARY:
                self.remove(child.id)  # OTP: a temporary sibling is not brought back
                decisions.append(Remove(child.id, f"shutdown: sibling restart after {reason}"))
            else:
                restart_ids.append(child.id)
        attempt = max(self._attempt(c.id, now, self.strategy.within_seconds) for c in failed)
        decisions.append(Restart(tuple(restart_ids), self._delay(attempt, now), reason))
        return decisions

    def _delay(self, attempt: int, now: float) -> float:
        backoff = self.strategy.backoff
        # (a free attempt waits for nothing: skip the checks of Backoff.delay, once per child of a dead worker)
        delay = 0.0 if attempt <= backoff.free or backoff.kind == "none" else backoff.delay(attempt, self._rng)
        if self.breaker is not None:
            if not self.breaker.allow():
                retry_at = self.breaker.retry_at()
                if retry_at is not None:
                    delay = max(delay, retry_at - now)
        return delay

    def _attempt(self, child_id: int, now: float, window: float) -> int:
        """Count a restart attempt of the child at ``now``; returns its attempts within ``window``.

        One attempt in the window is kept as a float, more as a list: a dead
        worker's 500,000 children would otherwise each leave a container the
        garbage collector walks through (a deque was 600 bytes each).
        """
        times = self._attempts.get(child_id)
        if times is None or (isinstance(times, float) and times < now - window):
            self._attempts[child_id] = now
            return 1
        if isinstance(times, float):
            times = [times]
            self._attempts[child_id] = times
        times.append(now)
        stale = 0
        while times[stale] < now - window:  # (stops at the last: now)
            stale += 1
        del times[:stale]
        return len(times)

    def restarted(self, child_id: int) -> None:
        """A restart took: the child runs again (a success for the breaker)."""
        if self.breaker is not None and self.get(child_id) is not None:
            self.breaker.record_success()


class ExitIncident:
    """One incident of a supervisor whose exits come in parts: :meth:`SupervisorState.on_exits` in steps.

    A worker that hosted 500,000 actors cannot have them all decided in one
    step of the node's loop; fed a slice at a time, they still make one
    incident with the decisions ``on_exits`` would return for all of them at
    once. :meth:`add` decides what it can at once: a child not to be
    restarted is removed, the incident is counted (once, at its first failed
    child) and under one_for_one each failed child's Restart comes with its
    own delay. :meth:`finish`, once every exit was added, gives what needs
    them all: the Escalate of an incident past the restart intensity (after
    every Remove, as from ``on_exits``), or the one Restart of one_for_all and
    rest_for_one.
    """

    def __init__(self, supervisor: SupervisorState) -> None:
        self.supervisor = supervisor
        self._now: float | None = None  # when it was counted (at its first failed child)
        self._reason = ""  # the first failed child's
        self._escalate: Escalate | None = None
        self._failed: list[int] = []  # one_for_all, rest_for_one: decided at finish
        self._finished = False

    def add(self, exits: list[tuple[int, str, bool]]) -> list[Decision]:
        """Children ``(id, reason, abnormal)`` of this incident exited: the decisions that need no other exit."""
        if self._finished:
            raise RuntimeError("exits added to an incident already decided")
        sup = self.supervisor
        decisions: list[Decision] = []
        failed: list[Child] = []
        for child_id, reason, abnormal in exits:
            child = sup.get(child_id)
            if child is None:
                continue
            if child.restart == TEMPORARY or (child.restart == TRANSIENT and not abnormal):
                sup.remove(child_id)
                decisions.append(Remove(child_id, reason))
            else:
                failed.append(child)
        if not failed:
            return decisions
        if self._now is None:
            self._now = sup._clock()
            self._reason = next(r for i, r, _ in exits if i == failed[0].id)
            self._escalate = sup._count_incident(self._now, self._reason)
        if self._escalate is not None:
            return decisions  # (its children are shut when it escalates)
        if sup.strategy.kind == ONE_FOR_ONE:
            return decisions + sup._restart_each(failed, self._now, self._reason)
        self._failed += [c.id for c in failed]
        return decisions

    def finish(self) -> list[Decision]:
        """Every exit was added: the decisions that needed them all (call once)."""
        if self._finished:
            raise RuntimeError("an incident is decided once")
        self._finished = True
        if self._escalate is not None:
            return [self._escalate]
        if not self._failed or self._now is None:
            return []
        sup = self.supervisor
        failed = [child for child_id in self._failed if (child := sup.get(child_id)) is not None]
        if not failed:  # removed meanwhile (remove_child between two parts)
            return []
        return sup._restart_together(failed, self._now, self._reason)
