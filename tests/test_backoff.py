"""Backoff delays: the exact formulas, the caps, free attempts, jitter and validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gorilix.backoff import Backoff
from gorilix.transport.errors import InvalidArgument


def test_defaults_match_the_go_project() -> None:
    b = Backoff()
    assert (b.kind, b.base, b.max, b.jitter, b.free) == ("none", 0.1, 60.0, 0.2, 0)
    assert Backoff.jittered() == Backoff(kind="jittered", base=0.1, max=60.0, jitter=0.2)
    assert Backoff.linear() == Backoff(kind="linear", base=0.1, max=60.0)
    assert Backoff.exponential() == Backoff(kind="exponential", base=0.1, max=60.0)
    assert Backoff.none() == Backoff()


def test_classmethods_pass_every_argument() -> None:
    assert Backoff.none(free=2) == Backoff(kind="none", free=2)
    assert Backoff.linear(base=1.0, max=5.0, free=1) == Backoff("linear", 1.0, 5.0, 0.2, 1)
    assert Backoff.exponential(2.0, 9.0, free=3) == Backoff("exponential", 2.0, 9.0, 0.2, 3)
    assert Backoff.jittered(0.5, 7.0, 0.1, free=4) == Backoff("jittered", 0.5, 7.0, 0.1, 4)


def test_is_frozen() -> None:
    b = Backoff.linear()
    with pytest.raises(AttributeError):
        b.base = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("backoff", "attempt", "expected"),
    [
        # none: always 0, whatever the other fields say
        (Backoff.none(), 1, 0.0),
        (Backoff.none(), 50, 0.0),
        (Backoff(kind="none", base=5.0), 3, 0.0),
        # linear: base * n
        (Backoff.linear(base=1.0), 1, 1.0),
        (Backoff.linear(base=1.0), 2, 2.0),
        (Backoff.linear(base=1.0), 7, 7.0),
        (Backoff.linear(base=0.5, max=100.0), 10, 5.0),
        (Backoff.linear(), 3, 0.1 * 3),
        # linear, capped
        (Backoff.linear(base=1.0, max=3.0), 3, 3.0),
        (Backoff.linear(base=1.0, max=3.0), 4, 3.0),
        (Backoff.linear(base=1.0, max=2.5), 3, 2.5),
        (Backoff.linear(), 600, 60.0),
        (Backoff.linear(), 601, 60.0),
        # exponential: base * 2 ** (n - 1)
        (Backoff.exponential(base=1.0), 1, 1.0),
        (Backoff.exponential(base=1.0), 2, 2.0),
        (Backoff.exponential(base=1.0), 3, 4.0),
        (Backoff.exponential(base=1.0), 6, 32.0),
        (Backoff.exponential(base=0.25, max=1000.0), 5, 4.0),
        (Backoff.exponential(), 1, 0.1),
        (Backoff.exponential(), 4, 0.8),
        # exponential, capped
        (Backoff.exponential(base=1.0), 7, 60.0),
        (Backoff.exponential(base=1.0, max=10.0), 4, 8.0),
        (Backoff.exponential(base=1.0, max=10.0), 5, 10.0),
        (Backoff.exponential(), 10, 51.2),
        (Backoff.exponential(), 11, 60.0),
        # a zero base or a zero cap
        (Backoff.exponential(base=0.0), 30, 0.0),
        (Backoff.linear(base=0.0), 30, 0.0),
        (Backoff.exponential(base=1.0, max=0.0), 3, 0.0),
    ],
)
def test_exact_delays(backoff: Backoff, attempt: int, expected: float) -> None:
    assert backoff.delay(attempt) == pytest.approx(expected, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    ("backoff", "attempt", "expected"),
    [
        (Backoff.linear(base=1.0, free=2), 1, 0.0),
        (Backoff.linear(base=1.0, free=2), 2, 0.0),
        (Backoff.linear(base=1.0, free=2), 3, 1.0),
        (Backoff.linear(base=1.0, free=2), 5, 3.0),
        (Backoff.exponential(base=1.0, free=3), 3, 0.0),
        (Backoff.exponential(base=1.0, free=3), 4, 1.0),
        (Backoff.exponential(base=1.0, free=3), 5, 2.0),
        (Backoff.exponential(base=1.0, free=3), 6, 4.0),
        (Backoff.exponential(base=1.0, max=5.0, free=1), 5, 5.0),
        (Backoff.none(free=4), 9, 0.0),
        (Backoff.jittered(base=1.0, free=2), 1, 0.0),
        (Backoff.jittered(base=1.0, free=2), 2, 0.0),
    ],
)
def test_free_attempts_shift_the_formula(backoff: Backoff, attempt: int, expected: float) -> None:
    assert backoff.delay(attempt, random.Random(0)) == expected


@pytest.mark.parametrize(
    "backoff",
    [
        Backoff.linear(),
        Backoff.exponential(),
        Backoff.exponential(base=1.0, max=60.0, free=5),
    ],
)
@pytest.mark.parametrize("attempt", [1_025, 1_100, 10_000, 10**6, 10**400])
def test_huge_attempts_return_max(backoff: Backoff, attempt: int) -> None:
    assert backoff.delay(attempt) == backoff.max


@pytest.mark.parametrize(
    ("backoff", "attempt", "expected"),
    [
        # products that overflow a float are treated as over the cap
        (Backoff.linear(base=1e300, max=1e308), 10**9, 1e308),
        (Backoff.linear(base=1e-300, max=1e308), 10**400, 1e308),
        (Backoff.exponential(base=1e300, max=1e308), 1_000, 1e308),
        # a tiny base needs a huge exponent to reach the cap, and is not capped early
        (Backoff.exponential(base=5e-324, max=1e308), 2_000, math.ldexp(5e-324, 1_999)),
        (Backoff.exponential(base=5e-324, max=1e308), 10_000, 1e308),
    ],
)
def test_float_overflow_is_capped(backoff: Backoff, attempt: int, expected: float) -> None:
    assert backoff.delay(attempt) == expected


@pytest.mark.parametrize("attempt", [10_000, 10**400])
def test_huge_attempts_jittered_stay_in_bounds(attempt: int) -> None:
    b = Backoff.jittered()
    rng = random.Random(7)
    for _ in range(200):
        d = b.delay(attempt, rng)
        assert 60.0 * 0.8 <= d <= 60.0


def test_delays_are_floats() -> None:
    for b in (Backoff.none(), Backoff.linear(base=1, max=10), Backoff.exponential(base=1, max=10)):
        assert type(b.delay(1)) is float
        assert type(b.delay(100)) is float


@pytest.mark.parametrize(("attempt", "nominal"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_jitter_stays_within_its_band_and_varies(attempt: int, nominal: float) -> None:
    b = Backoff.jittered(base=1.0, max=100.0, jitter=0.25)
    rng = random.Random(1234)
    draws = [b.delay(attempt, rng) for _ in range(2_000)]
    assert all(nominal * 0.75 <= d <= nominal * 1.25 for d in draws)
    assert len(set(draws)) > 1_900
    # both halves of the band are reached, and the mean is near the nominal value
    assert min(draws) < nominal * 0.76
    assert max(draws) > nominal * 1.24
    assert sum(draws) / len(draws) == pytest.approx(nominal, rel=0.02)


def test_jitter_is_applied_after_the_cap_then_clamped_to_max() -> None:
    b = Backoff.jittered(base=1.0, max=10.0, jitter=0.5)
    rng = random.Random(99)
    draws = [b.delay(20, rng) for _ in range(2_000)]
    # the capped value is 10; jitter takes it to [5, 15], the clamp brings the top back to 10
    assert all(5.0 <= d <= 10.0 for d in draws)
    assert min(draws) < 5.1
    assert draws.count(10.0) > 800  # about half the factors are > 1
    assert any(d < 10.0 for d in draws)


def test_jitter_follows_the_rng_exactly() -> None:
    b = Backoff.jittered(base=1.0, max=100.0, jitter=0.2)
    expected_rng = random.Random(42)
    rng = random.Random(42)
    for attempt in range(1, 8):
        factor = expected_rng.uniform(0.8, 1.2)
        assert b.delay(attempt, rng) == 2.0 ** (attempt - 1) * factor


def test_same_seed_gives_same_delays() -> None:
    b = Backoff.jittered()
    first = [b.delay(n, random.Random(5)) for n in range(1, 20)]
    second = [b.delay(n, random.Random(5)) for n in range(1, 20)]
    assert first == second


def test_zero_jitter_is_plain_exponential() -> None:
    b = Backoff.jittered(base=1.0, jitter=0.0)
    rng = random.Random(3)
    assert [b.delay(n, rng) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_full_jitter_never_goes_negative() -> None:
    b = Backoff.jittered(base=1.0, jitter=1.0)
    rng = random.Random(11)
    draws = [b.delay(3, rng) for _ in range(2_000)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert min(draws) < 0.1


def test_default_rng_is_used_when_none_given() -> None:
    b = Backoff.jittered(base=1.0, max=100.0)
    draws = {b.delay(5) for _ in range(50)}
    assert all(16.0 * 0.8 <= d <= 16.0 * 1.2 for d in draws)
    assert len(draws) > 1


def test_non_jittered_kinds_do_not_touch_the_rng() -> None:
    rng = random.Random(8)
    state = rng.getstate()
    for b in (Backoff.none(), Backoff.linear(), Backoff.exponential()):
        b.delay(3, rng)
    Backoff.jittered(free=5).delay(2, rng)  # a free attempt draws nothing either
    assert rng.getstate() == state


@pytest.mark.parametrize("attempt", [0, -1, -100, 1.0, 2.5, True, "1", None])
def test_bad_attempt_is_rejected(attempt: object) -> None:
    with pytest.raises(InvalidArgument, match=r"Backoff\.delay: attempt must be an int >= 1, got "):
        Backoff.linear().delay(attempt)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"kind": "fibonacci"}, "kind", "'none', 'linear', 'exponential', 'jittered'"),
        ({"kind": "Linear"}, "kind", "'none', 'linear', 'exponential', 'jittered'"),
        ({"kind": ""}, "kind", "'none', 'linear', 'exponential', 'jittered'"),
        ({"base": -0.1}, "base", "finite number >= 0"),
        ({"base": math.nan}, "base", "finite number >= 0"),
        ({"base": math.inf}, "base", "finite number >= 0"),
        ({"base": "1"}, "base", "finite number >= 0"),
        ({"max": -1.0}, "max", "finite number >= 0"),
        ({"max": math.inf}, "max", "finite number >= 0"),
        ({"max": None}, "max", "finite number >= 0"),
        ({"jitter": -0.01}, "jitter", r"number in \[0, 1\]"),
        ({"jitter": 1.01}, "jitter", r"number in \[0, 1\]"),
        ({"jitter": math.nan}, "jitter", r"number in \[0, 1\]"),
        ({"base": 10**400}, "base", "finite number >= 0"),
        ({"base": True}, "base", "finite number >= 0"),
        ({"max": -(10**400)}, "max", "finite number >= 0"),
        ({"jitter": "0.1"}, "jitter", r"number in \[0, 1\]"),
        ({"jitter": 10**400}, "jitter", r"number in \[0, 1\]"),
        ({"kind": None}, "kind", "'none', 'linear', 'exponential', 'jittered'"),
        ({"free": -1}, "free", r"int from 0 to 2\*\*64-1"),
        ({"free": 1.5}, "free", r"int from 0 to 2\*\*64-1"),
        ({"free": True}, "free", r"int from 0 to 2\*\*64-1"),
        ({"free": 2**64}, "free", r"int from 0 to 2\*\*64-1"),
    ],
)
def test_validation(kwargs: dict[str, object], field: str, allowed: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"Backoff\.{field} must be .*{allowed}, got ") as info:
        Backoff(**kwargs)  # type: ignore[arg-type]
    assert type(info.value) is InvalidArgument


def test_classmethods_validate_too() -> None:
    with pytest.raises(InvalidArgument, match="Backoff.base"):
        Backoff.exponential(base=-1.0)
    with pytest.raises(InvalidArgument, match="Backoff.jitter"):
        Backoff.jittered(jitter=2.0)
    with pytest.raises(InvalidArgument, match="Backoff.free"):
        Backoff.none(free=-2)


def test_boundary_values_are_accepted() -> None:
    Backoff(base=0.0, max=0.0, jitter=0.0, free=0)
    Backoff(kind="jittered", jitter=1.0)
    Backoff(base=3, max=10)  # ints are fine


deterministic = st.builds(
    Backoff,
    kind=st.sampled_from(["none", "linear", "exponential"]),
    base=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    max=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    free=st.integers(min_value=0, max_value=20),
)
any_backoff = st.builds(
    Backoff,
    kind=st.sampled_from(list(Backoff.KINDS)),
    base=st.floats(min_value=0.0, max_value=1e300, allow_nan=False),
    max=st.floats(min_value=0.0, max_value=1e300, allow_nan=False),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    free=st.integers(min_value=0, max_value=20),
)


@given(deterministic, st.integers(min_value=1, max_value=5_000))
def test_non_jittered_delay_is_monotone(backoff: Backoff, attempt: int) -> None:
    assert backoff.delay(attempt) <= backoff.delay(attempt + 1)


@given(any_backoff, st.integers(min_value=1, max_value=10**6), st.integers(0, 2**32))
def test_delay_is_always_within_zero_and_max(backoff: Backoff, attempt: int, seed: int) -> None:
    d = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= d <= backoff.max
    if attempt <= backoff.free:
        assert d == 0.0


@given(
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=1, max_value=60),
    st.integers(0, 2**32),
)
def test_jittered_is_within_band_of_capped_exponential(
    base: float, jitter: float, attempt: int, seed: int
) -> None:
    b = Backoff.jittered(base=base, max=1e4, jitter=jitter)
    nominal = Backoff.exponential(base=base, max=1e4).delay(attempt)
    d = b.delay(attempt, random.Random(seed))
    assert (
        nominal * (1 - jitter) * (1 - 1e-12) <= d <= min(nominal * (1 + jitter), 1e4) * (1 + 1e-12)
    )
