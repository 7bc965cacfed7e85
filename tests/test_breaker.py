"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gorilix.breaker import (
    DEFAULT_CONFIG,
    BreakerConfig,
    BreakerStats,
    CircuitBreaker,
    CircuitState,
)
from gorilix.transport.errors import InvalidArgument

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    trip: int = 3, window: float = 10.0, reset: float = 5.0, successes: int = 1
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    config = BreakerConfig(
        trip_threshold=trip, failure_window=window, reset_timeout=reset, success_threshold=successes
    )
    return CircuitBreaker(config, clock=clock), clock


def trip_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.trip_threshold):
        breaker.record_failure()
    assert breaker.state is OPEN


# --- configuration -------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = BreakerConfig()
    assert (c.trip_threshold, c.failure_window, c.reset_timeout, c.success_threshold) == (
        5,
        60.0,
        30.0,
        1,
    )
    assert DEFAULT_CONFIG == c


def test_default_breaker_uses_defaults_and_a_real_clock() -> None:
    b = CircuitBreaker()
    assert b.config == BreakerConfig()
    assert b.state is CLOSED
    assert b.allow()
    assert b.retry_at() is None


@pytest.mark.parametrize("field", ["trip_threshold", "success_threshold"])
@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "3", None, 2**64])
def test_config_rejects_bad_thresholds(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=rf"BreakerConfig\.{field} must be an int from 1 to 2\*\*64-1, got ") as info:
        BreakerConfig(**{field: value})  # type: ignore[arg-type]
    assert type(info.value) is InvalidArgument


@pytest.mark.parametrize("field", ["failure_window", "reset_timeout"])
@pytest.mark.parametrize("value", [0, 0.0, -1.0, math.nan, math.inf, True, "1", None, 10**400, -(10**400)])
def test_config_rejects_bad_durations(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=rf"BreakerConfig\.{field} must be a finite number of seconds > 0, got ") as info:
        BreakerConfig(**{field: value})  # type: ignore[arg-type]
    assert type(info.value) is InvalidArgument


def test_config_accepts_smallest_valid_values() -> None:
    c = BreakerConfig(trip_threshold=1, failure_window=1e-9, reset_timeout=1, success_threshold=1)
    assert c.reset_timeout == 1


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        BreakerConfig().trip_threshold = 2  # type: ignore[misc]


def test_breaker_rejects_a_non_config() -> None:
    # It raised TypeError before InvalidArgument existed (InvalidArgument is a ValueError).
    with pytest.raises(InvalidArgument, match="CircuitBreaker config must be a supervisor.BreakerConfig"):
        CircuitBreaker({"trip_threshold": 2})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="CircuitBreaker clock must be a function"):
        CircuitBreaker(clock=5.0)  # type: ignore[arg-type]


# --- closed -> open --------------------------------------------------------------------------


def test_starts_closed() -> None:
    b, _ = make()
    assert b.state is CLOSED
    assert b.allow()
    assert b.retry_at() is None
    assert b.statistics() == BreakerStats(CLOSED, 0, 0, None, 0)


def test_opens_at_exactly_trip_threshold() -> None:
    b, clock = make(trip=3)
    b.record_failure()
    clock.advance(1)
    b.record_failure()
    assert b.state is CLOSED
    assert b.allow()
    assert b.statistics().failures_in_window == 2
    clock.advance(1)
    b.record_failure()
    assert b.state is OPEN
    assert not b.allow()
    assert b.statistics() == BreakerStats(OPEN, 3, 0, clock.now, 1)


def test_threshold_of_one_opens_on_first_failure() -> None:
    b, clock = make(trip=1)
    b.record_failure()
    assert b.state is OPEN
    assert b.retry_at() == clock.now + 5.0


def test_failures_at_the_same_instant_count() -> None:
    b, _ = make(trip=4)
    for _ in range(3):
        b.record_failure()
    assert b.state is CLOSED
    b.record_failure()
    assert b.state is OPEN


def test_failures_older_than_the_window_expire() -> None:
    b, clock = make(trip=3, window=10.0)
    b.record_failure()  # t=0
    clock.advance(6)
    b.record_failure()  # t=6
    clock.advance(4)  # t=10: the first failure is exactly window old and no longer counts
    assert b.statistics().failures_in_window == 1
    b.record_failure()
    assert b.state is CLOSED
    assert b.statistics().failures_in_window == 2
    clock.advance(5.9)  # t=15.9: t=6 is still inside
    b.record_failure()
    assert b.state is OPEN


def test_failure_just_inside_the_window_still_counts() -> None:
    b, clock = make(trip=2, window=10.0)
    b.record_failure()
    clock.advance(9.999)
    b.record_failure()
    assert b.state is OPEN


def test_slow_trickle_of_failures_never_trips() -> None:
    b, clock = make(trip=3, window=10.0)
    for _ in range(100):
        b.record_failure()
        clock.advance(5.0)  # at most two failures are ever within 10 s
    assert b.state is CLOSED
    assert b.statistics().trips == 0
    assert b.statistics().failures_in_window == 1  # the one 5 s ago; the one 10 s ago expired


def test_success_while_closed_does_not_erase_failures() -> None:
    b, _ = make(trip=3)
    b.record_failure()
    b.record_failure()
    for _ in range(10):
        b.record_success()
    assert b.state is CLOSED
    assert b.statistics() == BreakerStats(CLOSED, 2, 0, None, 0)
    b.record_failure()
    assert b.state is OPEN


# --- open ------------------------------------------------------------------------------------


def test_open_refuses_and_reports_retry_at() -> None:
    b, clock = make(reset=5.0)
    opened = clock.now
    trip_it(b)
    assert not b.allow()
    assert b.retry_at() == opened + 5.0
    clock.advance(3)
    assert b.retry_at() == opened + 5.0


def test_failures_while_open_do_not_extend_the_timer() -> None:
    b, clock = make(reset=5.0)
    opened = clock.now
    trip_it(b)
    for _ in range(5):
        clock.advance(0.9)
        b.record_failure()
        assert b.state is OPEN
    assert b.retry_at() == opened + 5.0
    stats = b.statistics()
    assert stats.trips == 1
    assert stats.opened_at == opened
    clock.now = opened + 5.0
    assert b.state is HALF_OPEN


def test_success_while_open_is_ignored() -> None:
    b, clock = make(reset=5.0, successes=1)
    trip_it(b)
    b.record_success()
    assert b.state is OPEN
    assert b.statistics().successes_in_half_open == 0
    clock.advance(5.0)
    assert b.state is HALF_OPEN  # the earlier success did not count toward closing
    assert b.statistics().successes_in_half_open == 0


# --- open -> half-open -----------------------------------------------------------------------


def test_half_open_exactly_at_reset_timeout_and_not_before() -> None:
    b, clock = make(reset=5.0)
    opened = clock.now
    trip_it(b)
    clock.now = opened + 4.999999
    assert b.state is OPEN
    assert not b.allow()
    assert b.retry_at() == opened + 5.0
    clock.now = opened + 5.0
    assert b.state is HALF_OPEN
    assert b.allow()
    assert b.retry_at() is None


def test_half_open_is_reached_by_allow_and_retry_at_too() -> None:
    b, clock = make(reset=5.0)
    trip_it(b)
    clock.advance(5.0)
    assert b.allow()  # no earlier read of .state needed
    b2, clock2 = make(reset=5.0)
    trip_it(b2)
    clock2.advance(50.0)
    assert b2.retry_at() is None
    assert b2.statistics().state is HALF_OPEN


def test_half_open_keeps_opened_at_in_statistics() -> None:
    b, clock = make(reset=5.0)
    opened = clock.now
    trip_it(b)
    clock.advance(7.0)
    # the failures that tripped it are still within the 10 s window; closing clears them
    assert b.statistics() == BreakerStats(HALF_OPEN, 3, 0, opened, 1)
    clock.advance(3.0)
    assert b.statistics() == BreakerStats(HALF_OPEN, 0, 0, opened, 1)


# --- half-open -> closed ---------------------------------------------------------------------


def test_half_open_closes_after_one_success_by_default() -> None:
    b, clock = make(successes=1)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    assert b.state is CLOSED
    assert b.allow()
    assert b.retry_at() is None
    assert b.statistics() == BreakerStats(CLOSED, 0, 0, None, 1)


def test_half_open_closes_after_success_threshold_successes() -> None:
    b, clock = make(successes=3)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    b.record_success()
    assert b.state is HALF_OPEN
    assert b.allow()
    assert b.statistics().successes_in_half_open == 2
    b.record_success()
    assert b.state is CLOSED
    assert b.statistics().successes_in_half_open == 0


def test_closing_clears_failures_so_it_takes_a_full_threshold_to_trip_again() -> None:
    b, clock = make(trip=3, window=100.0, reset=5.0)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    assert b.state is CLOSED
    assert b.statistics().failures_in_window == 0
    b.record_failure()
    b.record_failure()
    assert b.state is CLOSED
    b.record_failure()
    assert b.state is OPEN
    assert b.statistics().trips == 2


# --- half-open -> open -----------------------------------------------------------------------


def test_failure_in_half_open_reopens_with_a_fresh_timeout() -> None:
    b, clock = make(trip=3, reset=5.0)
    trip_it(b)
    clock.advance(6.0)
    assert b.state is HALF_OPEN
    reopened = clock.now
    b.record_failure()  # one failure is enough, whatever trip_threshold says
    assert b.state is OPEN
    assert not b.allow()
    assert b.retry_at() == reopened + 5.0
    stats = b.statistics()
    assert stats.opened_at == reopened
    assert stats.trips == 2
    clock.now = reopened + 4.9
    assert b.state is OPEN
    clock.now = reopened + 5.0
    assert b.state is HALF_OPEN


def test_failure_after_some_half_open_successes_reopens_and_restarts_the_count() -> None:
    b, clock = make(successes=3, reset=5.0)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    b.record_success()
    b.record_failure()
    assert b.state is OPEN
    assert b.statistics().successes_in_half_open == 0
    clock.advance(5.0)
    b.record_success()
    b.record_success()
    assert b.state is HALF_OPEN
    b.record_success()
    assert b.state is CLOSED


def test_half_open_is_entered_lazily_by_record_failure() -> None:
    # No read in between: record_failure itself must notice the timeout has passed.
    b, clock = make(reset=5.0)
    trip_it(b)
    clock.advance(5.0)
    b.record_failure()
    assert b.statistics().trips == 2
    assert b.retry_at() == clock.now + 5.0


def test_half_open_is_entered_lazily_by_record_success() -> None:
    b, clock = make(reset=5.0)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    assert b.state is CLOSED


# --- trips, reset, full cycles ---------------------------------------------------------------


def test_trips_counts_every_opening() -> None:
    b, clock = make(trip=2, reset=1.0)
    for expected in range(1, 6):
        trip_it(b)
        assert b.statistics().trips == expected
        clock.advance(1.0)
        b.record_success()
        assert b.state is CLOSED
    trip_it(b)
    clock.advance(1.0)
    b.record_failure()  # half-open -> open is an opening too
    assert b.statistics().trips == 7


def test_reset_from_open() -> None:
    b, _ = make()
    trip_it(b)
    b.reset()
    assert b.state is CLOSED
    assert b.allow()
    assert b.retry_at() is None
    assert b.statistics() == BreakerStats(CLOSED, 0, 0, None, 1)


def test_reset_from_half_open_clears_successes() -> None:
    b, clock = make(successes=3)
    trip_it(b)
    clock.advance(5.0)
    b.record_success()
    b.reset()
    assert b.statistics() == BreakerStats(CLOSED, 0, 0, None, 1)


def test_reset_from_closed_clears_failures() -> None:
    b, _ = make(trip=3)
    b.record_failure()
    b.record_failure()
    b.reset()
    assert b.statistics().failures_in_window == 0
    b.record_failure()
    b.record_failure()
    assert b.state is CLOSED


def test_statistics_is_a_frozen_snapshot() -> None:
    b, _ = make()
    stats = b.statistics()
    trip_it(b)
    assert stats.state is CLOSED
    with pytest.raises(AttributeError):
        stats.trips = 9  # type: ignore[misc]


def test_state_values() -> None:
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]


# --- properties ------------------------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["fail", "ok", "reset", "read"]),
        st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
    ),
    max_size=60,
)


@given(events, st.integers(1, 5), st.integers(1, 3))
def test_invariants_hold_for_any_sequence(
    steps: list[tuple[str, float]], trip: int, successes: int
) -> None:
    b, clock = make(trip=trip, window=10.0, reset=5.0, successes=successes)
    trips = 0
    for action, dt in steps:
        clock.advance(dt)
        before = b.state
        if action == "fail":
            b.record_failure()
        elif action == "ok":
            b.record_success()
        elif action == "reset":
            b.reset()
        after = b.state
        if before is not OPEN and after is OPEN:
            trips += 1
        stats = b.statistics()
        assert stats.state is after
        assert stats.trips == trips
        assert b.allow() is (after is not OPEN)
        assert 0 <= stats.failures_in_window < trip or after is not CLOSED
        assert 0 <= stats.successes_in_half_open < successes
        if after is OPEN:
            assert stats.opened_at is not None
            assert b.retry_at() == stats.opened_at + 5.0
            assert clock.now < stats.opened_at + 5.0
        else:
            assert b.retry_at() is None
        if after is CLOSED:
            assert stats.opened_at is None
            assert stats.successes_in_half_open == 0
