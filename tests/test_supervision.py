"""The supervision engine as pure logic: exact decisions under a fake clock."""

from __future__ import annotations

import enum
import random

import pytest

from gorilix.backoff import Backoff
from gorilix.breaker import BreakerConfig
from gorilix.supervision import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    REST_FOR_ONE,
    ROOT_STRATEGY,
    Child,
    Escalate,
    Remove,
    Restart,
    Strategy,
    SupervisorState,
)
from gorilix.transport.errors import InvalidArgument
from gorilix.workers.spec import PERMANENT, TEMPORARY, TRANSIENT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(strategy: Strategy, *restarts: str) -> tuple[SupervisorState, Clock]:
    clock = Clock()
    sup = SupervisorState(1, "sup", strategy, clock=clock, rng=random.Random(7))
    for i, restart in enumerate(restarts, start=10):
        sup.add(Child(i, f"c{i}", restart))
    return sup, clock


def crash(child: int, reason: str = "crashed: boom") -> list[tuple[int, str, bool]]:
    return [(child, reason, True)]


@pytest.mark.parametrize(
    ("kind", "failed", "restarted"),
    [
        (ONE_FOR_ONE, 11, (11,)),
        (ONE_FOR_ALL, 11, (10, 11, 12)),
        (REST_FOR_ONE, 11, (11, 12)),
        (REST_FOR_ONE, 10, (10, 11, 12)),
        (REST_FOR_ONE, 12, (12,)),
    ],
)
def test_strategies_pick_whom_to_restart(kind: str, failed: int, restarted: tuple[int, ...]) -> None:
    sup, _ = make(Strategy(kind), PERMANENT, PERMANENT, PERMANENT)
    assert sup.on_exits(crash(failed)) == [Restart(restarted, 0.0, "crashed: boom")]


@pytest.mark.parametrize(
    ("restart", "abnormal", "restarted"),
    [
        (PERMANENT, True, True),
        (PERMANENT, False, True),  # OTP: a permanent child comes back even after a normal exit
        (TRANSIENT, True, True),
        (TRANSIENT, False, False),
        (TEMPORARY, True, False),
        (TEMPORARY, False, False),
    ],
)
def test_restart_types_have_their_otp_meaning(restart: str, abnormal: bool, restarted: bool) -> None:
    sup, _ = make(Strategy(), restart)
    reason = "crashed: x" if abnormal else "normal"
    decisions = sup.on_exits([(10, reason, abnormal)])
    if restarted:
        assert decisions == [Restart((10,), 0.0, reason)]
        assert sup.get(10) is not None
    else:
        assert decisions == [Remove(10, reason)]
        assert sup.get(10) is None


def test_temporary_sibling_is_not_brought_back_by_one_for_all() -> None:
    sup, _ = make(Strategy(ONE_FOR_ALL), PERMANENT, TEMPORARY, TRANSIENT)
    decisions = sup.on_exits(crash(10))
    assert decisions[0] == Remove(11, "shutdown: sibling restart after crashed: boom")
    assert decisions[1] == Restart((10, 12), 0.0, "crashed: boom")
    assert [c.id for c in sup.children] == [10, 12]


def test_intensity_counts_the_current_failure_then_escalates() -> None:
    sup, clock = make(Strategy(max_restarts=3, within_seconds=5.0), PERMANENT)
    for _ in range(3):
        clock.now += 1.0
        assert isinstance(sup.on_exits(crash(10))[0], Restart)
    clock.now += 1.0
    (decision,) = sup.on_exits(crash(10))
    assert isinstance(decision, Escalate)
    assert "4 restarts within 5 s (limit 3)" in decision.reason


def test_failures_outside_the_window_do_not_count() -> None:
    sup, clock = make(Strategy(max_restarts=1, within_seconds=5.0), PERMANENT)
    assert isinstance(sup.on_exits(crash(10))[0], Restart)
    clock.now += 5.1
    assert isinstance(sup.on_exits(crash(10))[0], Restart)
    clock.now += 1.0
    assert isinstance(sup.on_exits(crash(10))[0], Escalate)


def test_zero_restarts_escalates_at_once_and_none_never_does() -> None:
    strict, _ = make(Strategy(max_restarts=0), PERMANENT)
    assert isinstance(strict.on_exits(crash(10))[0], Escalate)
    lenient, _ = make(Strategy(max_restarts=None), PERMANENT)
    assert all(isinstance(lenient.on_exits(crash(10))[0], Restart) for _ in range(100))


def test_children_lost_together_are_one_incident() -> None:
    sup, _ = make(Strategy(max_restarts=1), PERMANENT, PERMANENT, PERMANENT)
    decisions = sup.on_exits([(10, "worker died", True), (11, "worker died", True), (12, "worker died", True)])
    assert decisions == [Restart((10, 11, 12), 0.0, "worker died")]
    assert isinstance(sup.on_exits(crash(10))[0], Escalate)


def test_backoff_grows_with_each_childs_recent_attempts() -> None:
    sup, clock = make(Strategy(max_restarts=None, backoff=Backoff.exponential(base=0.1, max=1.0)), PERMANENT, PERMANENT)
    delays = []
    for _ in range(6):
        clock.now += 0.01
        (decision,) = sup.on_exits(crash(10))
        delays.append(decision.delay)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    (other,) = sup.on_exits(crash(11))
    assert other.delay == pytest.approx(0.1)  # a sibling's attempts are its own
    clock.now += 10.0
    (later,) = sup.on_exits(crash(10))
    assert later.delay == pytest.approx(0.1)  # old attempts expired with the window


def test_root_strategy_restarts_three_times_freely_then_backs_off() -> None:
    sup, clock = make(ROOT_STRATEGY, PERMANENT)
    delays = []
    for _ in range(6):
        clock.now += 0.01
        delays.append(sup.on_exits(crash(10))[0].delay)
    assert delays == pytest.approx([0, 0, 0, 0.1, 0.2, 0.4])


def test_open_breaker_holds_restarts_until_its_reset_timeout() -> None:
    breaker = BreakerConfig(trip_threshold=2, failure_window=60.0, reset_timeout=3.0, success_threshold=1)
    sup, clock = make(Strategy(max_restarts=None, circuit_breaker=breaker), PERMANENT)
    assert sup.on_exits(crash(10))[0].delay == 0.0
    sup.restarted(10)
    clock.now += 1.0
    assert sup.on_exits(crash(10))[0].delay == pytest.approx(3.0)  # tripped: wait for half-open
    clock.now += 3.0
    sup.restarted(10)  # the trial restart took: closed again
    clock.now += 1.0
    assert sup.on_exits(crash(10))[0].delay == 0.0


def test_reset_forgets_past_failures() -> None:
    sup, _ = make(Strategy(max_restarts=1), PERMANENT)
    sup.on_exits(crash(10))
    sup.reset()
    assert isinstance(sup.on_exits(crash(10))[0], Restart)


def test_unknown_children_are_ignored_and_keys_are_unique() -> None:
    sup, _ = make(Strategy(), PERMANENT)
    assert sup.on_exits(crash(99)) == []
    with pytest.raises(KeyError, match="already has a child 'c10'"):
        sup.add(Child(50, "c10"))


def test_strategy_validation_and_wire_round_trip() -> None:
    with pytest.raises(InvalidArgument, match=r"Strategy\.kind must be one of"):
        Strategy("one_for_some")
    with pytest.raises(InvalidArgument, match=r"Strategy\.max_restarts"):
        Strategy(max_restarts=-1)
    with pytest.raises(InvalidArgument, match=r"Strategy\.within_seconds"):
        Strategy(within_seconds=0)
    with pytest.raises(InvalidArgument, match=r"Strategy\.backoff must be a supervisor\.Backoff"):
        Strategy(backoff="exponential")  # type: ignore[arg-type]
    strategy = Strategy(REST_FOR_ONE, 7, 2.5, Backoff.jittered(base=0.2, max=9.0, jitter=0.1),
                        BreakerConfig(3, 10.0, 4.0, 2))
    assert Strategy.from_wire(strategy.to_wire()) == strategy
    assert Strategy.from_wire(Strategy().to_wire()) == Strategy()


GOOD_BACKOFF = ["none", 0.1, 60.0, 0.2, 0]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ([], "malformed supervision strategy"),
        (5, "malformed supervision strategy"),
        (None, "malformed supervision strategy"),
        (["one_for_one", 3, 5.0, 7, None], "malformed supervision strategy"),
        (["one_for_one", 3, 5.0, GOOD_BACKOFF + [9], None], "malformed supervision strategy"),
        (["one_for_one", 3, 5.0, GOOD_BACKOFF, [1, 2, 3, 4, 5]], "malformed supervision strategy"),
        (["one_for_all", -1, 5.0, GOOD_BACKOFF, None], r"Strategy\.max_restarts"),
        (["one_for_all", 1, 5.0, ["fib", 0.1, 60.0, 0.2, 0], None], r"Backoff\.kind"),
        (["one_for_all", 1, 5.0, GOOD_BACKOFF, [0, 1.0, 1.0, 1]], r"BreakerConfig\.trip_threshold"),
    ],
)
def test_a_malformed_strategy_record_is_an_invalid_argument(fields: object, fragment: str) -> None:
    # The node's spawn_supervisor handler turns it into an error for the asker.
    with pytest.raises(InvalidArgument, match=fragment):
        Strategy.from_wire(fields)  # type: ignore[arg-type]


class Kind(str, enum.Enum):  # noqa: UP042 - its str() is "Kind.ALL", not the value
    ALL = ONE_FOR_ALL


def test_to_wire_sends_plain_values() -> None:
    strategy = Strategy(
        Kind.ALL, within_seconds=5, backoff=Backoff.linear(base=2**900, max=3),
        circuit_breaker=BreakerConfig(2, 7, 1),
    )
    wire = strategy.to_wire()
    assert wire[0] == ONE_FOR_ALL and type(wire[0]) is str
    assert [type(v) for v in wire[3]] == [str, float, float, float, int]
    assert [type(v) for v in wire[4]] == [int, float, float, int]
    assert Strategy.from_wire(wire) == strategy


def test_a_child_with_an_unknown_restart_type_is_refused() -> None:
    sup, _ = make(Strategy(), PERMANENT)
    with pytest.raises(InvalidArgument, match="restart='sometimes' is not one of permanent, transient, temporary"):
        sup.add(Child(60, "c60", "sometimes"))
    assert [c.id for c in sup.children] == [10]


def test_one_for_one_delays_each_child_by_its_own_attempts() -> None:
    sup, clock = make(Strategy(max_restarts=None, backoff=Backoff.exponential(base=0.1, max=1.0)), PERMANENT, PERMANENT)
    for _ in range(3):
        clock.now += 0.01
        sup.on_exits(crash(10))
    clock.now += 0.01
    decisions = sup.on_exits([(10, "worker died", True), (11, "worker died", True)])
    assert decisions == [Restart((11,), pytest.approx(0.1), "worker died"),
                         Restart((10,), pytest.approx(0.8), "worker died")]


def test_many_children_stay_cheap() -> None:
    sup, _ = make(ROOT_STRATEGY)
    for i in range(20_000):
        sup.add(Child(1000 + i, f"k{i}"))
    assert sup.find("k19999").id == 20_999 and sup.get(1000).key == "k0"
    assert sup.remove(1000) is not None and sup.find("k0") is None
    assert [c.id for c in sup.children[:2]] == [1001, 1002]


def _as_sets(decisions: list[object]) -> list[object]:
    """Decisions with the ids of one_for_one's Restarts merged per delay (parts may split them)."""
    merged: dict[float, list[int]] = {}
    others: list[object] = []
    for decision in decisions:
        if isinstance(decision, Restart) and len(decision.ids) and decision.reason == "worker died":
            merged.setdefault(decision.delay, []).extend(decision.ids)
        else:
            others.append(decision)
    return others + sorted((delay, sorted(ids)) for delay, ids in merged.items())


@pytest.mark.parametrize("kind", [ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE])
@pytest.mark.parametrize("max_restarts", [None, 0, 1])
def test_an_incident_fed_in_parts_decides_as_on_exits_at_once(kind: str, max_restarts: int | None) -> None:
    # A dead worker's actors reach their supervisors a slice at a time (gorilix.lifecycle): the
    # decisions must be those of the whole death at once, one incident against the intensity.
    restarts = [PERMANENT, TEMPORARY, TRANSIENT, PERMANENT, TEMPORARY, PERMANENT, PERMANENT, TRANSIENT]
    strategy = Strategy(kind, max_restarts=max_restarts, within_seconds=10.0,
                        backoff=Backoff.exponential(base=0.1, max=1.0, free=1))
    exits = [(child, "worker died", True) for child in (11, 12, 13, 15, 16)]
    whole, clock = make(strategy, *restarts)
    parts, part_clock = make(strategy, *restarts)
    for sup, at in ((whole, clock), (parts, part_clock)):  # the same history: one earlier crash of 13
        at.now += 1.0
        sup.on_exits(crash(13))
    clock.now += 1.0
    part_clock.now += 1.0
    expected = whole.on_exits(exits)
    incident = parts.incident()
    got = [*incident.add(exits[:2]), *incident.add(exits[2:3]), *incident.add([]), *incident.add(exits[3:])]
    if kind != ONE_FOR_ONE or max_restarts == 0:  # nothing to restart yet: it needs every exit
        assert not any(isinstance(d, Restart | Escalate) for d in got)
    got += incident.finish()
    assert _as_sets(got) == _as_sets(expected)
    assert [c.id for c in parts.children] == [c.id for c in whole.children]
    assert whole.on_exits(crash(10)) == parts.on_exits(crash(10))  # and the same count of incidents after
    with pytest.raises(RuntimeError):
        incident.finish()
